"""Trainings in a fresh Python process (``scripts/sft.py``, ``scripts/dpo.py``): clean peak-memory numbers for notebook 06.

Peak memory is a property of a whole process (the allocator rarely gives memory back), so a training inside a
notebook kernel would be charged with whatever the kernel did before. :func:`train_isolated` therefore runs
``python scripts/sft.py`` (notebook 01's recipe as a script; a student can run it by hand), shows a progress
bar that follows its log, and reads back its report ``train_info.json``: peak RSS (and peak CUDA memory on GPU),
the peak reached by each step, seconds, loss history, trainable parameters, and where the adapter was saved.
The adapter's manifest (:mod:`helpers.artifacts`) records the run's settings; with ``reuse=True`` a saved run with
today's settings is read back instead of trained again.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

from .artifacts import reusable
from .paths import REPO_ROOT, check_replaceable
from .processes import follow_log, log_tail, run_python
from .profiles import Profile, takes_profile
from .manifests import run_settings, save_adapter, start_settings
from .training import KINDS, adapter_dir, check_kind

SCRIPT = REPO_ROOT / "scripts" / "sft.py"
DPO_SCRIPT = REPO_ROOT / "scripts" / "dpo.py"
GRPO_SCRIPT = REPO_ROOT / "scripts" / "grpo.py"
REPORT = "train_info.json"
STEP_LINE = "training step {step} of {total}"  # what the script prints after each step ...
STEP_PATTERN = re.compile(re.escape(STEP_LINE.split("{step}")[0]) + r"(\d+) of")  # ... and what the parent's bar reads

__all__ = ["KINDS", "train_isolated", "dpo_isolated", "save_run", "reusable_run", "adapter_path", "MemoryMonitor", "TrainingError"]


class TrainingError(RuntimeError):
    """A training child process failed; the message quotes the end of its log."""


@takes_profile
def adapter_path(profile: Profile, kind: str, learning_rate: float | None = None, quant_type: str = "nf4",
                 double_quant: bool = True, lora_r: int | None = None) -> Path:
    """Where notebook 06's run of ``kind`` lives: ``outputs/06_<kind>/<profile>``, with a suffix for each setting
    that differs from notebook 01's (``_lr<rate>``, ``_fp4``, ``_no_dq``, ``_r<rank>``: the exercises). Notebook
    01's own adapter (``outputs/sft_lora``) is never overwritten."""
    check_kind(kind)
    parts = [f"06_{kind}"]
    if learning_rate not in (None, profile.sft_learning_rate):
        parts.append(f"lr{learning_rate:g}")
    if kind == "qlora" and quant_type != "nf4":
        parts.append(quant_type)
    if kind == "qlora" and not double_quant:
        parts.append("no_dq")
    if lora_r is not None:
        parts.append(f"r{lora_r}")
    return adapter_dir(profile, "_".join(parts))


@takes_profile
def reusable_run(profile: Profile, kind: str, learning_rate: float | None = None, folder: Path | None = None,
                 start: dict | None = None, **qlora_base) -> dict | None:
    """The report of a finished fresh-process run of ``kind`` whose manifest records today's settings, or ``None``
    (:func:`helpers.artifacts.reusable` prints which, and why)."""
    folder = Path(folder or adapter_path(profile, kind, learning_rate, **qlora_base))
    if reusable(folder, run_settings(profile, kind, learning_rate, start=start, **qlora_base), f"{kind} run") \
            and (folder / REPORT).is_file():
        return json.loads((folder / REPORT).read_text())
    return None


@takes_profile
def train_isolated(profile: Profile, kind: str = "lora", reuse: bool = False, learning_rate: float | None = None,
                   folder: str | Path | None = None, quant_type: str = "nf4", double_quant: bool = True,
                   lora_r: int | None = None, base: str | Path | None = None, init_adapter: str | Path | None = None,
                   timeout_s: int = 3600) -> dict:
    """Run ``python scripts/sft.py`` for ``kind`` ("lora": full-precision base; "qlora": 4-bit base, ``quant_type``
    "nf4" or "fp4", with or without ``double_quant``) with this profile (the whole profile crosses into the
    process; ``learning_rate`` and ``lora_r`` override it) and return its report (see the module docstring).
    The adapter goes to ``folder`` (default :func:`adapter_path`). With ``reuse``, a saved run with today's
    settings is returned instead; its ``"trained_by"`` says which notebook trained it. ``base`` (a model folder)
    and ``init_adapter`` (a saved adapter) start the run elsewhere than notebook 01's recipe does: notebook 06's
    LoftQ arm."""
    from dataclasses import replace

    check_kind(kind)
    qlora_base = {"quant_type": quant_type, "double_quant": double_quant}
    folder = Path(folder or adapter_path(profile, kind, learning_rate, lora_r=lora_r, **qlora_base))
    if lora_r is not None:
        profile = replace(profile, lora_r=lora_r, lora_alpha=2 * lora_r)
    start = start_settings(base, init_adapter)
    if reuse and (report := reusable_run(profile, kind, learning_rate, folder, start, **qlora_base)) is not None:
        print(f"{kind}: {report['steps']} steps, {report['train_seconds']:.0f} s, peak RSS {report['peak_rss_mb']:.0f} MB")
        return report
    args = []
    if learning_rate:
        args += ["--learning-rate", str(learning_rate)]
    if kind == "qlora":
        args += ["--qlora", "--quant-type", quant_type] + ([] if double_quant else ["--no-double-quant"])
    args += ["--base", str(base)] if base else []
    args += ["--init-adapter", str(init_adapter)] if init_adapter else []
    return _run_script(SCRIPT, profile, folder, kind, profile.sft_steps, args, timeout_s)


@takes_profile
def dpo_isolated(profile: Profile, sft_dir: str | Path, folder: str | Path, timeout_s: int = 3600) -> dict:
    """Run ``python scripts/dpo.py`` (notebook 02's recipe) on the SFT model ``sft_dir`` with this profile, saving
    the adapter in ``folder``; return its report."""
    return _run_script(DPO_SCRIPT, profile, Path(folder), "dpo", profile.dpo_steps, ["--model", str(sft_dir)],
                       timeout_s)


@takes_profile
def grpo_isolated(profile: Profile, sft_dir: str | Path, folder: str | Path, timeout_s: int = 3600) -> dict:
    """Run ``python scripts/grpo.py`` (notebook 08's recipe) on the SFT model ``sft_dir`` with this profile, saving
    the adapter in ``folder``; return its report."""
    return _run_script(GRPO_SCRIPT, profile, Path(folder), "grpo", profile.grpo_steps, ["--model", str(sft_dir)],
                       timeout_s)


def _run_script(script: Path, profile: Profile, folder: Path, kind: str, steps: int, args: list[str],
                timeout_s: int) -> dict:
    """``python <script> --profile-json ... --output-dir folder <args>`` with a progress bar that follows its steps;
    its report, or :class:`TrainingError` with the end of its log. A ``folder`` the course did not write (a file,
    a folder of yours) is refused before the process starts (:func:`helpers.paths.check_replaceable`)."""
    check_replaceable(folder, "folder=")
    log = folder.parent / f"{folder.name}_{kind}.log"
    profile_file = folder.parent / f"{folder.name}_{kind}.profile.json"  # the whole profile, not its name
    profile_file.parent.mkdir(parents=True, exist_ok=True)
    profile_file.write_text(profile.to_json())
    args = [str(script), "--profile-json", str(profile_file), "--output-dir", str(folder),
            "--trained-by", os.environ.get("COURSE_NOTEBOOK", "a notebook"), *args]
    with follow_log(log, STEP_PATTERN, steps, f"{kind} training (fresh process)", "step"):
        code = run_python(args, log, timeout_s)
    if code != 0 or not (folder / REPORT).is_file():
        raise TrainingError(f"Training '{kind}' in a fresh process failed (exit {code}). "
                            f"Fix what the end of its log ({log}) names and run again:\n{log_tail(log, 25)}")
    return json.loads((folder / REPORT).read_text())


def save_run(trainer, profile: Profile, folder: Path, inputs: dict, memory: "MemoryMonitor", trained_by: str,
             **info) -> Path:
    """What ``scripts/sft.py`` and ``scripts/dpo.py`` do at the end: the adapter with its manifest (``inputs``, plus
    the number of processes when there are several) and ``train_info.json`` (``info``, peak memory, processes,
    backend, global batch), written by the first process only; every process waits until it is written."""
    import time

    import torch

    accelerator, args = trainer.accelerator, trainer.args
    if accelerator.num_processes > 1:   # under `accelerate launch`: each process trained on its share of every batch
        inputs = {**inputs, "num_processes": accelerator.num_processes}
    if accelerator.is_main_process:
        save_adapter(trainer, profile, folder=folder, inputs=inputs, info={
            **info,
            "peak_rss_mb": memory.stop(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 1e6 if torch.cuda.is_available() else None,
            "rss_by_step": memory.by_step,
            "adapter": str(folder),
            "num_processes": accelerator.num_processes,
            "distributed": str(accelerator.distributed_type),
            "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
            "global_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps
                            * accelerator.num_processes,
            "trained_by": f"{trained_by} ({time.strftime('%Y-%m-%d %H:%M:%S')})",
        })
        print(f"adapter saved in {folder}")
    accelerator.wait_for_everyone()
    return folder


class MemoryMonitor:
    """A ``TrainerCallback`` for ``scripts/sft.py``: samples this process's resident memory every 50 ms from its
    creation (so model loading counts), records the peak reached by the end of each step, and prints the
    step line that :func:`train_isolated`'s progress bar follows. Linux only (``/proc/self/statm``); elsewhere
    the process-wide peak from ``resource`` is used."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        self.peak_mb = 0.0
        self.by_step: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        monitor = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                monitor.by_step.append(monitor.peak_mb)
                print(STEP_LINE.format(step=state.global_step, total=state.max_steps), flush=True)

        self.callback = _Callback()

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        while not self._stop.wait(0.05):
            try:
                with open("/proc/self/statm") as f:
                    self.peak_mb = max(self.peak_mb, int(f.read().split()[1]) * page / 1e6)
            except OSError:
                return

    def stop(self) -> float:
        """Stop sampling; return the peak in MB (the process-wide peak where sampling was not possible)."""
        from .results import peak_rss_mb

        self._stop.set()
        self._thread.join()
        return self.peak_mb or peak_rss_mb()


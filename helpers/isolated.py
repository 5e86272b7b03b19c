"""SFT trainings in a fresh Python process: clean peak-memory numbers, and one LoRA run shared by notebooks 01 and 06.

Peak memory is a property of a whole process (the allocator rarely gives memory back), so a training inside a
notebook kernel would be charged with whatever the kernel did before. :func:`train_isolated` therefore runs
:func:`helpers.training.train_sft_lora` in ``python -m helpers.isolated``, shows a progress bar that follows the
child's log, and reads back a report: peak RSS (and peak CUDA memory on GPU), the peak reached by each step,
seconds, loss history, trainable parameters, the settings, and where the adapter was saved.

Notebook 01 trains its LoRA adapter this way; notebook 06 compares LoRA with QLoRA under the same settings and
reuses notebook 01's run (:func:`reusable_run`) instead of repeating it when the settings match (a LoRA run at
another learning rate, as in notebook 06's exercise 3, gets its own folder). A shorter run
would not do for the memory number: in our runs RSS was still rising at steps 25 to 60 of 60 (``rss_by_step``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .paths import REPO_ROOT, helper_env
from .profiles import Profile

KINDS = ("lora", "qlora")
ADAPTER_NAMES = {"lora": "sft_lora", "qlora": "06_qlora"}  # at the profile's learning rate, LoRA *is* notebook 01's adapter
REPORT = "train_info.json"
STEP_LINE = "training step {step} of {total}"  # what the child prints after each step ...
STEP_PATTERN = re.compile(re.escape(STEP_LINE.split("{step}")[0]) + r"(\d+) of")  # ... and what the parent's bar reads


class TrainingError(RuntimeError):
    """A training child process failed; the message quotes the end of its log."""


def check_kind(kind: str) -> None:
    """Refuse anything but ``"lora"`` and ``"qlora"``, naming both."""
    if kind not in KINDS:
        raise ValueError(f"Unknown kind '{kind}'; use one of {KINDS}.")


def run_settings(profile: Profile, kind: str, learning_rate: float | None = None) -> dict:
    """Everything that decides a training run's result: base model, data, LoRA and trainer settings
    (``learning_rate`` overrides the profile's SFT learning rate).

    Two runs with equal settings train the same adapter (seeded), so a saved run with these settings can stand
    in for a new one."""
    from .data import sft_rows
    from .training import LORA_TARGETS

    check_kind(kind)
    data = hashlib.sha256(json.dumps(sft_rows(profile), sort_keys=True).encode()).hexdigest()[:16]
    fields = ("model_id", "precision", "max_length", "train_batch_size", "grad_accum", "sft_steps",
              "lora_r", "lora_alpha", "gradient_checkpointing")
    return {"kind": kind, "profile": profile.name, **{f: getattr(profile, f) for f in fields},
            "learning_rate": learning_rate or profile.sft_learning_rate, "lora_targets": LORA_TARGETS, "data_sha256": data}


def adapter_path(profile: Profile, kind: str, learning_rate: float | None = None) -> Path:
    """Where the adapter (and its report) of ``kind`` lives: ``outputs/sft_lora/<profile>`` for LoRA at the
    profile's learning rate (notebook 01's adapter, which notebooks 02-07 build on), ``outputs/06_lora/<profile>``
    for LoRA at another rate, ``outputs/06_qlora/<profile>`` for QLoRA."""
    from .training import adapter_dir

    check_kind(kind)
    if kind == "lora" and learning_rate not in (None, profile.sft_learning_rate):
        return adapter_dir(profile, "06_lora")
    return adapter_dir(profile, ADAPTER_NAMES[kind])


def reusable_run(profile: Profile, kind: str, learning_rate: float | None = None) -> dict | None:
    """The report of a finished isolated run of ``kind`` with today's settings, or ``None`` (with the reason
    printed) when there is none: no run yet, a run trained inside a notebook kernel, or other settings."""
    path = adapter_path(profile, kind, learning_rate) / REPORT
    report = json.loads(path.read_text()) if path.is_file() else None
    if report is None:
        problem = "no saved run"
    elif "peak_rss_mb" not in report:
        problem = "the saved run was trained inside a notebook kernel, so its peak memory is not comparable"
    elif report.get("settings") != run_settings(profile, kind, learning_rate):
        problem = "the saved run used other settings"
    else:
        return report
    print(f"{kind}: {problem} at {path.parent}; training it now.")
    return None


def train_isolated(profile: Profile, kind: str = "lora", reuse: bool = False, learning_rate: float | None = None,
                   timeout_s: int = 3600) -> dict:
    """Train ``kind`` ("lora": full-precision base; "qlora": NF4 base) with the profile's SFT settings (and
    ``learning_rate`` if given) in a fresh Python process and return its report (see the module docstring).
    With ``reuse``, return the saved report of an earlier isolated run with the same settings instead
    (:func:`reusable_run`); its ``"trained_by"`` says which notebook trained it."""
    check_kind(kind)
    if reuse and (report := reusable_run(profile, kind, learning_rate)) is not None:
        print(f"{kind}: reusing the run {report['trained_by']} trained with these settings "
              f"({report['steps']} steps, {report['train_seconds']:.0f} s, peak RSS {report['peak_rss_mb']:.0f} MB)")
        return report
    folder = adapter_path(profile, kind, learning_rate)
    log = folder.parent / f"{folder.name}_{kind}.log"
    profile_file = folder.parent / f"{folder.name}_{kind}.profile.json"  # the whole profile, not its name
    profile_file.parent.mkdir(parents=True, exist_ok=True)
    profile_file.write_text(profile.to_json())
    with follow_log(log, STEP_PATTERN, profile.sft_steps, f"{kind} training (fresh process)", "step"):
        code = run_module("helpers.isolated", [str(profile_file), kind, os.environ.get("COURSE_NOTEBOOK", "a notebook"),
                                               str(learning_rate or "")], log, timeout_s)
    if code != 0 or not (folder / REPORT).is_file():
        raise TrainingError(f"Training '{kind}' in a fresh process failed (exit {code}). "
                            f"The end of its log ({log}):\n{log_tail(log, 25)}")
    return json.loads((folder / REPORT).read_text())


@contextmanager
def follow_log(path: Path, pattern: re.Pattern, total: int, desc: str, unit: str, zero_based: bool = False) -> Iterator[None]:
    """Show one progress bar while a child process writes ``path``: the bar follows the last number that
    ``pattern``'s first group finds in the log (the child's step or layer counter; ``zero_based`` when the
    first item is numbered 0)."""
    from tqdm.auto import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    done = threading.Event()
    bar = tqdm(total=total, desc=desc, unit=unit)

    def follow() -> None:
        while not done.wait(1.0):
            found = pattern.findall(path.read_text(errors="ignore")) if path.exists() else []
            if found:
                bar.n = min(total, int(found[-1]) + zero_based)
                bar.refresh()

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        bar.n = total
        bar.close()


def run_module(module: str, args: list[str], log: Path, timeout_s: int | None = None) -> int:
    """Run ``python -m <module> <args>`` from the repository (output appended to ``log``); return its exit code."""
    with open(log, "a") as out:
        try:
            return subprocess.run([sys.executable, "-m", module, *args], cwd=os.getcwd(), env=helper_env(),
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n[stopped after {timeout_s} s]\n")
            return -1


def log_tail(log: Path, lines: int) -> str:
    """The last ``lines`` lines of a child process's log, for the error message when it failed."""
    return "\n".join(log.read_text(errors="ignore").strip().splitlines()[-lines:])


def _train(profile_file: str, kind: str, trained_by: str, learning_rate: str = "") -> None:
    """The child process: train ``kind`` while sampling RSS, save the adapter with its report (``train_info.json``)."""
    import torch
    from transformers import TrainerCallback

    from . import setup
    from .models import load_tokenizer
    from .paths import outputs_dir
    from .qlora import load_for_training
    from .results import peak_rss_mb
    from .training import run_record, save_adapter, train_sft_lora

    from .profiles import Profile

    profile = Profile.from_json(Path(profile_file).read_text())
    os.environ["COURSE_PROFILE"] = profile.name
    profile = setup(f"{trained_by}: {kind}, fresh process", profile=profile)
    rate = float(learning_rate) if learning_rate else None
    peak = {"rss": 0.0}
    rss_by_step: list[float] = []
    stop = threading.Event()

    def sample() -> None:  # current RSS every 50 ms: the peak *during* training, loading included
        page = os.sysconf("SC_PAGE_SIZE")
        while not stop.wait(0.05):
            with open("/proc/self/statm") as f:
                peak["rss"] = max(peak["rss"], int(f.read().split()[1]) * page / 1e6)

    class Progress(TrainerCallback):  # the peak reached by the end of each step, and a line the parent's bar follows
        def on_step_end(self, args, state, control, **kwargs):
            rss_by_step.append(peak["rss"])
            print(STEP_LINE.format(step=state.global_step, total=state.max_steps), flush=True)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    tokenizer = load_tokenizer(profile)
    trainer = train_sft_lora(profile, load_for_training(profile, kind), tokenizer,
                             output_dir=outputs_dir("trainer", f"{kind}_{profile.name}"), callbacks=[Progress()],
                             **({"learning_rate": rate} if rate else {}))
    stop.set()
    sampler.join()
    folder = adapter_path(profile, kind, rate)
    save_adapter(trainer, profile, name=folder.parent.name, info={
        "kind": kind,
        "peak_rss_mb": peak["rss"] or peak_rss_mb(),  # the process-wide peak if no sample was taken
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 1e6 if torch.cuda.is_available() else None,
        "rss_by_step": rss_by_step,
        "adapter": str(folder),
        "settings": run_settings(profile, kind, rate),
        "trained_by": f"{trained_by} ({time.strftime('%Y-%m-%d %H:%M:%S')})",
    })


if __name__ == "__main__":  # python -m helpers.isolated <profile.json> <kind> <notebook> <learning rate or "">
    _train(*sys.argv[1:5])

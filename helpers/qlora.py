"""LoRA against QLoRA with the same data, steps and settings, each measured in a fresh process.

Peak memory is a property of a whole process (the allocator rarely gives memory back), so comparing two
trainings inside one notebook kernel would charge the second with the first one's leftovers. The notebook
therefore calls :func:`train_isolated`, which runs ``python -m helpers.qlora <kind>`` in a subprocess and
reads back a small JSON report: peak RSS (and peak CUDA memory on GPU), the peak reached by each step,
seconds, loss history, trainable parameters, and where the adapter was saved. The LoRA run repeats notebook
01's training (the same adapter, bit for bit) because its peak memory has to be measured in a fresh process
too: a shorter run does not reach the peak (in our runs RSS was still rising at steps 25 to 60 of 60, see
``rss_by_step``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from .paths import REPO_ROOT, helper_env, outputs_dir
from .profiles import Profile

KINDS = ("lora", "qlora")


def load_for_training(profile: Profile, kind: str, path: str | None = None):
    """The base model for ``kind``: full precision for ``lora``; NF4 + double quantization, prepared with
    ``prepare_model_for_kbit_training``, for ``qlora``."""
    from peft import prepare_model_for_kbit_training

    from .bnb import bnb_config
    from .models import load_model

    if kind == "lora":
        return load_model(profile, path)
    if kind == "qlora":
        model = load_model(profile, path, quantization_config=bnb_config("nf4_dq", profile.compute_dtype_4bit))
        # freezes the base, casts norms to fp32, makes inputs require grads (for checkpointing)
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=profile.gradient_checkpointing)
    raise ValueError(f"Unknown kind '{kind}'; use one of {KINDS}.")


@torch.no_grad()
def dequantized_copy(quantized, full_precision):
    """Copy the *dequantized* 4-bit weights of ``quantized`` into the matching Linear layers of
    ``full_precision`` (in place) and return it: the base an adapter trained with QLoRA actually saw,
    as ordinary floating-point weights. Merging a QLoRA adapter into this copy is exact.

    Pass a freshly loaded ``quantized`` model: after its first forward pass on CPU, bitsandbytes keeps the
    weights in a different packed layout, which this function refuses."""
    import bitsandbytes.functional as F
    from bitsandbytes.nn import Linear4bit

    fp_modules = dict(full_precision.named_modules())
    n = 0
    for name, module in quantized.named_modules():
        if isinstance(module, Linear4bit):
            if getattr(module.weight.quant_state, "packing_format_for_cpu", False):
                raise ValueError("This 4-bit model has already run on CPU, and bitsandbytes has repacked its weights "
                                 "for its CPU kernel; pass a freshly loaded NF4 model (before any forward pass).")
            target = fp_modules[name.replace("base_model.model.", "").replace(".base_layer", "")]
            w = F.dequantize_4bit(module.weight.data, module.weight.quant_state)
            target.weight.copy_(w.to(target.weight.dtype).reshape(target.weight.shape))
            n += 1
    if n == 0:
        raise ValueError("No 4-bit layers found: pass the NF4 model the QLoRA adapter was trained on.")
    return full_precision


def _train(kind: str) -> dict:
    """Train one adapter in this process and return its report (run by the subprocess)."""
    import threading
    import time

    from transformers import TrainerCallback

    from . import setup
    from .models import load_tokenizer
    from .results import peak_rss_mb
    from .training import run_record, save_adapter, train_sft_lora

    profile = setup(f"06_qlora:{kind}")
    peak = {"rss": 0.0}
    rss_by_step: list[float] = []
    stop = threading.Event()

    def sample() -> None:  # current RSS every 50 ms: the peak *during* training, loading included
        page = os.sysconf("SC_PAGE_SIZE")
        while not stop.wait(0.05):
            with open("/proc/self/statm") as f:
                peak["rss"] = max(peak["rss"], int(f.read().split()[1]) * page / 1e6)

    class PeakSoFar(TrainerCallback):  # the peak reached by the end of each step: how memory grows
        def on_step_end(self, args, state, control, **kwargs):
            rss_by_step.append(peak["rss"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    tokenizer = load_tokenizer(profile)
    model = load_for_training(profile, kind)
    trainer = train_sft_lora(profile, model, tokenizer, output_dir=outputs_dir("trainer", f"{kind}_{profile.name}"),
                             callbacks=[PeakSoFar()])
    stop.set()
    sampler.join()
    folder = save_adapter(trainer, profile, name=f"06_{kind}")
    return {
        "kind": kind,
        **run_record(trainer),
        "peak_rss_mb": peak["rss"] or peak_rss_mb(),  # the process-wide peak if no sample was taken
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 1e6 if torch.cuda.is_available() else None,
        "rss_by_step": rss_by_step,
        "adapter": str(folder),
        "when": time.time(),
    }


def train_isolated(kind: str, timeout_s: int = 3600) -> dict:
    """Train ``kind`` ("lora" or "qlora") in a fresh Python process and return its report."""
    if kind not in KINDS:
        raise ValueError(f"Unknown kind '{kind}'; use one of {KINDS}.")
    report = outputs_dir("06_qlora") / f"{kind}_report.json"
    report.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-m", "helpers.qlora", kind, str(report)], cwd=REPO_ROOT, env=helper_env(),
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or not report.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"Training '{kind}' in a subprocess failed (exit {proc.returncode}). Last lines:\n{tail}")
    return json.loads(Path(report).read_text())


if __name__ == "__main__":  # python -m helpers.qlora <kind> <report.json>
    result = _train(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps(result, default=float))

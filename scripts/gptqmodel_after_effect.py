"""Does a GPTQModel quantization slow down what the same process computes after it?

    python scripts/gptqmodel_after_effect.py quantize   # forward passes, a 4-bit GPTQ in this process, forward passes
    python scripts/gptqmodel_after_effect.py pause      # the same with a 60-s pause instead of the quantization

Prints one JSON line: the median seconds of a `cpu`-profile forward pass (8 passages of 256 tokens, in the profile's
precision) in three rounds before and three after, the CPU affinity, torch's thread count, the number of Python
threads and the fp32 matrix-product rate before and after. This is the measurement behind the choice to quantize in
the notebook's own process (`helpers.quant.run_quantization`, notes/under_the_hood.md); run both modes in turn on a
quiet machine.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the course's helpers package

import torch


def main(mode: str) -> dict:
    from helpers import get_profile, quant, setup, text
    from helpers.evaluation import autocast_context
    from helpers.hardware import matmul_gflops
    from helpers.models import load_model_and_tokenizer, model_path

    profile = setup("scripts/gptqmodel_after_effect.py", profile=get_profile("cpu"))
    model, tok, _ = load_model_and_tokenizer(profile)
    batch = tok(text.stdlib_samples("eval", 8), return_tensors="pt", padding=True, truncation=True, max_length=256)

    def forward_seconds(n: int = 6) -> float:
        times = []
        with torch.no_grad(), autocast_context(profile.eval_autocast):
            for _ in range(n):
                start = time.perf_counter()
                model(**batch)
                times.append(time.perf_counter() - start)
        return sorted(times)[n // 2]

    def state() -> dict:
        return {"affinity": sorted(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
                "python_threads": threading.active_count(), "fp32_gflops": round(matmul_gflops("fp32"))}

    forward_seconds(2)   # warm-up
    before, state_before = [forward_seconds() for _ in range(3)], state()
    if mode == "quantize":
        with tempfile.TemporaryDirectory() as out:   # in this process, as notebooks 03 and 04 quantize
            seconds = quant.gptqmodel_quantize(model_path(profile), Path(out) / "gptq_w4", "gptq", 4, 64,
                                               quant.calibration_texts(profile, "stdlib", tok), sym=True, desc_act=False)
    else:
        time.sleep(seconds := 60.0)
    after, state_after = [forward_seconds() for _ in range(3)], state()
    return {"mode": mode, "seconds_between": round(seconds, 1), "forward_seconds_before": before,
            "forward_seconds_after": after, "before": state_before, "after": state_after}


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("quantize", "pause"):
        sys.exit(__doc__)
    print(json.dumps(main(sys.argv[1])))

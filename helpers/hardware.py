"""Which precision a CPU should compute in: bf16 only where the CPU computes bf16 natively and fast, else fp32.

CPUs with AVX-512-BF16 or AMX (recent Xeons, AMD Zen 4 and later) multiply bf16 matrices several times faster
than fp32. Most laptop CPUs (Intel consumer chips since Alder Lake, AMD before Zen 4, and the AVX2-only cloud
machines) have no bf16 instructions: torch then emulates bf16, and a bf16 matrix product runs tens of times
*slower* than fp32. So the decision is made from the hardware, in two steps:

1. the CPU's capability flags (Linux ``/proc/cpuinfo``): no ``avx512_bf16`` or ``amx_bf16`` means fp32;
2. a sub-second timing of one matrix product in both dtypes: bf16 only if it is clearly faster.

Where the flags cannot be read (macOS, Windows), the timing alone decides. ``COURSE_CPU_PRECISION=fp32|bf16``
overrides both. The decision is made once per process and handed to child processes through the environment,
so a training or quantization child computes in the same precision as the notebook that started it.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from functools import lru_cache

OVERRIDE_VAR = "COURSE_CPU_PRECISION"
DECIDED_VAR = "COURSE_CPU_PRECISION_DECIDED"  # set by this module for child processes; not for users
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_SPEEDUP = 1.2  # bf16 must beat fp32 by this factor to be used


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's capability flags, or ``None`` where they cannot be read (not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux), else what :mod:`platform` says."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def bf16_speedup(budget_s: float = 0.2) -> float:
    """How many times faster a bf16 matrix product runs than the same product in fp32, at a shape of the model's
    MLP (256x576 @ 576x1536).

    The two dtypes are timed in alternation and the median of the rounds' ratios is returned, within about
    ``budget_s`` in all (plus one product in
    each dtype to warm up): on a machine shared with other work, a burst of load then slows both alike instead of
    deciding the comparison (timed one after the other, a busy moment once made a CPU with AMX measure bf16 at 0.8x
    fp32). Well under a second even where bf16 is emulated."""
    import torch

    a, b = torch.randn(256, 576), torch.randn(576, 1536)
    pairs = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}
    for x, y in pairs.values():
        x @ y  # warm-up
    ratios, start = [], time.perf_counter()
    while len(ratios) < 5 or (time.perf_counter() - start < budget_s and len(ratios) < 60):
        took = {}
        for k, (x, y) in pairs.items():
            t = time.perf_counter()
            x @ y
            took[k] = time.perf_counter() - t
        ratios.append(took["fp32"] / took["bf16"])
    return statistics.median(ratios)


def matmul_gflops(dtype: str = "fp32", tokens: int = 512, d_in: int = 576, d_out: int = 1536,
                  budget_s: float = 0.5) -> float:
    """The machine's matrix-product rate in GFLOP/s, measured now at a shape of SmolLM2-135M's MLP (``tokens`` x
    576 @ 576 x 1536, a batch of 8 x 64 tokens): the best of repeated products within about ``budget_s``, in
    ``dtype`` ("fp32" or "bf16"). Times in this course are stated next to it, because the same CPU kind runs 2-3x
    slower on a busy day (helpers.cost, scripts/cost_check.py)."""
    import torch

    kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(tokens, d_in, dtype=kind), torch.randn(d_in, d_out, dtype=kind)
    a @ b  # warm-up
    best, start, n = float("inf"), time.perf_counter(), 0
    while n < 3 or (time.perf_counter() - start < budget_s and n < 200):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
        n += 1
    return 2 * tokens * d_in * d_out / best / 1e9


def decide(flags: set[str] | None, speedup: float | None, override: str | None = None) -> tuple[str, str]:
    """``(precision, reason)`` from the CPU's flags (``None``: unknown), a measured bf16 speedup (``None``: not
    measured) and an override (``"fp32"``/``"bf16"``). Pure logic; :func:`cpu_precision` supplies the inputs."""
    if override:
        if override not in ("fp32", "bf16"):
            raise ValueError(f"{OVERRIDE_VAR}={override!r} is not a CPU precision; use fp32 or bf16, or unset it.")
        return override, f"set by {OVERRIDE_VAR}={override}"
    if flags is not None and not flags.intersection(BF16_FLAGS):
        return "fp32", f"this CPU has no native bf16 (no {' or '.join(BF16_FLAGS)} flag), so bf16 would be emulated and slow"
    if speedup is None:
        return "fp32", "bf16 speed not measured"
    where = "CPU has bf16 instructions" if flags is not None else "CPU flags unknown"
    if speedup >= MIN_SPEEDUP:
        return "bf16", f"{where}, and a bf16 matrix product measured {speedup:.1f}x faster than fp32"
    return "fp32", f"{where}, but a bf16 matrix product measured {speedup:.2f}x the speed of fp32 (not faster)"


@lru_cache(maxsize=1)
def cpu_precision() -> tuple[str, str]:
    """``(precision, reason)`` for this machine's CPU: the override, else a decision inherited from the parent
    process, else :func:`decide` on the flags and (only where bf16 instructions may exist) a timing."""
    override = os.environ.get(OVERRIDE_VAR, "").strip().lower() or None
    if override is None and os.environ.get(DECIDED_VAR):
        try:
            precision, reason = json.loads(os.environ[DECIDED_VAR])
            if precision in ("fp32", "bf16"):
                return precision, reason
        except (ValueError, TypeError):
            pass
    flags = cpu_flags()
    needs_timing = override is None and (flags is None or bool(flags.intersection(BF16_FLAGS)))
    precision, reason = decide(flags, bf16_speedup() if needs_timing else None, override)
    os.environ[DECIDED_VAR] = json.dumps([precision, reason])  # child processes decide the same way
    return precision, reason

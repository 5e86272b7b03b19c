"""`make bench`: the course's hot paths timed against this machine's own limits, so that runs on different days and
machines can be compared.

First the limits, measured in this process: the matrix-product rate in fp32 and bf16 at a shape of the model's MLP
(helpers.hardware.matmul_gflops) and the memory bandwidth (a large tensor copied). Then each hot path on the
profile (default ``cpu``: SmolLM2-135M) with the work it does, counted by torch's FLOP counter on one extra,
untimed repetition (or, for decoding, the bytes of weights read per step), and its **share of the limit**: achieved
GFLOP/s over the measured matmul rate in the precision the path runs in, or achieved GB/s over the measured
bandwidth for token-by-token decoding. Writes results/bench_<profile>-<precision>.json: one file per CPU kind
(`cpu-bf16` where the CPU computes bf16 natively, `cpu-fp32` where it does not), both shown in the README.

    python scripts/bench.py                  # every path (quantization included: a few minutes)
    python scripts/bench.py --quick          # without GPTQ/AWQ
    python scripts/bench.py sft dpo          # some paths
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATHS = ("sft_step", "dpo_step", "grpo_step", "generation", "pair_scoring", "perplexity", "nf4_forward", "int8_forward",
         "gptq", "awq")
SLOW = ("gptq", "awq")


def memory_bandwidth_gbs(mb: int = 256, repeats: int = 5) -> float:
    """GB/s of a tensor copy (``mb`` MB read and written), best of ``repeats``."""
    import torch

    src = torch.empty(mb * 2**20 // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def counted_flops(fn) -> int:
    """FLOPs of ``fn()`` as torch's FLOP counter sees them (matrix products and attention; elementwise work is not
    counted, which is the convention of a roofline)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


class StepTimer:
    """A TrainerCallback that times each optimizer step and counts the FLOPs of the last one."""

    def __init__(self, count_step: int):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer.start = time.perf_counter()
                if state.global_step + 1 == count_step:
                    from torch.utils.flop_counter import FlopCounterMode

                    timer.counter = FlopCounterMode(display=False)
                    timer.counter.__enter__()

            def on_step_end(self, args, state, control, **kw):
                if timer.counter is not None and state.global_step == count_step:
                    timer.counter.__exit__(None, None, None)
                    timer.flops = timer.counter.get_total_flops()
                    timer.counter = None
                else:
                    timer.times.append(time.perf_counter() - timer.start)

        self.callback, self.times, self.flops, self.counter, self.start = _Callback(), [], 0, None, 0.0

    def median(self) -> float:
        """The median time of the timed steps (the first, warm-up step left out)."""
        timed = sorted(self.times[1:])
        return timed[len(timed) // 2]


def row(path: str, seconds: float, flops: float | None = None, bytes_moved: float | None = None, precision: str = "fp32",
        limits: dict | None = None, note: str = "") -> dict:
    """One result: seconds, the work, the achieved rate and its share of the machine's limit. Pure: tested."""
    out = {"path": path, "seconds": round(seconds, 4), "precision": precision, "note": note}
    if flops:
        rate = flops / seconds / 1e9
        out.update(gflop=round(flops / 1e9, 3), achieved_gflops=round(rate, 1))
        if limits:
            out["share_of_matmul_limit"] = round(rate / limits["matmul_gflops"][precision], 3)
    if bytes_moved:
        rate = bytes_moved / seconds / 1e9
        out.update(gb_moved=round(bytes_moved / 1e9, 3), achieved_gbs=round(rate, 2))
        if limits:
            out["share_of_bandwidth"] = round(rate / limits["bandwidth_gbs"], 3)
    if flops and bytes_moved and limits:
        bound, kind = roofline(flops, bytes_moved, limits["matmul_gflops"][precision], limits["bandwidth_gbs"])
        out.update(roofline_bound=kind, share_of_roofline=round(bound / seconds, 3))
    return out


def roofline(flops: float, bytes_moved: float, matmul_gflops: float, bandwidth_gbs: float) -> tuple[float, str]:
    """The roofline's lower bound on the time of work that does ``flops`` and reads ``bytes_moved``: the larger of
    the compute time at the matmul rate and the transfer time at the bandwidth, and which of the two binds. Batched
    decoding reads the weights once per step for the whole batch, so at batch 32 it is compute-bound on these CPUs
    (about 32 FLOPs per byte read in bf16, against a ridge of 380 GFLOP/s / 30 GB/s, about 13)."""
    compute, transfer = flops / (matmul_gflops * 1e9), bytes_moved / (bandwidth_gbs * 1e9)
    return (compute, "compute") if compute >= transfer else (transfer, "bandwidth")


def bench(paths: list[str], profile_name: str) -> dict:
    import torch

    from helpers import data, dpo, evaluation, models, quant, text, training
    from helpers.hardware import matmul_gflops
    from helpers.profiles import get_profile

    profile = get_profile(profile_name)
    precision = "bf16" if profile.precision == "bf16" else "fp32"
    limits = {"matmul_gflops": {k: round(matmul_gflops(k, budget_s=1.0), 1) for k in ("fp32", "bf16")},
              "bandwidth_gbs": round(memory_bandwidth_gbs(), 1)}
    print(f"limits: matmul {limits['matmul_gflops']} GFLOP/s, bandwidth {limits['bandwidth_gbs']} GB/s; "
          f"profile {profile.name}, precision {precision}", flush=True)
    tokenizer = models.load_tokenizer(profile)
    autocast = profile.eval_autocast
    results = []

    def report(r):
        results.append(r)
        share = r.get("share_of_matmul_limit", r.get("share_of_bandwidth"))
        print(f"  {r['path']:<14} {r['seconds']:>8.3f} s  " + (f"{r.get('achieved_gflops', '')} GFLOP/s " if "gflop" in r else "")
              + (f"{r.get('achieved_gbs', '')} GB/s " if "gb_moved" in r else "")
              + (f"= {100 * share:.0f}% of the limit" if share is not None else "") + (f"  ({r['note']})" if r["note"] else ""),
              flush=True)

    steps = 4   # the first is warm-up, steps 2-3 are timed, the 4th is counted
    if "sft_step" in paths:
        timer = StepTimer(steps)
        rows = data.sft_rows(profile)
        training.train_sft_lora(profile, models.load_model(profile), tokenizer, rows, max_steps=steps,
                                callbacks=[timer.callback], logging_steps=steps)
        report(row("sft_step", timer.median(), timer.flops, precision=precision,
                   limits=limits, note=f"median of steps 2-{steps - 1}, batch {profile.train_batch_size}"))
    if "dpo_step" in paths:
        timer = StepTimer(steps)
        pairs = dpo.preference_rows(profile, "dpo_train")
        dpo.train_dpo(profile, models.load_model(profile), tokenizer, pairs, max_steps=steps, callbacks=[timer.callback],
                      logging_steps=steps)
        report(row("dpo_step", timer.median(), timer.flops, precision=precision,
                   limits=limits, note=f"median of steps 2-{steps - 1}, {profile.dpo_batch_size} pairs"))
    if "grpo_step" in paths:
        from helpers import grpo

        timer = StepTimer(steps)
        start_from = models.model_path(profile)   # the base model: the bench trains nothing it would need first
        run = grpo.train_grpo(profile, models.load_model(profile), tokenizer, max_steps=steps, callbacks=[timer.callback])
        phases = run.phases.summary()
        generation_share = phases["generation"] / phases["step"] if phases.get("step") else float("nan")
        report(row("grpo_step", timer.median(), timer.flops, precision=precision,
                   limits=limits, note=f"median of steps 2-{steps - 1}, {profile.grpo_prompts_per_step} prompts x "
                                       f"{profile.grpo_num_generations} answers of up to {profile.grpo_max_completion_length} "
                                       f"tokens, from the base model ({Path(start_from).name}); sampling "
                                       f"{100 * generation_share:.0f}% of a step (mean of {steps})"))
    model = models.load_model(profile)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if "generation" in paths:
        rows = data.eval_rows(profile)[: profile.eval_batch_size * 2]
        go = lambda: evaluation.evaluate_skills(model, tokenizer, rows, profile.max_new_tokens, profile.eval_batch_size,
                                                desc=None, autocast=autocast)
        go()   # warm-up
        seconds = _timed(go)
        decode_steps = 2 * profile.max_new_tokens
        # bf16 autocast reads a bf16 copy of the weights: half the bytes
        read = weight_bytes * (0.5 if autocast else 1.0) * decode_steps
        report(row("generation", seconds, counted_flops(go), read, precision, limits,
                   note=f"{len(rows)} prompts in batches of {profile.eval_batch_size}, {profile.max_new_tokens} new tokens; "
                        "bandwidth bound: weights read once per decoding step"))
    if "pair_scoring" in paths:
        pairs = dpo.preference_rows(profile, "eval")[:64]
        go = lambda: dpo.score_pairs(model, tokenizer, pairs, autocast=autocast)
        go()
        report(row("pair_scoring", _timed(go), counted_flops(go), precision=precision, limits=limits,
                   note=f"{len(pairs)} held-out pairs"))
    if "perplexity" in paths:
        ppl_text = text.perplexity_text(profile.perplexity_text)
        def go():
            with evaluation.autocast_context(autocast):   # as helpers.measure scores perplexity
                return evaluation.token_losses(model, tokenizer, ppl_text, profile.ppl_window, profile.ppl_max_tokens,
                                               desc=None)
        report(row("perplexity", _timed(go), counted_flops(go), precision=precision, limits=limits,
                   note=f"{profile.ppl_max_tokens} tokens in windows of {profile.ppl_window}"))
    for kind in ("nf4_forward", "int8_forward"):
        if kind not in paths:
            continue
        from transformers import BitsAndBytesConfig

        config = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=profile.compute_dtype)
                  if kind == "nf4_forward" else BitsAndBytesConfig(load_in_8bit=True))
        qmodel = models.load_model(profile, quantization_config=config)
        ids = torch.randint(100, 1000, (8, 128))
        go = lambda: qmodel(input_ids=ids)
        with torch.no_grad():
            go()
            seconds = min(_timed(go) for _ in range(3))
        report(row(kind, seconds, 2 * sum(p.numel() for p in model.parameters()) * ids.numel(),
                   precision=precision if kind == "nf4_forward" else "fp32", limits=limits,
                   note="forward of 8 x 128 tokens; FLOPs from 2·N·T (bitsandbytes' kernels are not counted by torch)"))
    if any(k in paths for k in SLOW):
        import tempfile

        base_dir = Path(models.model_path(profile))   # the cached safetensors folder of the profile's model
        calibration = quant.calibration_texts(profile, "stdlib")
        for method in ("gptq", "awq"):
            if method not in paths:
                continue
            out = Path(tempfile.mkdtemp()) / method
            seconds = quant.gptqmodel_quantize(base_dir, out, method, profile.quant_bits[0], profile.quant_group_size,
                                               calibration, awq_clip=profile.awq_clip)
            from helpers import cost

            work = (cost.gptq_quantization(profile) if method == "gptq" else cost.awq_quantization(profile)).flops
            r = row(method, seconds, precision=precision,
                    note=f"{len(calibration)} calibration passages, load + quantize + save; GPTQModel's work is not "
                         "counted: helpers.cost's estimate is an upper bound, so no rate or share is claimed")
            report(dict(r, estimated_gflop_upper_bound=round(work / 1e9, 1)))
    return {"profile": profile.name, "precision": precision, "limits": limits, "paths": results,
            "training_head": "labelled positions only (helpers.training._compact_on_cpu)",
            "written": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help=f"some of {', '.join(PATHS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="leave out GPTQ and AWQ (minutes)")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--out", help="default: results/bench_<profile>-<precision>.json")
    args = parser.parse_args(argv)
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    paths = args.paths or [p for p in PATHS if not (args.quick and p in SLOW)]
    from run_course import cpu_kind

    report = bench(paths, args.profile)
    report["cpu"] = cpu_kind()
    out = Path(args.out or ROOT / "results" / f"bench_{report['profile']}-{report['precision']}.json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "scripts"))
    sys.exit(main(sys.argv[1:]))

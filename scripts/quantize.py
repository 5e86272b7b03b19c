"""Quantize a model with GPTQModel, GPTQ or AWQ: the calls of notebooks 03, 04 and 07 as a script.

Run it from the repository root (with the course's environment, e.g. `.venv/bin/python`):

    python scripts/quantize.py outputs/dpo_merged/cpu outputs/my_gptq_w4 --method gptq --bits 4 --group-size 64
    python scripts/quantize.py outputs/dpo_merged/cpu outputs/my_awq_w4 --method awq --bits 4 --group-size 64

Calibration text: the course's docstring passages (`--calibration stdlib`) or its chat data (`skills`).
The notebooks run it in a fresh process (`helpers.quant.gptqmodel_quantize`): GPTQModel's worker threads pin
themselves to CPU cores and stay alive after quantizing, which slowed everything the notebook computed afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the course's helpers package

import torch

from helpers import quant
from helpers.paths import atomic_folder


def quantize(model_dir: str, out_dir: str, method: str, bits: int, group_size: int, calibration: list[str],
             batch_size: int = 4, backend: str = "TORCH", dtype: str = "bfloat16", awq_clip: bool = True,
             awq_clip_tokens: int = 512, config_kwargs: dict | None = None) -> float:
    """Load, quantize with calibration text, save; returns the seconds ``quantize`` took."""
    quant.configure_gptqmodel()
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.quantization.config import AWQConfig, GPTQConfig

    Config = GPTQConfig if method == "gptq" else AWQConfig
    config = Config(bits=bits, group_size=group_size, **(config_kwargs or {}))   # e.g. sym, desc_act, true_sequential
    dtype = getattr(torch, dtype)
    with quant.torch_kernels_allow_fp32(dtype):                  # GPTQModel's CPU kernels declare 16-bit only
        model = GPTQModel.load(model_dir, config, dtype=dtype)   # the full-precision model, ready to quantize
        quant.check_settings(bits, group_size, [m.in_features for m in quant.linear_layers(model.model).values()])
        start = time.perf_counter()
        clip = quant.awq_clip_search(awq_clip, awq_clip_tokens) if method == "awq" else nullcontext()
        with clip:                                               # AWQ's clipping search: on, off or cheaper
            model.quantize(calibration, batch_size=batch_size, backend=BACKEND[backend])   # block by block
    seconds = time.perf_counter() - start
    with atomic_folder(Path(out_dir)) as tmp:              # never a half-written checkpoint
        model.save(str(tmp))                                     # packed weights + quantize config
    return seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", nargs="?", help="a full-precision model folder")
    parser.add_argument("out_dir", nargs="?", help="where the quantized checkpoint goes")
    parser.add_argument("--method", choices=quant.METHODS, default="gptq")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--calibration", choices=["stdlib", "skills"], default="stdlib")
    parser.add_argument("--profile", help="tiny, cpu, t4, a100 (decides the calibration size; default: detected)")
    parser.add_argument("--args-json", help="all arguments of quantize() in one file (what the notebooks pass)")
    parser.add_argument("--result-json", help="where to write the seconds quantize took")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    if args.args_json:
        kwargs = json.loads(Path(args.args_json).read_text())
    else:
        if not (args.model_dir and args.out_dir):
            raise SystemExit("Give a model folder and an output folder (or --args-json).")
        from helpers import get_profile, setup
        from helpers.models import load_tokenizer

        profile = setup("scripts/quantize.py", profile=get_profile(args.profile))
        tokenizer = load_tokenizer(profile) if args.calibration == "skills" else None
        kwargs = dict(model_dir=args.model_dir, out_dir=args.out_dir, method=args.method, bits=args.bits,
                      group_size=args.group_size, calibration=quant.calibration_texts(profile, args.calibration, tokenizer),
                      backend=str(quant.default_backend(args.method, args.bits).name),
                      dtype=str(quant.default_dtype(args.method)).removeprefix("torch."))
    seconds = quantize(**kwargs)
    if args.result_json:
        Path(args.result_json).write_text(json.dumps(seconds))
    print(f"quantized in {seconds:.1f} s; checkpoint in {kwargs['out_dir']}")
    return seconds


if __name__ == "__main__":
    main()

"""Quantize a model with GPTQModel, GPTQ or AWQ: the calls of notebooks 03 and 04 as a script.

Run it from the repository root (with the course's environment, e.g. `.venv/bin/python`):

    python scripts/quantize.py outputs/dpo_merged/cpu outputs/my_gptq_w4 --method gptq --bits 4 --group-size 64
    python scripts/quantize.py outputs/dpo_merged/cpu outputs/my_awq_w4 --method awq --bits 4 --group-size 64

Calibration text: the course's docstring passages (`--calibration stdlib`) or its chat data (`skills`).
The quantization itself is `helpers.quant.quantize_model`, the function notebooks 03 and 04 write out in a cell
(load with the config, quantize on the calibration text, save); the notebooks call it in their own process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the course's helpers package

import torch

from helpers import quant
from helpers.errors import OutputPathError
from helpers.paths import atomic_folder

DTYPES = ("bfloat16", "float16", "float32")


def quantize(model_dir: str, out_dir: str, method: str, bits: int, group_size: int, calibration: list[str],
             dtype: str | None = None, awq_clip: bool = True, awq_clip_tokens: int = 512, **config_kwargs) -> float:
    """Quantize with :func:`helpers.quant.gptqmodel_quantize` into a temporary folder that replaces ``out_dir`` when
    complete (never a half-written checkpoint); returns the seconds it took."""
    check_args(model_dir, out_dir, method, bits, group_size, dtype or "bfloat16")   # before GPTQModel loads anything
    with atomic_folder(Path(out_dir)) as tmp:
        return quant.gptqmodel_quantize(model_dir, tmp, method, bits, group_size, calibration, awq_clip=awq_clip,
                                        awq_clip_tokens=awq_clip_tokens,
                                        dtype=getattr(torch, dtype) if dtype else None, **config_kwargs)


def check_args(model_dir, out_dir, method: str, bits: int, group_size: int, dtype: str = "bfloat16") -> None:
    """Everything quantize() can check without loading the model (the script's own options, then
    :func:`helpers.quant.check_inputs`: folders, bits and group size against config.json); raises ValueError
    (QuantError, OutputPathError) that says what to do."""
    if method not in quant.METHODS:
        raise quant.QuantError(f"method={method!r}: use one of {', '.join(quant.METHODS)}.")
    if dtype not in DTYPES:
        raise quant.QuantError(f"dtype={dtype!r}: use one of {', '.join(DTYPES)}.")
    quant.check_inputs(model_dir, method, bits, group_size, out_dir)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", nargs="?", help="a full-precision model folder")
    parser.add_argument("out_dir", nargs="?", help="where the quantized checkpoint goes")
    parser.add_argument("--method", choices=quant.METHODS, default="gptq")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--calibration", choices=["stdlib", "skills"], default="stdlib")
    parser.add_argument("--profile", help="tiny, cpu, t4, a100 (decides the calibration size; default: detected)")
    args = parser.parse_args(argv)
    try:
        if not (args.model_dir and args.out_dir):
            raise ValueError("give a model folder and an output folder: "
                             "python scripts/quantize.py MODEL_DIR OUT_DIR --method gptq --bits 4 --group-size 64")
        check_args(args.model_dir, args.out_dir, args.method, args.bits, args.group_size)
    except (ValueError, OutputPathError) as exc:   # QuantError is a ValueError
        parser.error(str(exc))   # exit 2 with the message, before GPTQModel loads anything
    return args


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)   # arguments, folders and settings checked before anything is loaded
    from helpers import get_profile, setup
    from helpers.models import load_tokenizer

    profile = setup("scripts/quantize.py", profile=get_profile(args.profile))
    tokenizer = load_tokenizer(profile) if args.calibration == "skills" else None
    calibration = quant.calibration_texts(profile, args.calibration, tokenizer)
    seconds = quantize(args.model_dir, args.out_dir, args.method, args.bits, args.group_size, calibration)
    print(f"quantized in {seconds:.1f} s; checkpoint in {args.out_dir}")
    return seconds


if __name__ == "__main__":
    main()

"""Quantize a model with GPTQModel, GPTQ or AWQ: the calls of notebooks 03, 04 and 07 as a script.

Run it from the repository root (with the course's environment, e.g. `.venv/bin/python`):

    python scripts/quantize.py outputs/dpo_merged/cpu outputs/my_gptq_w4 --method gptq --bits 4 --group-size 64
    python scripts/quantize.py outputs/dpo_merged/cpu outputs/my_awq_w4 --method awq --bits 4 --group-size 64

Calibration text: the course's docstring passages (`--calibration stdlib`) or its chat data (`skills`).
The notebooks run it in a fresh process (`helpers.quant.gptqmodel_quantize`): a first measurement found that GPTQModel's
worker threads, alive after quantizing, slowed everything the notebook computed afterwards (measured again with the
same GPTQModel 7.6, it did not show: notes/under_the_hood.md).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the course's helpers package

import torch

from helpers import quant
from helpers.errors import OutputPathError
from helpers.paths import atomic_folder

DTYPES = ("bfloat16", "float16", "float32")


def quantize(model_dir: str, out_dir: str, method: str, bits: int, group_size: int, calibration: list[str],
             batch_size: int = 4, backend: str = "TORCH", dtype: str = "bfloat16", awq_clip: bool = True,
             awq_clip_tokens: int = 512, config_kwargs: dict | None = None) -> float:
    """Load, quantize with calibration text, save; returns the seconds ``quantize`` took."""
    quant.configure_gptqmodel()
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.quantization.config import AWQConfig, GPTQConfig

    check_args(model_dir, out_dir, method, bits, group_size, dtype)   # before GPTQModel loads anything
    if backend not in BACKEND.__members__:
        raise quant.QuantError(f"backend={backend!r} is not a GPTQModel backend; use one of "
                               f"{', '.join(BACKEND.__members__)} (on CPU: TORCH, GPTQ_TORCH or AWQ_TORCH; AUTO lets "
                               "GPTQModel pick).")
    quant.check_backend(backend)
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
    parser.add_argument("--args-json", help="all arguments of quantize() in one file (what the notebooks pass)")
    parser.add_argument("--result-json", help="where to write the seconds quantize took")
    args = parser.parse_args(argv)
    try:
        if args.args_json:
            args.kwargs = read_args_json(args.args_json)
            check_args(**{k: args.kwargs[k] for k in ("model_dir", "out_dir", "method", "bits", "group_size")},
                       dtype=args.kwargs.get("dtype", "bfloat16"))
        elif not (args.model_dir and args.out_dir):
            raise ValueError("give a model folder and an output folder (or --args-json): "
                             "python scripts/quantize.py MODEL_DIR OUT_DIR --method gptq --bits 4 --group-size 64")
        else:
            check_args(args.model_dir, args.out_dir, args.method, args.bits, args.group_size)
    except (ValueError, OutputPathError) as exc:   # QuantError is a ValueError
        parser.error(str(exc))   # exit 2 with the message, before GPTQModel loads anything
    return args


def read_args_json(path: str) -> dict:
    """quantize()'s keyword arguments from ``--args-json``, or ValueError naming what is wrong with the file."""
    params = inspect.signature(quantize).parameters
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
    if not Path(path).is_file():
        raise ValueError(f"--args-json {path}: no such file. Write quantize()'s arguments there as one JSON object "
                         f"(at least {', '.join(required)}).")
    try:
        kwargs = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise ValueError(f"--args-json {path} is not valid JSON ({exc}); write one JSON object.") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--args-json {path} holds a JSON {type(kwargs).__name__}; write one object of quantize()'s "
                         f"arguments, e.g. {{\"model_dir\": ..., \"out_dir\": ..., ...}}.")
    unknown, missing = sorted(set(kwargs) - set(params)), [n for n in required if n not in kwargs]
    if unknown or missing:
        raise ValueError(f"--args-json {path}: " + "; ".join(
            ([f"unknown argument(s) {unknown}"] if unknown else []) + ([f"missing {missing}"] if missing else []))
            + f". quantize() takes {', '.join(params)}.")
    return kwargs


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)   # arguments, folders and settings checked before anything is loaded
    if args.args_json:
        kwargs = args.kwargs
    else:
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

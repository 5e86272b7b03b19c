"""Weight quantization, from scratch (to learn) and with GPTQModel (to use).

From-scratch miniatures, one layer at a time, each checked against the library in the tests:

- :func:`rtn_quantize`: round-to-nearest with one scale (and zero point) per group of input columns.
- :func:`gptq_quantize`: GPTQ's column-by-column quantization with error feedback through the inverse Hessian.
- :func:`awq_quantize`: AWQ's activation-aware per-channel scaling, searched on calibration activations.

Whole-model quantization goes through GPTQModel (:func:`quantize_model`, run by :func:`run_quantization`), the
maintained successor of AutoGPTQ and AutoAWQ; :func:`rtn_model` builds the round-to-nearest baseline at the same
bits and group size.
"""

from __future__ import annotations

import contextlib
import io
import numbers
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from .profiles import takes_profile

SUPPORTED_BITS = (2, 3, 4, 8)
METHODS = ("gptq", "awq")


class QuantError(ValueError):
    """Unsupported quantization settings (bits, group size, backend): the message says what to use instead."""


# ----------------------------------------------------------------------------------------------------------------
# Checks with clear messages
# ----------------------------------------------------------------------------------------------------------------
def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers that weight-only quantization touches: those inside the decoder blocks (not ``lm_head``)."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and ".layers." in f".{name}"
    }


def check_settings(bits: int, group_size: int, in_features: Iterable[int] = ()) -> None:
    """Raise :class:`QuantError` for bits or a group size the kernels cannot pack.

    ``in_features`` are the input widths of the layers to quantize: every one must be a multiple of the
    group size (SmolLM2-135M has 576 and 1536, so 128 fails and 64 works).
    """
    for name, value in (("bits", bits), ("group_size", group_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise QuantError(f"{name}={value!r} is a {type(value).__name__}; pass a whole number, e.g. bits=4, "
                             "group_size=64.")
    if bits not in SUPPORTED_BITS:
        raise QuantError(f"{bits}-bit weights are not supported here; use one of {SUPPORTED_BITS}.")
    if group_size != -1 and (group_size < 8 or group_size & (group_size - 1)):
        raise QuantError(f"group_size={group_size} is not supported; use a power of two such as 32, 64 or 128, "
                         "or -1 for one group per row.")
    widths = sorted({int(w) for w in in_features})
    bad = [w for w in widths if group_size != -1 and w % group_size]
    if bad:
        fits = group_sizes_for(widths)
        fix = (f"use group_size={' or '.join(map(str, fits[:2]))} (each divides every width, {widths}), or -1 for one "
               "group per row" if fits else f"no power of two from 8 up divides every width {widths}: use "
               "group_size=-1 (one group per row)")
        raise QuantError(f"group_size={group_size} does not divide the input width of every layer {bad}; {fix}.")


def group_sizes_for(widths: Iterable[int]) -> list[int]:
    """The group sizes :func:`check_settings` accepts (powers of two from 128 down to 8, largest first) that divide
    every one of ``widths``: ``[64, 32, 16, 8]`` for SmolLM2-135M (576 and 1536)."""
    widths = list(widths)
    return [g for g in (128, 64, 32, 16, 8) if all(w % g == 0 for w in widths)]


def check_backend(backend: str, cuda_available: bool | None = None) -> None:
    """Refuse a GPU-only GPTQModel backend when there is no CUDA device, naming the CPU alternative."""
    gpu_only = {"MARLIN", "EXLLAMA_V1", "EXLLAMA_V2", "EXLLAMA_EORA", "TRITON", "AWQ_GEMM", "AWQ_GEMV",
                "AWQ_GEMV_FAST", "AWQ_MARLIN", "BITBLAS", "MACHETE", "GPTQ_TRITON", "GPTQ_MARLIN", "GPTQ_EXLLAMA_V2",
                "GPTQ_MACHETE", "GPTQ_BITBLAS", "AWQ_GEMM_TRITON", "AWQ_EXLLAMA_V2", "AWQ_MACHETE", "AWQ_BITBLAS"}
    name = str(getattr(backend, "name", backend)).upper()
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if name in gpu_only and not cuda_available:
        alt = "AWQ_TORCH" if name.startswith("AWQ") else "GPTQ_TORCH"
        raise QuantError(f"Backend {name} needs a CUDA GPU and none is available; on CPU use BACKEND.{alt} "
                         "(or BACKEND.AUTO to let GPTQModel pick).")


# ----------------------------------------------------------------------------------------------------------------
# Miniatures
# ----------------------------------------------------------------------------------------------------------------
def _qparams(w: torch.Tensor, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point per row of ``w`` (shape [rows, group])."""
    maxq = 2**bits - 1
    if sym:
        amax = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-8)
        scale = 2 * amax / maxq
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        lo = w.amin(dim=1, keepdim=True).clamp(max=0)
        hi = w.amax(dim=1, keepdim=True).clamp(min=0)
        scale = ((hi - lo) / maxq).clamp(min=1e-8)
        zero = torch.round(-lo / scale)
    return scale, zero


def _fake_quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    q = torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)
    return scale * (q - zero)


def rtn_quantize(w: torch.Tensor, bits: int, group_size: int, sym: bool = False) -> torch.Tensor:
    """Round-to-nearest: each group of ``group_size`` input columns of each row gets its own scale.

    Returns the dequantized weight (same shape and dtype as ``w``), which is what the layer computes with.
    """
    rows, cols = w.shape
    g = cols if group_size == -1 else group_size
    check_settings(bits, group_size, [cols])   # -1: one group per row, whatever the width
    grouped = w.float().reshape(rows, cols // g, g).reshape(-1, g)
    scale, zero = _qparams(grouped, bits, sym)
    return _fake_quant(grouped, scale, zero, bits).reshape(rows, cols).to(w.dtype)


def hessian(x: torch.Tensor) -> torch.Tensor:
    """``H = 2 X^T X / n`` for layer inputs ``x`` of shape [n_tokens, in_features] (GPTQ's proxy Hessian)."""
    x = x.reshape(-1, x.shape[-1]).float()
    return 2 * x.T @ x / x.shape[0]


def gptq_quantize(
    w: torch.Tensor,
    h: torch.Tensor,
    bits: int,
    group_size: int,
    sym: bool = False,
    damp: float = 0.01,
    act_order: bool = False,
) -> torch.Tensor:
    """A compact GPTQ: quantize columns left to right; push each column's error onto the rest via ``H^-1``.

    The update for column ``i`` with quantized value ``q_i`` is ``W[:, i+1:] -= (w_i - q_i) / U_ii * U_i,i+1:``
    where ``U`` is the upper Cholesky factor of ``H^-1`` (the OBS update, applied in a fixed order). Group
    scales are computed when a group's first column is reached, from the already-updated weights. With
    ``act_order`` the columns with the largest Hessian diagonal (largest input energy) go first.
    The library additionally batches the updates in blocks of 128 columns for speed; the result is the same.
    Returns the dequantized weight, on ``w``'s device (``h`` may live elsewhere).
    """
    w = w.detach().float().clone()
    h = h.detach().float().to(w.device).clone()
    rows, cols = w.shape
    g = cols if group_size == -1 else group_size
    check_settings(bits, group_size, [cols])
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(cols, device=w.device)
    w, h = w[:, perm], h[perm][:, perm]
    h += damp * torch.mean(torch.diag(h)) * torch.eye(cols, device=w.device)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    scale = zero = None
    for i in range(cols):
        if i % g == 0:
            scale, zero = _qparams(w[:, i:i + g], bits, sym)
        q[:, i] = _fake_quant(w[:, i:i + 1], scale, zero, bits)[:, 0]
        err = (w[:, i] - q[:, i]) / u[i, i]
        w[:, i + 1:] -= err[:, None] * u[i, i + 1:][None, :]
    return q[:, torch.argsort(perm)]


@dataclass
class AWQResult:
    """What the AWQ search found for one layer."""

    weight: torch.Tensor  # dequantized effective weight Q(W * s) / s
    scales: torch.Tensor  # per input channel
    alpha: float
    errors: dict[float, float]  # alpha -> relative output error on the search activations


def output_error(w: torch.Tensor, w_q: torch.Tensor, x: torch.Tensor) -> float:
    """Relative layer-output error ``||X W^T - X Wq^T||^2 / ||X W^T||^2`` on activations ``x`` (computed on
    ``w``'s device)."""
    x = x.reshape(-1, x.shape[-1]).float().to(w.device)
    ref = x @ w.float().T
    return float(((ref - x @ w_q.float().to(w.device).T) ** 2).sum() / (ref**2).sum())


def awq_quantize(
    w: torch.Tensor, x: torch.Tensor, bits: int, group_size: int, n_grid: int = 20, sym: bool = False
) -> AWQResult:
    """Activation-aware scaling: ``s = s_x ** alpha`` per input channel, alpha searched on calibration ``x``.

    ``s_x`` is the mean absolute activation of each input channel. Weights of salient channels are scaled up
    before rounding (so their relative rounding error shrinks) and the inverse scale is folded into the
    previous operation (here: kept as ``Q(W * s) / s``). ``alpha = 0`` is plain RTN. Results are on ``w``'s device.
    """
    w = w.detach().float()
    x = x.reshape(-1, x.shape[-1]).float().to(w.device)
    s_x = x.abs().mean(dim=0).clamp(min=1e-6)
    errors: dict[float, float] = {}
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for k in range(n_grid + 1):
        alpha = k / n_grid
        s = s_x**alpha
        s = s / (s.max() * s.min()).sqrt()
        w_eff = rtn_quantize(w * s, bits, group_size, sym) / s
        errors[alpha] = output_error(w, w_eff, x)
        if best is None or errors[alpha] < errors[best[0]]:
            best = (alpha, s, w_eff)
    alpha, s, w_eff = best
    return AWQResult(weight=w_eff, scales=s, alpha=alpha, errors=errors)


class _Captured(Exception):
    """Raised by :func:`layer_inputs`' hook once the layer has its input: the rest of the forward pass is not needed."""


@torch.no_grad()
def layer_inputs(model: nn.Module, tokenizer, texts: Sequence[str], layer_name: str, max_length: int = 256) -> torch.Tensor:
    """Record the inputs that ``layer_name`` sees when the model reads ``texts``: [n_tokens, in_features].

    Each forward pass stops at that layer (the layers after it cannot change its input)."""
    layer = dict(model.named_modules())[layer_name]
    seen: list[torch.Tensor] = []

    def capture(_module, inputs):
        seen.append(inputs[0].detach().reshape(-1, inputs[0].shape[-1]))
        raise _Captured

    handle = layer.register_forward_pre_hook(capture)
    try:
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length)
            try:
                model(**ids.to(model.device))
            except _Captured:
                pass
    finally:
        handle.remove()
    return torch.cat(seen).float().cpu()


def probe_layer(model: nn.Module) -> str:
    """The layer the miniatures study: the query projection of the middle decoder block."""
    names = [n for n in linear_layers(model) if n.endswith("self_attn.q_proj")]
    if not names:
        raise QuantError("No `self_attn.q_proj` layer found: the miniatures expect a Llama-style decoder. Pass a "
                         "Llama-style model (the profile's, from models.load_model(profile)), or call the miniatures "
                         "on one of your model's Linear layers by name (quant.layer_inputs(model, tok, texts, name)).")
    return names[len(names) // 2]


def check_calibration(calibration) -> list[str]:
    """Refuse a calibration set that is a single string, empty, or holds anything but non-empty texts."""
    from .data import require_sequence

    texts = require_sequence(calibration, "The calibration set", "['first passage ...', 'second passage ...']")
    if not texts:
        raise QuantError("The calibration set is empty: pass a list of texts (a few dozen passages are enough).")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise QuantError(f"Calibration passages {bad[:5]} are empty or not text; every passage must be a non-empty "
                         "string (quant.calibration_texts(profile) builds a valid set).")
    return texts


CALIBRATION_SOURCES = ("stdlib", "skills", "mix")  # docstrings, chat turns, half of each


@takes_profile
def calibration_texts(profile, source: str = "stdlib", tokenizer=None) -> list[str]:
    """Calibration passages: ``"stdlib"`` (generic English prose, disjoint from the perplexity text),
    ``"skills"`` (the course's SFT conversations rendered with the chat template; needs ``tokenizer``), or
    ``"mix"`` (the first half of the ``stdlib`` passages and the second half of the ``skills`` ones).

    The sets differ only in the kind of text: ``"skills"`` passage *i* is cut to the token count of
    ``"stdlib"`` passage *i*, so all have the same number of passages and of tokens.
    """
    n, chars = profile.quant_calibration_samples, profile.quant_calibration_chars
    from .text import stdlib_samples

    generic = [s[:chars] for s in stdlib_samples("calibration", n)]
    if source == "stdlib":
        return generic
    if source == "mix":
        return generic[: n // 2] + calibration_texts(profile, "skills", tokenizer)[n // 2:]
    if source == "skills":
        if tokenizer is None:
            raise QuantError("calibration_texts(source='skills') needs the tokenizer to apply the chat template: "
                             "pass it, calibration_texts(profile, 'skills', tokenizer), or use source='stdlib'.")
        from .data import sft_rows

        rows = sft_rows(profile)
        per = max(1, len(rows) // n)
        # several short conversations per passage, so each passage is long enough to cut
        chats = [tokenizer.apply_chat_template([m for r in rows[i:i + per][:8] for m in r["prompt"] + r["completion"]],
                                               tokenize=False) for i in range(0, per * n, per)][:n]
        lengths = [len(tokenizer(g, add_special_tokens=False)["input_ids"]) for g in generic]
        return [tokenizer.decode(tokenizer(c, add_special_tokens=False)["input_ids"][:k]) for c, k in zip(chats, lengths)]
    raise QuantError(f"Unknown calibration source '{source}'; use one of {CALIBRATION_SOURCES}.")


# ----------------------------------------------------------------------------------------------------------------
# Whole models
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def rtn_model(model: nn.Module, bits: int, group_size: int, sym: bool = False) -> nn.Module:
    """Replace every decoder Linear weight by its RTN-dequantized version, in place (a fake-quantized model).

    Same bits and group size as the GPTQ/AWQ checkpoints, so the comparison isolates the rounding method.
    """
    layers = linear_layers(model)
    check_settings(bits, group_size, [m.in_features for m in layers.values()])
    for module in layers.values():
        module.weight.copy_(rtn_quantize(module.weight, bits, group_size, sym))
    return model


GGUF_TYPES = ("Q4_0", "Q4_1", "Q8_0")  # llama.cpp formats the `gguf` package quantizes in Python


def gguf_fake_quantize(w: torch.Tensor, qtype: str) -> torch.Tensor:
    """``w`` quantized to llama.cpp's GGUF block format ``qtype`` and back (the ``gguf`` package's own reference
    code): the weight llama.cpp computes with. Blocks of 32 weights along each row."""
    from gguf import GGMLQuantizationType, quants

    t = GGMLQuantizationType[qtype]
    if w.shape[-1] % 32:
        raise QuantError(f"GGUF {qtype} needs rows whose length is a multiple of 32; this weight has {w.shape[-1]}. "
                         "Leave this layer in full precision (llama.cpp does the same), or use RTN with "
                         "quant.rtn_quantize, whose group size can be -1 (one group per row).")
    array = w.detach().float().cpu().numpy()
    return torch.from_numpy(quants.dequantize(quants.quantize(array, t), t)).to(w.dtype).to(w.device)


def gguf_bits_per_weight(qtype: str) -> float:
    """Bits per weight of a GGUF block format: its block's bytes over its weights (Q4_0: 18 bytes per 32 = 4.5)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    return 8 * size / block


@torch.no_grad()
def gguf_model(model: nn.Module, qtype: str, verbose: bool = True) -> nn.Module:
    """Replace every decoder Linear weight by its GGUF ``qtype`` round trip, in place (simulated, like
    :func:`rtn_model`: llama.cpp's dequantized weights, computed in fp32).

    The round trip is stored in the model's dtype. In fp32 that is exact; in bf16 (the A100 profile) or fp16
    (the T4) each value is rounded once more, and for Q8_0 bf16's 8 significant bits add an error of the
    same order as Q8_0's own. That extra error is measured here, not assumed: ``model.gguf_storage`` holds
    the relative RMS error of the GGUF round trip and of the storage rounding (against the original weights), and
    with ``verbose`` a line says so when the storage is not fp32."""
    if qtype not in GGUF_TYPES:
        raise QuantError(f"Unknown GGUF type '{qtype}'; use one of {GGUF_TYPES}.")
    norm = quant_err = store_err = 0.0
    dtypes = set()
    for module in linear_layers(model).values():
        w = module.weight.detach().float().cpu()
        q = gguf_fake_quantize(w, qtype)  # fp32
        stored = q.to(module.weight.dtype)
        norm += float(w.pow(2).sum())
        quant_err += float((q - w).pow(2).sum())
        store_err += float((stored.float() - q).pow(2).sum())
        dtypes.add(str(module.weight.dtype).removeprefix("torch."))
        module.weight.copy_(stored.to(module.weight.device))
    info = {"qtype": qtype, "stored_in": sorted(dtypes), "gguf_rel_rms_error": (quant_err / norm) ** 0.5 if norm else 0.0,
            "storage_rel_rms_error": (store_err / norm) ** 0.5 if norm else 0.0}
    model.gguf_storage = info
    if verbose and info["stored_in"] != ["float32"]:
        print(f"GGUF {qtype} simulated in {'/'.join(info['stored_in'])}: the round trip's relative RMS error is "
              f"{info['gguf_rel_rms_error']:.3%}; rounding it to {'/'.join(info['stored_in'])} adds "
              f"{info['storage_rel_rms_error']:.3%}, so this row measures {qtype} followed by that rounding "
              "(llama.cpp computes with the unrounded values).")
    return model


def configure_gptqmodel() -> None:
    """Settings GPTQModel needs on small machines: worker count = cores (it refuses more) and quiet logs."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, min(os.cpu_count() or 1, 8))))
    import logging

    from gptqmodel.utils.logger import setup_logger

    setup_logger().setLevel(logging.WARNING)  # its INFO lines (kernel choices, tables) say nothing to a student
    # GPTQModel's tokenizer helper calls logging.basicConfig(level=INFO) when imported: its notes would print
    logging.getLogger("tokenicer").setLevel(logging.WARNING)


def gptqmodel_config(method: str, bits: int, group_size: int, **kwargs):
    """A GPTQModel quantization config for ``method`` ("gptq" or "awq"), after checking the settings.

    GPTQ defaults to ``true_sequential=False``: every linear layer of a decoder block is quantized on the
    inputs that the block's earlier, already-quantized blocks produce, in one forward pass per block.
    GPTQModel's default (``True``) re-runs the block after each group of layers (attention, then MLP) so that
    later groups also see the quantized earlier groups of their own block: about three more forward passes
    per block for a second-order correction (notebook 03, exercise 7, compares the two).
    """
    if method not in METHODS:
        raise QuantError(f"Unknown method '{method}'; use one of {METHODS}.")
    check_settings(bits, group_size)
    configure_gptqmodel()   # before the config prints its INFO lines
    from gptqmodel.quantization.config import AWQConfig, GPTQConfig

    if method == "gptq":
        kwargs.setdefault("true_sequential", False)
    cls = {"gptq": GPTQConfig, "awq": AWQConfig}[method]
    return cls(bits=bits, group_size=group_size, **kwargs)


def default_backend(method: str, bits: int = 4, cuda: bool | None = None):
    """The GPTQModel kernel for quantizing/loading on the profile's device (``cuda``: whether that is a GPU; by default
    the profile's, so that ``COURSE_PROFILE=cpu`` on a GPU runtime keeps the CPU's kernels and dtype together), chosen
    so that nothing is compiled at run time.

    - CPU: the torch kernels (``GPTQ_TORCH``, ``AWQ_TORCH``).
    - CUDA: Triton for 4-bit GPTQ (``GPTQ_TRITON``; Triton ships with CUDA builds of torch and compiles its
      kernels itself, in seconds, with no ``nvcc``); the torch kernels for 3-bit GPTQ (no other kernel packs 3 bits)
      and for AWQ (GPTQModel's AWQ Triton kernel is fp16-only). GPTQModel's ``AUTO`` would pick Marlin or
      ExLlama, which are C++/CUDA extensions built with ``nvcc`` at first use: minutes on Colab's 2 vCPUs, with no
      fallback if the build fails.
    """
    from gptqmodel import BACKEND

    from .profiles import get_profile

    cuda = get_profile().needs_cuda if cuda is None else cuda   # the profile's device, as default_dtype's dtype
    if method == "awq":
        return BACKEND.AWQ_TORCH
    return BACKEND.GPTQ_TRITON if cuda and bits in (2, 4, 8) else BACKEND.GPTQ_TORCH


def default_dtype(method: str = "gptq") -> torch.dtype:
    """The dtype GPTQModel quantizes ``method`` in: the profile's compute dtype (:attr:`Profile.compute_dtype`).

    Left to itself GPTQModel quantizes in bf16 on every CPU, several times slower than fp32 on CPUs without native
    bf16, so there GPTQ and AWQ quantize in fp32 (:func:`torch_kernels_allow_fp32`; AWQ with
    :func:`awq_fp32_master_copy`, which fixes GPTQModel 7.6's AWQ in fp32). Measurements: ``notes/under_the_hood.md``."""
    from .profiles import get_profile

    return get_profile().compute_dtype


def kernel_dtype() -> torch.dtype:
    """The dtype GPTQModel's own loader runs its kernels in: fp16 or bf16, the dtypes they declare (bf16 on
    every CPU, as GPTQModel itself picks; the profile's on a GPU). Through ``from_pretrained`` (what the course
    measures) the same checkpoints run in the model's fp32 on CPU, and the kernels cast their weights to it."""
    from .profiles import get_profile

    dtype = get_profile().compute_dtype
    return torch.bfloat16 if dtype == torch.float32 else dtype


@contextmanager
def torch_kernels_allow_fp32(dtype: torch.dtype):
    """Let GPTQModel quantize GPTQ in fp32 (only when ``dtype`` is fp32): it packs the result into its torch
    kernel's layer, whose declared dtypes are fp16 and bf16 only. Used only while quantizing
    (:func:`run_quantization`); the
    saved checkpoint is the same format as a 16-bit one. Loading for inference stays within the declared dtypes
    (:func:`kernel_dtype`)."""
    if dtype != torch.float32:
        yield
        return
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    from gptqmodel.nn_modules.qlinear.torch_awq import AwqTorchLinear

    saved = {cls: cls.SUPPORTS_DTYPES for cls in (TorchLinear, AwqTorchLinear)}
    for cls, dtypes in saved.items():
        cls.SUPPORTS_DTYPES = [*dtypes, torch.float32]
    try:
        yield
    finally:
        for cls, dtypes in saved.items():
            cls.SUPPORTS_DTYPES = dtypes


AWQ_MASTER_COPY = "fc.weight.detach().to(torch.float32).cpu().contiguous()"   # GPTQModel 7.6, awq_processor.py


@contextmanager
def awq_fp32_master_copy(dtype: torch.dtype):
    """Fix GPTQModel 7.6's AWQ in fp32 while the block runs (only when ``dtype`` is fp32).

    AWQ's scale search (``AWQProcessor._compute_best_scale``) tries 20 ratios; for each it scales, quantizes and
    unscales the layer's weights in place, then restores them from an "FP32 master copy" taken at the start:
    ``fc.weight.detach().to(torch.float32).cpu().contiguous()``. For an fp32 weight on the CPU each of those calls
    returns the tensor itself, so the "copy" is the live weight: the restore copies it onto itself, every ratio is
    scored on weights the earlier ones already quantized, and the layer keeps the damage (perplexity above 1e8 on
    SmolLM2-135M, its group scales far too large). In bf16, or on a GPU, the copy is real. This recompiles that one
    method with ``copy=True`` in the expression and raises if the expression is not found (a GPTQModel that changed
    it needs this looked at again, not silently skipped)."""
    if dtype != torch.float32:
        yield
        return
    import inspect
    import textwrap

    from gptqmodel.looper import awq_processor

    cls = awq_processor.AWQProcessor
    original = cls.__dict__["_compute_best_scale"]
    source = textwrap.dedent(inspect.getsource(original))
    if source.count(AWQ_MASTER_COPY) != 1:
        raise QuantError(f"GPTQModel's AWQProcessor._compute_best_scale no longer contains {AWQ_MASTER_COPY!r}, "
                         "which helpers.quant.awq_fp32_master_copy rewrites so that AWQ in fp32 restores the weights "
                         "between its candidate scales. Check whether this GPTQModel fixed it (run "
                         "tests/test_quant.py -k awq_in_fp32) and update the patch, or quantize AWQ in bf16: "
                         "quant.gptqmodel_quantize(..., dtype=torch.bfloat16).")
    fixed = source.replace(AWQ_MASTER_COPY,
                           "fc.weight.detach().to(device='cpu', dtype=torch.float32, copy=True).contiguous()")
    namespace: dict = {}
    exec(compile(fixed, awq_processor.__file__, "exec"), vars(awq_processor), namespace)   # keeps its decorators
    cls._compute_best_scale = namespace["_compute_best_scale"]
    try:
        yield
    finally:
        cls._compute_best_scale = original


def kernels_in(model: nn.Module) -> list[str]:
    """Names of the quantized-layer classes (GPTQModel kernels) in ``model``, e.g. ``["TorchLinear"]``."""
    return sorted({type(m).__name__ for m in model.modules() if hasattr(m, "qweight")})


@contextmanager
def awq_clip_search(enabled: bool = True, sample_tokens: int = 512):
    """Control AWQ's weight-clipping search, the slow half of AWQ on a CPU.

    After the scale search, AutoAWQ (and GPTQModel, which inherits its code) searches a clipping threshold per
    output channel and group on ``sample_tokens`` calibration tokens. On 2 CPU cores it takes about ten times as
    long as the scale search (``notes/04_awq_budget.md``). ``enabled=False`` skips it;
    a smaller ``sample_tokens`` makes it cheaper. GPTQModel has no public option for either, so this patches
    its ``AWQProcessor`` for the duration of the block (``tests/test_quant.py`` fails if those internals move).
    """
    from gptqmodel.looper.awq_processor import AWQProcessor

    init, clip = AWQProcessor.__init__, AWQProcessor._compute_best_clip

    def patched_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.apply_clip = enabled

    def patched_clip(self, w, input_feat, n_grid=20, max_shrink=0.5, n_sample_token=512):
        return clip(self, w, input_feat, n_grid=n_grid, max_shrink=max_shrink, n_sample_token=sample_tokens)

    AWQProcessor.__init__, AWQProcessor._compute_best_clip = patched_init, patched_clip
    try:
        yield
    finally:
        AWQProcessor.__init__, AWQProcessor._compute_best_clip = init, clip


def awq_clip_problem(model_dir: str | Path) -> str | None:
    """Why AWQ's clipping search cannot run on this model, or ``None`` when it can.

    GPTQModel's clip search processes output channels in batches of 64 or 256 and requires every clipped
    layer's output width to be a multiple of 64 (the query and key projections are never clipped).
    """
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(model_dir))
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    widths = {"v_proj": c.num_key_value_heads * head_dim, "o_proj": c.hidden_size, "gate/up_proj": c.intermediate_size,
              "down_proj": c.hidden_size}
    bad = {k: v for k, v in widths.items() if v % 64}
    if not bad:
        return None
    return (f"AWQ's clipping search needs output widths that are multiples of 64; this model has {bad}. "
            "Quantize with awq_clip=False.")


@contextmanager
def dequantized_weight_cache(model: nn.Module):
    """Within the block, GPTQModel's torch-kernel layers keep their dequantized weights between calls.

    On CPU the ``GPTQ_TORCH`` kernel unpacks the integer weights on *every* forward pass; for 3-bit weights,
    which have no fast unpacking path, that makes evaluation ~4x slower than the model itself. Caching gives
    the same outputs (the cached tensor is what the kernel would compute again) at the cost of a dense copy
    of each weight while the block runs, so quality measurements use it and speed measurements must not.
    GPTQModel switches the cache with the ``GPTQ_TORCH_CACHE_WEIGHTS`` environment variable when a layer is
    built; this sets the same per-layer flag (``tests/test_quant.py`` fails if that attribute moves).
    Other models pass through unchanged, and so do layers on a GPU: there the dense copies would count in the
    variant's peak memory (``measure.measure_variant`` reads it after this block), and the cache is a CPU speed-up.
    """
    layers = [m for m in model.modules() if hasattr(m, "_cache_enabled") and hasattr(m, "clear_weight_cache")
              and _packed_on_cpu(m)]
    before = [m._cache_enabled for m in layers]
    for m in layers:
        m._cache_enabled = True
    try:
        yield model
    finally:
        for m, flag in zip(layers, before):
            m._cache_enabled = flag
            m.clear_weight_cache()


def _packed_on_cpu(layer: nn.Module) -> bool:
    """Whether a quantized layer's packed weights (``qweight``) are in CPU memory."""
    packed = getattr(layer, "qweight", None)
    return isinstance(packed, torch.Tensor) and packed.device.type == "cpu"


def model_folder_problem(model_dir: str | Path) -> str | None:
    """Why ``model_dir`` is not a saved full-precision model folder that GPTQModel can quantize (``None`` when it
    is one): it does not exist (with the nearest names), is a file, or holds no ``config.json`` (a Hub id, an
    adapter folder, a failed save). Reads no weights."""
    from .paths import saved_model_problem

    return saved_model_problem(model_dir, " (a Hub id is not quantized from here: save the model to a folder)",
                               " (an adapter folder, not a saved model)")


def config_widths(model_dir: str | Path) -> list[int]:
    """The input widths of the model's Linear layers, read from its ``config.json`` (hidden size, MLP width,
    attention width) without loading it; empty when the config does not say."""
    from .paths import read_config_json

    config = read_config_json(model_dir, QuantError)
    widths = [config.get("hidden_size"), config.get("intermediate_size")]
    if config.get("head_dim") and config.get("num_attention_heads"):
        widths.append(config["head_dim"] * config["num_attention_heads"])
    return sorted({w for w in widths if isinstance(w, int) and not isinstance(w, bool) and w > 0})


def check_inputs(model_dir: str | Path, method: str, bits: int, group_size: int,
                 out_dir: str | Path | None = None) -> None:
    """Everything :func:`gptqmodel_quantize` (and :func:`helpers.pipeline.quantized`) can check in milliseconds,
    before GPTQModel is imported or a model loaded: the method, bits and group size (against the widths in the
    model's ``config.json``), the model folder, and that ``out_dir`` holds nothing the course did not write.
    Raises :class:`QuantError` or :class:`~helpers.errors.OutputPathError`, each saying what to do."""
    from .paths import as_sentence, check_replaceable

    if method not in METHODS:
        raise QuantError(f"Unknown method {method!r}; use one of {METHODS}.")
    check_settings(bits, group_size)
    if problem := model_folder_problem(model_dir):
        raise QuantError(f"model folder: {as_sentence(problem)} Give the folder "
                         "of a full-precision model (config.json and *.safetensors), e.g. what "
                         "helpers.pipeline.dpo_merged(profile) returns.")
    check_settings(bits, group_size, config_widths(model_dir))
    if out_dir is not None:
        if Path(out_dir).expanduser().resolve() == Path(model_dir).expanduser().resolve():
            raise QuantError(f"The output folder {out_dir} is the model folder itself; the checkpoint would replace "
                             "the model it is made from. Give another output folder.")
        check_replaceable(out_dir, "out_dir")


def quantize_model(model_dir, out_dir, config, calibration, dtype, backend):
    """Quantize the whole model with GPTQModel and save the checkpoint: the three calls notebooks 03 and 04 write
    out in their cells (``tests/test_quant.py`` keeps those cells equal to this function)."""
    from gptqmodel import GPTQModel

    model = GPTQModel.load(str(model_dir), config, dtype=dtype)   # the full-precision model, with its quantize config
    model.quantize(calibration, batch_size=4, backend=backend)    # block by block, on the calibration text
    model.save(str(out_dir))                                       # packed integer weights + quantize_config.json


def code_key(function) -> str:
    """What decides a quantizing function's result, as text: its parameters and statements, without its docstring,
    comments and imports. A cell's copy of :func:`quantize_model` has the same key as the original, so their
    checkpoints are interchangeable; an edited copy has another, so its checkpoint is never mistaken for the course's."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError):   # defined where Python keeps no source: its compiled code decides
        code = function.__code__
        return f"{code.co_code.hex()}|{code.co_names}|{code.co_varnames}|{code.co_consts[1:]}"
    return code_key_of(tree.body[0])


def code_key_of(node) -> str:
    """:func:`code_key` of a parsed ``def`` (an ``ast.FunctionDef``)."""
    import ast

    body = [stmt for i, stmt in enumerate(node.body)
            if not isinstance(stmt, (ast.Import, ast.ImportFrom))
            and not (i == 0 and isinstance(stmt, ast.Expr) and isinstance(getattr(stmt, "value", None), ast.Constant))]
    return ast.dump(node.args) + "".join(ast.dump(stmt) for stmt in body)


def check_quantize_call(config, quantize_with=None) -> str:
    """The method ("gptq" or "awq") of ``config`` after checking that it is one of GPTQModel's configs and that
    ``quantize_with`` (when given) can be called as :func:`quantize_model` is; raises :class:`QuantError` saying what
    to pass instead. Takes milliseconds, before a model is loaded."""
    import inspect

    from gptqmodel.quantization.config import BaseQuantizeConfig

    if not isinstance(config, BaseQuantizeConfig):
        hint = (" transformers' GPTQConfig/AwqConfig describe a checkpoint to load, not a quantization GPTQModel runs;"
                if type(config).__module__.startswith("transformers") else "")
        raise QuantError(f"config is a {type(config).__module__}.{type(config).__name__};{hint} pass GPTQModel's own: "
                         "from gptqmodel.quantization.config import GPTQConfig, AWQConfig; "
                         "config = GPTQConfig(bits=4, group_size=64).")
    method = str(getattr(config.quant_method, "value", config.quant_method)).lower()
    if method not in METHODS:
        raise QuantError(f"config asks for {method!r}; the course quantizes with {' or '.join(METHODS)} "
                         "(GPTQConfig or AWQConfig): use one of those two configs.")
    check_settings(config.bits, config.group_size)
    if quantize_with is not None:
        if not callable(quantize_with):
            raise QuantError(f"quantize_with is a {type(quantize_with).__name__}, not a function: pass the function "
                             "itself (quantize_model, without parentheses).")
        try:
            inspect.signature(quantize_with).bind("model_dir", "out_dir", config, [], None, None)
        except TypeError as exc:
            raise QuantError(f"{getattr(quantize_with, '__name__', 'quantize_with')} cannot be called as "
                             "quantize_with(model_dir, out_dir, config, calibration, dtype, backend) "
                             f"({exc}); give it those six parameters, as quantize_model has them.") from None
        except ValueError:   # no signature to read (a builtin): let the call decide
            pass
    return method


class _LayerDone:
    """GPTQModel's layer callback (``layer_complete``), calling ``on_layer(index)`` once per finished layer."""

    def __init__(self, on_layer):
        self.on_layer = on_layer

    def layer_complete(self, layer_idx: int, submodule_finalized: bool) -> None:
        if submodule_finalized and isinstance(layer_idx, int):
            self.on_layer(layer_idx)


def run_quantization(model_dir: str | Path, out_dir: str | Path, config, calibration: Sequence[str], quantize_with=None,
                     dtype: torch.dtype | None = None, backend=None, awq_clip: bool = True,
                     awq_clip_tokens: int = 512, on_layer=None) -> float:
    """Call ``quantize_with(model_dir, out_dir, config, calibration, dtype, backend)`` (default
    :func:`quantize_model`) in this process, with what GPTQModel needs on this machine around it: fp32 allowed in
    its CPU kernels when the profile computes in fp32 (:func:`torch_kernels_allow_fp32`; for AWQ also
    :func:`awq_fp32_master_copy`), AWQ's clipping search on,
    off or cheaper (:func:`awq_clip_search`), memory freed afterwards. Returns the seconds the call took (load,
    quantize and save). ``dtype`` and ``backend`` default to :func:`default_dtype` and :func:`default_backend`.
    ``on_layer(index)`` is called as GPTQModel finishes each decoder layer (its ``layer_callback``), for a progress
    bar: GPTQModel's own bars draw nothing in a notebook kernel whose output is not a terminal.

    Earlier versions ran this in a child process, because an in-process quantization once slowed what the notebook
    computed afterwards; measured again with GPTQModel 7.6, it did not (``notes/under_the_hood.md``)."""
    import gc
    import time

    configure_gptqmodel()
    method = check_quantize_call(config, quantize_with)
    dtype = dtype or default_dtype(method)
    backend = backend or default_backend(method, config.bits)
    check_backend(backend)
    clip = awq_clip_search(awq_clip, awq_clip_tokens) if method == "awq" else contextlib.nullcontext()
    awq_fix = awq_fp32_master_copy(dtype) if method == "awq" else contextlib.nullcontext()
    start = time.perf_counter()
    # GPTQModel draws its progress with logbar, which in a notebook kernel writes to the cell through IPython's
    # display (past any redirection of stdout); plain text instead, which the pipeline keeps in a log
    plain, saved = "LOGBAR_DISABLE_NOTEBOOK_DETECTION", os.environ.get("LOGBAR_DISABLE_NOTEBOOK_DETECTION")
    os.environ[plain] = "1"
    from gptqmodel.models.base import BaseQModel
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()   # save_pretrained's "Writing model shards" bar would draw in the cell
    BaseQModel.layer_callback = _LayerDone(on_layer) if on_layer else None   # read by GPTQModel's ModuleLooper
    try:
        with torch_kernels_allow_fp32(dtype), awq_fix, clip:
            (quantize_with or quantize_model)(model_dir, out_dir, config, list(calibration), dtype, backend)
    finally:
        del BaseQModel.layer_callback
        if bars:
            hf_logging.enable_progress_bar()
        if saved is None:
            os.environ.pop(plain, None)
        else:
            os.environ[plain] = saved
        gc.collect()   # GPTQModel's model goes with the function's frame; give its memory back now
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return time.perf_counter() - start


def gptqmodel_quantize(
    model_dir: str | Path,
    out_dir: str | Path,
    method: str,
    bits: int,
    group_size: int,
    calibration: Sequence[str],
    backend=None,
    awq_clip: bool = True,
    awq_clip_tokens: int = 512,
    dtype: torch.dtype | None = None,
    quantize_with=None,
    **config_kwargs,
) -> float:
    """Quantize the model at ``model_dir`` with GPTQModel, in this process, and save it to ``out_dir``; returns the
    seconds spent. Checks every setting and folder first (milliseconds, before a model is loaded), builds the config
    (:func:`gptqmodel_config`) and runs :func:`run_quantization`. The notebooks call it through
    :func:`helpers.pipeline.quantized`, which reuses a checkpoint made from the same inputs, writes atomically, keeps
    GPTQModel's output in a log and shows a progress bar. GPTQModel writes a ``logs/`` folder into the working
    directory; it is listed in ``.gitignore``."""
    check_calibration(calibration)
    check_inputs(model_dir, method, bits, group_size, out_dir)   # folders and settings, before anything is loaded
    configure_gptqmodel()
    config = gptqmodel_config(method, bits, group_size, **config_kwargs)  # fail here, with our message, on bad settings
    backend = backend or default_backend(method, bits)
    check_backend(backend)
    if method == "awq" and awq_clip and (problem := awq_clip_problem(model_dir)):
        raise QuantError(problem)
    return run_quantization(model_dir, out_dir, config, calibration, quantize_with, dtype, backend, awq_clip,
                            awq_clip_tokens)


def load_gptqmodel(path: str | Path, method: str = "gptq", backend=None, dtype: torch.dtype | None = None):
    """Load a GPTQ/AWQ checkpoint with GPTQModel itself, with :func:`default_backend`'s kernel in
    :func:`kernel_dtype`; returns the HF model."""
    configure_gptqmodel()
    from gptqmodel import GPTQModel

    from .profiles import get_profile

    bits = int(checkpoint_format(path).get("bits", 4))
    backend = backend or default_backend(method, bits)
    check_backend(backend)
    with contextlib.redirect_stdout(io.StringIO()):  # GPTQModel 7.6 prints "from_quantized: adapter: None"
        model = GPTQModel.load(str(path), backend=backend, device=get_profile().device, dtype=dtype or kernel_dtype())
    return model.model


def dir_size_mb(path: str | Path) -> float:
    """Size on disk of the weight files in a saved model folder (safetensors/bin), in MB."""
    files = [p for p in Path(path).rglob("*") if p.suffix in {".safetensors", ".bin", ".pt"}]
    return sum(p.stat().st_size for p in files) / 1e6


def checkpoint_format(path: str | Path) -> dict:
    """The quantization section of a saved checkpoint's ``config.json`` (method, bits, group size, format)."""
    import json

    config = json.loads((Path(path) / "config.json").read_text())
    q = config.get("quantization_config") or {}
    keys = ("quant_method", "bits", "group_size", "sym", "desc_act", "checkpoint_format", "format", "version", "zero_point")
    return {k: q[k] for k in keys if k in q}

"""bitsandbytes: LLM.int8() and 4-bit NormalFloat, from scratch (to learn) and through transformers (to use).

Miniatures (checked against bitsandbytes in ``tests/test_bnb.py``):

- :func:`absmax_int8_matmul`: int8 matmul with one absmax scale per row of ``X`` and per column of ``W``;
- :func:`llm_int8_matmul`: LLM.int8()'s decomposition, outlier feature dimensions in 16/32-bit, the rest in int8;
- :func:`nf4_code`: the 16 NormalFloat-4 values, derived from quantiles of a standard normal;
- :func:`quantize_4bit_blockwise`: absmax per block of 64 weights, nearest code value.
"""

from __future__ import annotations

import torch

KINDS = ("int8", "nf4", "nf4_dq", "fp4")


class BnbError(ValueError):
    """Unknown bitsandbytes variant or unsupported setting; the message lists what exists."""


def bnb_config(kind: str, compute_dtype: torch.dtype = torch.bfloat16):
    """The ``BitsAndBytesConfig`` for ``kind`` (transformers 5 has no ``load_in_4bit=`` keyword on from_pretrained).

    ``int8``: LLM.int8() with outlier threshold 6.0. ``nf4``/``fp4``: 4-bit weights in blocks of 64 with
    ``compute_dtype`` for the matmuls. ``nf4_dq``: NF4 with double quantization of the block scales.
    """
    from transformers import BitsAndBytesConfig

    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0)
    if kind in ("nf4", "nf4_dq", "fp4"):
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4" if kind == "fp4" else "nf4",
                                  bnb_4bit_use_double_quant=kind == "nf4_dq", bnb_4bit_compute_dtype=compute_dtype)
    raise BnbError(f"Unknown bitsandbytes variant '{kind}'; use one of {KINDS}.")


def absmax_quantize(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 along ``dim``: ``q = round(127 * x / max|x|)``; returns ``(q as int8, scale)``."""
    scale = x.abs().amax(dim=dim, keepdim=True).clamp(min=1e-8) / 127
    return torch.round(x / scale).clamp(-127, 127).to(torch.int8), scale


def absmax_int8_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` with x quantized per row and w per output row (vector-wise absmax), accumulated in int32.

    Computed on ``w``'s device. CUDA has no int32 matmul in torch, so there the integer products are summed in
    float64, which holds every such sum exactly (at most 127² per term, far below 2^53 in total)."""
    qx, sx = absmax_quantize(x.float().to(w.device), dim=1)
    qw, sw = absmax_quantize(w.float(), dim=1)
    acc_dtype = torch.int32 if w.device.type == "cpu" else torch.float64
    acc = qx.to(acc_dtype) @ qw.to(acc_dtype).T
    return acc.float() * sx * sw.T


def outlier_columns(x: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """Input feature dimensions where any value's magnitude reaches ``threshold`` (LLM.int8()'s criterion)."""
    return (x.abs() >= threshold).any(dim=0).nonzero().flatten()


def llm_int8_matmul(x: torch.Tensor, w: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """LLM.int8(): outlier feature dimensions of ``x`` (and the matching columns of ``w``) in full precision,
    everything else through :func:`absmax_int8_matmul`; the two partial products are added (on ``w``'s device)."""
    x = x.to(w.device)
    cols = outlier_columns(x, threshold)
    keep = torch.ones(x.shape[1], dtype=torch.bool, device=w.device)
    keep[cols] = False
    out = absmax_int8_matmul(x[:, keep], w[:, keep])
    if cols.numel():
        out = out + x[:, cols].float() @ w[:, cols].float().T
    return out


def nf4_code(offset: float = 0.9677083) -> torch.Tensor:
    """The 16 NF4 values: quantiles of N(0, 1), normalised to [-1, 1], with an exact zero.

    An even number of levels cannot be symmetric *and* contain 0, so NF4 takes 8 positive quantiles
    and 7 negative ones (of the probabilities 0.5..``offset``), plus 0. ``offset`` < 1 keeps the outermost quantile
    finite; bitsandbytes builds its table with 0.9677083 = 1 - (1/30 + 1/32) / 2 (a test compares the two tables). Notebook 05
    writes this function out; a test keeps the two equal.
    """
    normal = torch.distributions.Normal(0.0, 1.0)
    pos = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (values / values.abs().max()).float()


def quantize_4bit_blockwise(w: torch.Tensor, code: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """Dequantized weights after 4-bit blockwise quantization: scale each block by its absmax, snap to ``code``."""
    if w.numel() % blocksize:
        raise BnbError(f"{w.numel()} weights do not split into blocks of {blocksize}.")
    blocks = w.float().reshape(-1, blocksize)
    code = code.to(w.device)
    absmax = blocks.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    idx = (blocks / absmax).unsqueeze(-1).sub(code).abs().argmin(dim=-1)
    return (code[idx] * absmax).reshape(w.shape).to(w.dtype)


def relative_error(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """``||ref - approx|| / ||ref||`` (Frobenius)."""
    return float((ref.float() - approx.float()).norm() / ref.float().norm())


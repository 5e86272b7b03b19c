"""QLoRA: the NF4 base it trains on, the dequantized copy of that base an adapter can be merged into exactly, and
LoftQ's initialisation (the tested copy of notebook 06's miniature).

The LoRA-against-QLoRA trainings of notebook 06 run in fresh processes: see ``scripts/sft.py``.
"""

from __future__ import annotations

import torch

from .training import check_kind
from .profiles import Profile, takes_profile


@takes_profile
def load_for_training(profile: Profile, kind: str, path: str | None = None):
    """The base model for ``kind``: full precision for ``lora``; NF4 + double quantization, prepared with
    ``prepare_model_for_kbit_training``, for ``qlora``."""
    from peft import prepare_model_for_kbit_training

    from .bnb import bnb_config
    from .models import load_model

    check_kind(kind)
    if kind == "lora":
        return load_model(profile, path)
    model = load_model(profile, path, quantization_config=bnb_config("nf4_dq", profile.compute_dtype_4bit))
    # freezes the base, casts norms to fp32, makes inputs require grads (for checkpointing)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=profile.gradient_checkpointing)


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


@torch.no_grad()
def nf4_round_trip(w: torch.Tensor, double_quant: bool = True) -> torch.Tensor:
    """``w`` quantized to bitsandbytes' NF4 (blocks of 64, optionally double-quantized scales) and back: the weight
    a QLoRA base loaded with the same ``BitsAndBytesConfig`` computes with."""
    import bitsandbytes.functional as F

    q, state = F.quantize_4bit(w.detach().float().contiguous().cpu(), blocksize=64, quant_type="nf4",
                               compress_statistics=double_quant)
    return F.dequantize_4bit(q, state).reshape(w.shape).to(w.device)


@torch.no_grad()
def loftq_init(w: torch.Tensor, rank: int, scaling: float, iters: int = 1, double_quant: bool = True):
    """LoftQ (Li et al., 2023): a quantized weight ``q`` and LoRA factors ``A`` (rank × in), ``B`` (out × rank) with
    ``q + scaling · B @ A ≈ w``. Each iteration quantizes what the adapter does not carry, then fits the adapter to
    what the quantization lost with a truncated SVD. Notebook 06 writes this function out; a test keeps the two
    equal, and checks it against PEFT's own steps (``peft.utils.loftq_utils``, which needs a GPU)."""
    w = w.detach().float()
    lowrank = torch.zeros_like(w)
    for _ in range(iters):
        q = nf4_round_trip(w - lowrank, double_quant)
        U, S, Vh = torch.linalg.svd(w - q, full_matrices=False)
        B, A = U[:, :rank] * S[:rank].sqrt(), S[:rank].sqrt()[:, None] * Vh[:rank]
        lowrank = B @ A
    return q, A, B / scaling

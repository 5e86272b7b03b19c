"""A from-scratch LoRA layer: the whole idea in a dozen lines, checked against PEFT in the tests.

LoRA freezes a pretrained weight ``W`` (out x in) and learns a low-rank update::

    y = x W^T + (alpha / r) * x A^T B^T,   A: r x in (random),  B: out x r (zeros)

Because ``B`` starts at zero the adapted layer is exactly the pretrained one at step 0; only
``r * (in + out)`` numbers train instead of ``in * out``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """Wrap a frozen ``nn.Linear`` with a trainable low-rank update of rank ``r``."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0) -> None:
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got {r}.")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.A = nn.Parameter(torch.empty(r, base.in_features, **like))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, **like))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # the same init PEFT uses for A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha/r) B A``: the single matrix ``merge_and_unload`` produces."""
        return self.base.weight + self.scaling * (self.B @ self.A)

    def trainable_fraction(self) -> float:
        """Trainable LoRA parameters as a fraction of the frozen weight's parameters."""
        return (self.A.numel() + self.B.numel()) / self.base.weight.numel()

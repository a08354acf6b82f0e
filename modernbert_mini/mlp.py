"""The GeGLU feed-forward layer of every ModernBERT block. Chapter 3 teaches it.

A plain transformer FFN is `Wo(gelu(Wi(x)))`. A gated linear unit (GLU) computes two
projections and lets one gate the other; GeGLU uses GELU on the first:

    a, g = Wi(x).chunk(2)          # Wi: hidden -> 2 * intermediate, laid out a | g
    out  = Wo(dropout(gelu(a) * g))

with exact (erf) GELU and no biases. ModernBERT-base has intermediate 1152 (Wi: 768 -> 2304).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear import Linear  # nn.Linear, its weight reordered for CPU inference


class GeGLU(nn.Module):
    """Wo(gelu(a) * g) with a | g = Wi(x): hidden -> 2 * intermediate -> hidden, no biases."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float = 0.0):
        super().__init__()
        self.Wi = Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.drop = nn.Dropout(dropout)
        self.Wo = Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, S, H) -> (B, S, H)
        a, gate = self.Wi(x).chunk(2, dim=-1)  # (B, S, I) each
        return self.Wo(self.drop(F.gelu(a).mul_(gate)))  # gelu(a) * gate, into gelu's output

"""Alternating global / local attention, ModernBERT's self-attention. Chapter 5 teaches it.

Every layer projects the input once into queries, keys and values (one fused `Wqkv`, laid out
q | k | v, each split into heads), rotates queries and keys with RoPE, attends, and projects
back with `Wo`. Layers differ only in what a token may look at:

- a global layer (every 3rd, starting with layer 0) sees the whole sequence, RoPE theta 160k;
- a local layer sees a sliding window of `local_attention` = 128 tokens: keys at distance
  <= 64 on each side, RoPE theta 10k.

Padding is handled with the same boolean mask: a pad token is never a key. (Removing pad tokens
altogether, "unpadding", is chapter 6.)

How the scores are computed is a backend, picked once when the layer is built:
- "eager": softmax(Q K^T / sqrt(d) + mask) V, written out to be read; the reference every other
  path is checked against;
- "sdpa": torch.nn.functional.scaled_dot_product_attention, the same maths in a fused kernel;
- "auto": the fastest one this machine runs (SDPA, on the CPU and on GPUs alike for now).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope, rope_cos_sin


# ----------------------------------------------------------------------------- masks
def sliding_window_mask(seq_len: int, window: int, device=None) -> torch.Tensor:
    """Which keys each query may see in a local layer: |query - key| <= window // 2.

    window is the total width (ModernBERT: 128, so 64 tokens each side, and the token itself).
    Returns a boolean (S, S) tensor, True where attention is allowed.
    """
    positions = torch.arange(seq_len, device=device)
    distance = (positions[:, None] - positions[None, :]).abs()  # (S, S)
    return distance <= window // 2


def make_attention_mask(padding_mask: torch.Tensor | None, seq_len: int, window: int | None,
                   device=None) -> torch.Tensor | None:
    """The boolean mask one layer attends with: True where a query may look at a key.

    padding_mask: (B, S) bool, True at real tokens, or None when nothing is padded.
    window: the local window (total tokens), or None for a global layer.
    Returns (B or 1, 1, S, S) bool, broadcast over heads, or None if everything is allowed.
    """
    allowed = None
    if window is not None:
        allowed = sliding_window_mask(seq_len, window, device)[None, None]  # (1, 1, S, S)
    if padding_mask is not None:
        keys = padding_mask[:, None, None, :]  # (B, 1, 1, S): pad tokens are never keys
        allowed = keys if allowed is None else allowed & keys  # (B, 1, S, S)
    return allowed


# ----------------------------------------------------------------------------- backends
def eager_attention(q, k, v, mask=None, dropout_p=0.0):
    """softmax(Q K^T / sqrt(d) + mask) V, step by step.

    q, k, v: (B, nh, S, hd); mask: bool, broadcastable to (B, nh, S, S), or None.
    """
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, nh, S, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)  # rows sum to 1
    weights = F.dropout(weights, p=dropout_p)
    return weights @ v  # (B, nh, S, hd)


def sdpa_attention(q, k, v, mask=None, dropout_p=0.0):
    """The same as eager_attention, in PyTorch's fused kernel (no S x S matrix on flash paths)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                          scale=q.shape[-1] ** -0.5)


ATTENTION_BACKENDS = {"eager": eager_attention, "sdpa": sdpa_attention}


def get_attention_backend(name: str = "auto"):
    """The attention function called `name` ("auto" picks the fastest available here)."""
    if name == "auto":
        name = "sdpa"
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend {name!r} is unknown: use 'auto' or one of "
                         f"{list(ATTENTION_BACKENDS)}")
    return ATTENTION_BACKENDS[name]


# ----------------------------------------------------------------------------- the layer
class Attention(nn.Module):
    """Multi-head self-attention with a fused Wqkv, RoPE, and an optional sliding window.

    window: None for a global layer, else the local window in tokens (total, even).
    theta: the RoPE base of this layer.
    """

    def __init__(self, hidden_size: int, num_heads: int, window: int | None = None,
                 theta: float = 10_000.0, dropout: float = 0.0, backend: str = "auto"):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.window = window
        self.theta = theta
        self.dropout = dropout
        self.attend = get_attention_backend(backend)
        self.Wqkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.Wo = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                positions: torch.Tensor) -> torch.Tensor:
        """x: (B, S, H); mask: make_attention_mask(...) for this layer's window; positions: (S,)."""
        B, S, H = x.shape
        qkv = self.Wqkv(x).view(B, S, 3, self.num_heads, self.head_dim)  # q | k | v, then heads
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, S, hd) each
        cos, sin = rope_cos_sin(positions, self.head_dim, self.theta)  # (S, hd)
        q, k = apply_rope(q, k, cos, sin)
        y = self.attend(q, k, v, mask, self.dropout if self.training else 0.0)  # (B, nh, S, hd)
        y = y.transpose(1, 2).reshape(B, S, H)  # heads side by side again
        return self.out_drop(self.Wo(y))

    def extra_repr(self) -> str:
        kind = "global" if self.window is None else f"local, window={self.window}"
        return f"{kind}, theta={self.theta:g}, heads={self.num_heads}, backend={self.attend.__name__}"

"""Alternating global / local attention, ModernBERT's self-attention. Chapter 4 teaches it.

Every layer projects the input once into queries, keys and values (one fused `Wqkv`, laid out
q | k | v, each split into heads), rotates queries and keys with RoPE, attends, and projects
back with `Wo`. Layers differ only in what a token may look at:

- a global layer (every 3rd, starting with layer 0) sees the whole sequence, RoPE theta 160k;
- a local layer sees a sliding window of `local_attention` = 128 tokens: keys at distance
  <= 64 on each side, RoPE theta 10k.

The layer takes the batch as a `padding.Batch`: padded (B, S, H) with an optional padding mask,
or unpadded (T, H) with `cu_seqlens` (chapter 6). How the scores are computed is a backend
(`backends.py`): the formula written out ("eager"), PyTorch's fused kernel ("sdpa"), a blocked
sliding window ("local"), ... up to FlashAttention (chapter 7); "auto" picks one at forward time
for the device, dtype and input. The masks and the formula live there too, and are importable
from here, as chapter 4 builds them:
"""

from __future__ import annotations

from torch import nn

from .backends import (attend, check_backend_name, eager_attention, make_attention_mask,  # noqa: F401
                       sdpa_attention, sliding_window_mask)
from .padding import Batch
from .linear import Linear  # nn.Linear, its weight reordered for CPU inference
from .rope import apply_rope_


class Attention(nn.Module):
    """Multi-head self-attention with a fused Wqkv, RoPE, and an optional sliding window.

    window: None for a global layer, else the local window in tokens (total, even).
    theta: the RoPE base of this layer. backend: a name of backends.BACKENDS, or "auto".
    """

    def __init__(self, hidden_size: int, num_heads: int, window: int | None = None,
                 theta: float = 10_000.0, dropout: float = 0.0, backend: str = "auto"):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.window = window
        self.theta = theta
        self.dropout = dropout
        self.backend = check_backend_name(backend)
        self.Wqkv = Linear(hidden_size, 3 * hidden_size, bias=False)
        self.Wo = Linear(hidden_size, hidden_size, bias=False)
        self.out_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x, batch: Batch):
        """x: (B, S, H) for a padded batch, (T, H) for an unpadded one; the output likewise.

        RoPE rotates q and k inside Wqkv's output (a forward hook on Wqkv sees them rotated
        afterwards); the layer's input is never changed.
        """
        qkv = self.Wqkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))  # (..., 3, nh, hd)
        cos, sin = batch.rope(self.theta, self.head_dim)  # (S or T, hd), once per forward
        # rotate q and k in place, the same for every head: (S or T, 1, 1, hd) against (..., 2, nh, hd)
        apply_rope_(qkv[..., :2, :, :], cos[..., None, None, :], sin[..., None, None, :])
        q, k, v = qkv.unbind(-3)  # (B, S, nh, hd) or (T, nh, hd) each
        y = attend(q, k, v, batch, self.window, self.dropout if self.training else 0.0,
                   self.backend)  # same shape as q
        return self.out_drop(self.Wo(y.flatten(-2)))  # heads side by side again

    def extra_repr(self) -> str:
        kind = "global" if self.window is None else f"local, window={self.window}"
        return f"{kind}, theta={self.theta:g}, heads={self.num_heads}, backend={self.backend}"

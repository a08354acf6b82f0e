"""Rotary position embeddings (RoPE), as ModernBERT uses them. Chapter 2 teaches it.

ModernBERT has no position embedding table. Instead, each attention layer rotates every query
and key by an angle that grows with the token's position, so the dot product q . k depends only
on their distance. Pairs of channels rotate at different speeds: channel pair i turns by
`position * theta ** (-2i / head_dim)` radians.

Two details pin it to the reference:
- Non-interleaved ("rotate-half") layout: channel i pairs with channel i + head_dim / 2, not
  with its neighbour i + 1.
- One theta per layer type: 160,000 for global layers (long range, slow rotations) and 10,000
  for local ones (they only look 64 tokens away).

Angles, cos and sin are computed in float32 whatever the model's dtype.
"""

from __future__ import annotations

import torch


def rope_frequencies(head_dim: int, theta: float, device=None) -> torch.Tensor:
    """The rotation speed of each channel pair, in radians per position.  # (head_dim / 2,)"""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float, device=device) / head_dim
    return 1.0 / (theta ** exponents)


def rope_cos_sin(positions: torch.Tensor, head_dim: int,
                 theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every (position, channel) angle.

    positions: integer tensor of any shape, e.g. (S,) -> cos, sin of shape (S, head_dim).
    The two halves of the last dimension repeat the same frequencies (rotate-half layout).
    """
    inv_freq = rope_frequencies(head_dim, theta, positions.device)  # (hd/2,)
    freqs = positions[..., None].float() * inv_freq  # (S, hd/2): angle of each pair at each position
    angles = torch.cat((freqs, freqs), dim=-1)  # (S, hd)
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90-degree turn per pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate queries and keys: x * cos + rotate_half(x) * sin, in float32 at least.

    q, k: (B, nh, S, hd); cos, sin: (S, hd), or anything that broadcasts against q and k.
    Returns q and k rotated, in their own dtype.
    """
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # float16/bfloat16 -> float32
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


def apply_rope_(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_rope` in place, on queries and keys together: what the attention layers run.

    qk: (..., 2, nh, hd), queries and keys as the fused Wqkv lays them out (a view into its
    output); cos, sin broadcast against it. Half by half, x * cos + rotate_half(x) * sin is
    (x1 c - x2 s, x2 c + x1 s), with c, s the halves' shared cos and sin: written that way it
    overwrites qk and needs two half-size temporaries, not rotate_half's copy of everything, and
    rounds exactly as the formula does. float32 and float64 rotate in their own dtype; float16
    and bfloat16 in float32, copied back.
    """
    if qk.dtype not in (torch.float32, torch.float64):
        return qk.copy_(_rotate(qk, cos, sin))
    half = qk.shape[-1] // 2
    x1, x2 = qk[..., :half], qk[..., half:]  # views into qk (slices: autograd lets them change)
    c, s = cos[..., :half], sin[..., :half]  # the second halves repeat the first
    x2_s, x1_s = x2 * s, x1 * s
    x1.mul_(c).sub_(x2_s)  # x1 c - x2 s
    x2.mul_(c).add_(x1_s)  # x2 c + x1 s
    return qk

"""Unpadding: how a batch of sequences is laid out for the layers. Chapter 6 teaches it.

A batch of texts of different lengths is usually padded to one length S, so that it fits in a
(B, S) tensor; the pad tokens are then computed like real ones and thrown away. ModernBERT
*unpads* instead: it drops every pad token before the embeddings, runs all the layers on the
(T, H) stack of the T real tokens, and pads back only at the end. Attention then runs per
sequence, told where each one starts by `cu_seqlens`:

    attention_mask  1 1 1 0 0      unpad     tokens      a a a b b b b c
                    1 1 1 1 0      ----->    cu_seqlens  0     3       7 8
                    1 0 0 0 0                max_seqlen  4

One `Batch` describes a batch as the layers see it, built once per forward:

- padded: x is (B, S, H); `padding_mask` (B, S) says which tokens are real (None: all are);
- unpadded: x is (T, H); `cu_seqlens` (N + 1,) are the offsets of the N sequences, `indices`
  (T,) where each token sits in the flattened (B * S) padded grid, `positions` (T,) its position
  in its row. A packed pretraining batch (documents back to back) arrives unpadded already
  (`input_packed`: its outputs stay (T, ...); a batch the model unpadded itself is padded back).

The batch also holds what every layer would otherwise recompute: RoPE's cos and sin for each
theta, and whatever a backend caches (a dense mask, once per window). The host-side lengths are
read once when an unpadded batch is made (`to_host`: the only device-to-host copy of a forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .packing import sequence_positions
from .rope import rope_cos_sin


def to_host(x: torch.Tensor) -> list[int]:
    """The one device-to-host copy of a forward: row lengths or offsets, as Python ints. (On a
    GPU the host waits here for the GPU; tests/test_gpu_rehearsal.py counts the calls.)"""
    return x.tolist()


@dataclass
class Batch:
    positions: torch.Tensor  # (S,) padded; (T,) unpadded: each token's position in its row
    padding_mask: torch.Tensor | None = None  # (B, S) bool, padded layout; None: nothing is padded
    cu_seqlens: torch.Tensor | None = None  # (N + 1,) int32 offsets of the sequences, unpadded
    max_seqlen: int | None = None  # the longest sequence (unpadded)
    seqlens: tuple[int, ...] | None = None  # the N lengths, on the host (unpadded)
    indices: torch.Tensor | None = None  # (T,) each token's place in the flattened (B * S) grid
    shape: tuple[int, int] | None = None  # (B, S) of that padded grid (unpadded)
    input_packed: bool = False  # the caller packed the input, (T,) with cu_seqlens: outputs stay (T, ...)
    cache: dict = field(default_factory=dict, repr=False)  # per-forward values, see `cached`

    # ------------------------------------------------------------------ making one
    @classmethod
    def padded(cls, seq_len: int, padding_mask: torch.Tensor | None = None,
               device: torch.device | str | None = None) -> Batch:
        """A (B, S) batch as it is: padding_mask (B, S) bool (True at real tokens) or None."""
        if padding_mask is not None:
            padding_mask = padding_mask.bool()
            device = padding_mask.device
        return cls(positions=torch.arange(seq_len, device=device), padding_mask=padding_mask)

    @classmethod
    def unpad(cls, attention_mask: torch.Tensor) -> Batch:
        """The unpadded layout of a (B, S) 0/1 mask: its real tokens, row by row.

        Positions are the tokens' places in their padded row, as the reference gives them (a
        left-padded row starts past 0; RoPE only sees distances, so nothing else changes).
        """
        mask = attention_mask.bool()  # (B, S)
        lengths = mask.sum(dim=1)  # (B,) on the device
        return cls._unpad(mask, lengths, tuple(to_host(lengths)))

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> Batch:
        """Unpadded if the mask has any padding, else padded with no mask at all."""
        mask = attention_mask.bool()  # (B, S)
        lengths = mask.sum(dim=1)  # (B,) on the device
        seqlens = tuple(to_host(lengths))
        if all(n == mask.shape[1] for n in seqlens):
            return cls.padded(mask.shape[1], device=mask.device)
        return cls._unpad(mask, lengths, seqlens)

    @classmethod
    def _unpad(cls, mask: torch.Tensor, lengths: torch.Tensor, seqlens: tuple[int, ...]) -> Batch:
        empty = [row for row, n in enumerate(seqlens) if n == 0]
        if empty:
            raise ValueError(f"attention_mask rows {empty} have no tokens (all 0): every row "
                             "needs at least one real token")
        # the real tokens' flat places, in order: a stable sort puts the True entries first
        order = torch.argsort((~mask).flatten().to(torch.uint8), stable=True)
        indices = order[:sum(seqlens)]  # (T,)
        return cls._unpadded(indices, lengths, seqlens, tuple(mask.shape))

    @classmethod
    def packed(cls, cu_seqlens: torch.Tensor, max_seqlen: int | None = None) -> Batch:
        """N documents packed back to back: cu_seqlens (N + 1,) = 0, len_0, len_0 + len_1, ..."""
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or len(cu_seqlens) < 2:
            raise ValueError("cu_seqlens must be a 1-D tensor of N + 1 offsets (0, len_0, "
                             f"len_0 + len_1, ...), got {_shape(cu_seqlens)}")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"cu_seqlens must hold int32 (or int64) offsets, got {cu_seqlens.dtype}")
        offsets = to_host(cu_seqlens)
        seqlens = tuple(b - a for a, b in zip(offsets, offsets[1:]))
        if offsets[0] != 0 or min(seqlens) < 1:
            raise ValueError(f"cu_seqlens must start at 0 and strictly increase (every document "
                             f"has at least one token), got {offsets[:8]}{' ...' if len(offsets) > 8 else ''}")
        longest = max(seqlens)
        if max_seqlen is not None and max_seqlen != longest:
            raise ValueError(f"max_seqlen={max_seqlen} but the longest document in cu_seqlens has "
                             f"{longest} tokens: pass the longest length, or None")
        rows, within = sequence_positions(cu_seqlens, offsets[-1])  # (T,) each; T given: no sync
        lengths = cu_seqlens.diff()  # (N,) on the device: no copy back from the host
        batch = cls._unpadded(rows * longest + within, lengths, seqlens, (len(seqlens), longest))
        batch.input_packed = True
        return batch

    @classmethod
    def _unpadded(cls, indices, lengths, seqlens, shape) -> Batch:
        cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))  # (N + 1,)
        return cls(positions=indices % shape[1], cu_seqlens=cu_seqlens, max_seqlen=max(seqlens),
                   seqlens=seqlens, indices=indices, shape=shape)

    # ------------------------------------------------------------------ what it says
    @property
    def is_unpadded(self) -> bool:
        return self.cu_seqlens is not None

    @property
    def seq_len(self) -> int:
        """S of the padded layout (the padded grid's S for an unpadded batch)."""
        return self.shape[1] if self.is_unpadded else len(self.positions)

    def document_ids(self) -> torch.Tensor:
        """(T,) which sequence (row, or packed document) each token of an unpadded batch is in."""
        return self.indices // self.shape[1]

    def cached(self, key, build):
        """build(), computed once per batch (so once per forward) under `key`."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def rope(self, theta: float, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE's cos and sin at every token's position, (S or T, head_dim), once per theta."""
        return self.cached(("rope", theta, head_dim),
                           lambda: rope_cos_sin(self.positions, head_dim, theta))

    def as_padded(self) -> Batch:
        """The same tokens in the padded (B, S) layout (for a backend that needs one)."""
        if not self.is_unpadded:
            return self
        B, S = self.shape
        def build():
            mask = torch.zeros(B * S, dtype=torch.bool, device=self.indices.device)
            return Batch.padded(S, mask.index_fill_(0, self.indices, True).view(B, S))
        return self.cached("padded", build)

    def as_unpadded(self, batch_size: int) -> Batch:
        """The same tokens in the unpadded layout (for a backend that needs one)."""
        if self.is_unpadded:
            return self
        def build():
            if self.padding_mask is not None:
                return Batch.unpad(self.padding_mask)
            S = self.seq_len
            seqlens = (S,) * batch_size
            lengths = torch.full((batch_size,), S, device=self.positions.device)
            indices = torch.arange(batch_size * S, device=self.positions.device)
            return Batch._unpadded(indices, lengths, seqlens, (batch_size, S))
        return self.cached(("unpadded", batch_size), build)


def unpad(x: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(B, S, ...) -> (T, ...): the real tokens of an unpadded batch, in order."""
    return _RealRows.apply(x.flatten(0, 1), batch.indices)


class _RealRows(torch.autograd.Function):
    """x.index_select(0, indices) for indices that never repeat (a batch's real tokens). Its
    gradient goes back with index_copy, where index_select's own backward adds with a scatter,
    several times slower on a CPU (a profile of make bench's training step, where attention went
    to the padded grid and back in every layer, as a padded-only backend such as SDPA does)."""

    @staticmethod
    def forward(ctx, x, indices):  # (B * S, ...) -> (T, ...)
        ctx.save_for_backward(indices)
        ctx.rows = x.shape[0]
        return x.index_select(0, indices)

    @staticmethod
    def backward(ctx, grad):  # (T, ...) -> (B * S, ...), zeros at the pad rows
        (indices,) = ctx.saved_tensors
        return grad.new_zeros(ctx.rows, *grad.shape[1:]).index_copy_(0, indices, grad), None


def pad(x: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(T, ...) -> (B, S, ...): back into the padded grid, zeros at the pad positions."""
    B, S = batch.shape
    out = x.new_zeros(B * S, *x.shape[1:])
    return out.index_copy(0, batch.indices, x).view(B, S, *x.shape[1:])


def _shape(x) -> tuple | str:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__

"""Packing: the layout of a packed batch, and the loader that fills one. Chapters 6 and 10.

ModernBERT does not pad. Its pretraining batches hold whole sequences back to back, up to a
token budget, and stay unpadded on their way through the layers:

    input_ids   (T,)     the T tokens of N sequences, back to back
    cu_seqlens  (N + 1,) int32 offsets: sequence i is input_ids[cu_seqlens[i]:cu_seqlens[i + 1]]
    max_seqlen           the longest of the N

The model's unpadded path attends within each sequence only (`padding.Batch.packed`), so packed
sequences never see each other and no compute goes to pad tokens. (ModernBERT packs documents
into rows of 1,024 tokens and unpads them; without rows, the same thing is a flat budget of
rows x 1,024 tokens.) Pretraining (`train.py`) and fine-tuning (`finetune.py`) both train on
packed batches; what is in the tokens (masked or not) is their task's business, not this layout's.

- `PackedBatch`, `collate`: a packed batch, and the sequences at some indices packed into one;
- `sequence_positions`: which sequence each token is in, and where in it;
- `PackedLoader`: packed batches up to a token budget, shuffled per epoch, with a `state_dict`
  (epoch and position) so a run resumes exactly where it stopped;
- `pad_fraction`: how much of a padded batch would be padding, for comparison.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .tokenizer import Sequences


# ----------------------------------------------------------------------------- a packed batch
@dataclass
class PackedBatch:
    """N sequences back to back, unpadded."""

    input_ids: torch.Tensor  # (T,) int64
    cu_seqlens: torch.Tensor  # (N + 1,) int32
    max_seqlen: int

    @property
    def num_sequences(self) -> int:
        return len(self.cu_seqlens) - 1

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    def select(self, start: int, stop: int) -> PackedBatch:
        """Sequences start .. stop-1 as a batch of their own (a data-parallel rank's share)."""
        if not 0 <= start < stop <= self.num_sequences:
            raise ValueError(f"select({start}, {stop}) is outside the batch's "
                             f"{self.num_sequences} sequences")
        offsets = self.cu_seqlens[start:stop + 1]
        lo, hi = int(offsets[0]), int(offsets[-1])
        return PackedBatch(self.input_ids[lo:hi], offsets - offsets[0],
                           int(offsets.diff().max()))


def collate(sequences: Sequences, indices: Sequence[int]) -> PackedBatch:
    """The sequences at `indices`, packed in that order."""
    parts = [sequences[i] for i in indices]
    lengths = torch.tensor([len(p) for p in parts], dtype=torch.int32)
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0, dtype=torch.int32)])
    return PackedBatch(torch.cat(parts).long(), cu_seqlens, int(lengths.max()))


def sequence_positions(cu_seqlens: torch.Tensor,
                       num_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence, position), each (T,): which of the N packed sequences each token is in, and its
    position in it (0 at the sequence's first token), from cu_seqlens (N + 1,). num_tokens: T,
    where the caller knows it (then a GPU's offsets are not copied back to learn it)."""
    lengths = cu_seqlens.diff()  # (N,)
    device = cu_seqlens.device
    sequence = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths,
                                       output_size=num_tokens)  # (T,)
    position = torch.arange(len(sequence), device=device) - cu_seqlens[:-1].long()[sequence]
    return sequence, position


# ----------------------------------------------------------------------------- the loader
class PackedLoader:
    """Packed batches from `sequences`, in a new shuffled order every epoch.

    `next_batch(budget)` takes whole sequences, in order, while they fit in `budget` tokens
    (so a batch holds between budget - max_len + 1 and budget tokens); every sequence is seen
    once per epoch. The order of epoch e is a permutation drawn from `seed + e`, so the
    loader's whole state is (epoch, position).
    """

    def __init__(self, sequences: Sequences, *, seed: int = 0, shuffle: bool = True):
        if len(sequences) == 0:
            raise ValueError("sequences is empty: nothing to load")
        self.sequences = sequences
        self.lengths = sequences.lengths
        self.longest = max(self.lengths)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0  # index into this epoch's order
        self._order = None

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.sequences)))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(len(self.sequences), generator=generator).tolist()

    def next_batch(self, budget: int, *, within_epoch: bool = False) -> PackedBatch:
        """The next sequences, in order, while they fit in `budget` tokens.

        A batch runs on into the next epoch (so every batch is full); with within_epoch=True
        it ends where the epoch ends instead.
        """
        if budget < self.longest:
            raise ValueError(f"budget={budget} tokens is smaller than the longest sequence "
                             f"({self.longest} tokens): it must hold at least one whole sequence")
        indices, total = [], 0
        while True:
            if self._order is None:
                self._order = self.order(self.epoch)
            i = self._order[self.position]
            if total + self.lengths[i] > budget:
                break
            indices.append(i)
            total += self.lengths[i]
            self.position += 1
            if self.position == len(self._order):  # the epoch is done: the next one reshuffles
                self.epoch, self.position, self._order = self.epoch + 1, 0, None
                if within_epoch:
                    break
        return collate(self.sequences, indices)

    def batches(self, budget: int) -> Iterator[PackedBatch]:
        """Batches until the end of the current epoch."""
        epoch = self.epoch
        while self.epoch == epoch:
            yield self.next_batch(budget, within_epoch=True)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "shuffle": self.shuffle, "num_sequences": len(self.sequences)}

    def load_state_dict(self, state: dict) -> None:
        if state["num_sequences"] != len(self.sequences):
            raise ValueError(f"the saved loader ran over {state['num_sequences']} sequences, "
                             f"this one has {len(self.sequences)}: not the same data")
        self.epoch, self.position = state["epoch"], state["position"]
        self.seed, self.shuffle = state["seed"], state["shuffle"]
        self._order = None


def pad_fraction(seqlens: Sequence[int], pad_to: int | None = None) -> float:
    """The share of a padded (N, S) batch that is padding: 1 - sum(lengths) / (N * S).

    S is `pad_to` (a fixed sequence length) or, by default, the longest of the lengths. In a
    packed, unpadded batch this share of the compute is zero.
    """
    if not seqlens:
        raise ValueError("seqlens is empty")
    width = max(seqlens) if pad_to is None else pad_to
    if width < max(seqlens):
        raise ValueError(f"pad_to={pad_to} is shorter than the longest sequence ({max(seqlens)})")
    return 1.0 - sum(seqlens) / (len(seqlens) * width)

"""Masked language modelling: ModernBERT's pretraining task and its batches. Chapter 10 teaches it.

ModernBERT is pretrained on masked language modelling alone (no next-sentence prediction), with
a masking rate of 30% instead of BERT's 15%. Of the chosen tokens, 80% become [MASK], 10% a
random token and 10% stay as they are (so the model cannot learn that only [MASK] needs a
prediction); special tokens are never chosen. The loss is cross entropy at the chosen tokens
only, and with sparse prediction only those tokens go through the MLM head at all.

Each document is tokenized as the tokenizer's template makes it, [CLS] text [SEP]; a document
longer than the model's sequence length is cut into nearly equal chunks, each its own
[CLS] ... [SEP] sequence (nothing is dropped). The sequences are then packed, not padded
(`packing.py`).

- `mask_tokens`: the 30% / 80-10-10 masking of any tensor of ids;
- `Sequences`, `tokenize_documents`: the tokenized corpus, one flat tensor and its offsets;
- `special_ids`, `masking_args`, `step_generator`: what masking needs in a training run;
- `masked_loss_sum`, `validation_slice`, `evaluate`, `unigram_baseline`: the loss of a packed
  batch, and how a run is scored on a fixed masked slice of the validation split;
- `long_validation_slice`, `loss_by_position`: the loss by position in long inputs, the measure
  of context extension.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from tokenizers import Tokenizer

from . import runtime
from .config import ModernBertConfig
from .model import IGNORE_INDEX
from .packing import PackedBatch, PackedLoader, sequence_positions
from .packing import pad_fraction  # noqa: F401  (chapter 6 reads it, and PackedLoader, from here)
from .tokenizer import Sequences, emittable_ids, to_sequences

MASK_RATE = 0.3  # ModernBERT's; BERT used 0.15
EVAL_SEED = 20_241_219  # the validation slice is masked the same way in every run
MASK_SPLIT = (0.8, 0.1, 0.1)  # of the chosen tokens: [MASK], a random token, unchanged


# ----------------------------------------------------------------------------- masking
def mask_tokens(input_ids: torch.Tensor, *, mask_id: int, vocab_size: int,
                special_ids: Iterable[int], rate: float = MASK_RATE,
                generator: torch.Generator | None = None,
                replacement_ids: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose `rate` of the non-special tokens as targets; 80% -> [MASK], 10% random, 10% kept.

    input_ids: integer tensor of any shape, e.g. (T,) packed or (B, S) padded.
    Returns (inputs, labels), both shaped like input_ids: inputs with the replacements, labels
    the original id at chosen tokens and IGNORE_INDEX (-100) everywhere else. Each token is
    chosen independently with probability `rate`; random replacements are drawn from
    `replacement_ids` (in a run: the ids the tokenizer can emit, `replacement_ids(tokenizer)`),
    by default every non-special id below vocab_size. The same generator state gives the same result.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype.is_floating_point \
            or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be an integer tensor, got "
                         f"{getattr(input_ids, 'dtype', type(input_ids).__name__)}")
    if not (isinstance(rate, (int, float)) and 0 < rate <= 1):
        raise ValueError(f"rate={rate!r} is invalid: must be in (0, 1]")
    if not (isinstance(vocab_size, int) and vocab_size > 0):
        raise ValueError(f"vocab_size={vocab_size!r} is invalid: must be a positive integer")
    if not (isinstance(mask_id, int) and 0 <= mask_id < vocab_size):
        raise ValueError(f"mask_id={mask_id!r} is invalid: must be an id in [0, {vocab_size})")
    special = torch.tensor(sorted(set(special_ids)), dtype=torch.long)
    if special.numel() and (special.min() < 0 or special.max() >= vocab_size):
        raise ValueError(f"special_ids={special.tolist()} must be ids in [0, {vocab_size})")
    device = input_ids.device
    is_special = torch.isin(input_ids, special.to(device, input_ids.dtype))
    if replacement_ids is None:
        ordinary = torch.ones(vocab_size, dtype=torch.bool)
        ordinary[special] = False
        ordinary_ids = ordinary.nonzero().squeeze(1).to(device)  # the ids a random token may take
    else:
        ordinary_ids = torch.as_tensor(replacement_ids, dtype=torch.long)
        if ordinary_ids.ndim != 1 or not len(ordinary_ids) or ordinary_ids.min() < 0 \
                or ordinary_ids.max() >= vocab_size or torch.isin(ordinary_ids, special).any():
            raise ValueError(f"replacement_ids must be a non-empty list of non-special ids in "
                             f"[0, {vocab_size}), got {len(ordinary_ids)} ids")
        ordinary_ids = ordinary_ids.to(device)

    def uniform():  # drawn on the CPU, so a CPU generator gives the same numbers on every device
        return torch.rand(input_ids.shape, generator=generator).to(device)

    chosen = (uniform() < rate) & ~is_special
    how = uniform()  # below 0.8: [MASK]; 0.8 to 0.9: random; above: unchanged
    random_ids = ordinary_ids[torch.randint(len(ordinary_ids), input_ids.shape,
                                            generator=generator).to(device)]
    to_mask = chosen & (how < MASK_SPLIT[0])
    to_random = chosen & (how >= MASK_SPLIT[0]) & (how < MASK_SPLIT[0] + MASK_SPLIT[1])
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(to_random, random_ids.to(input_ids.dtype), inputs)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return inputs, labels


# ----------------------------------------------------------------------------- the corpus
def tokenize_documents(texts: Sequence[str], tokenizer: Tokenizer, max_len: int) -> Sequences:
    """Tokenize documents into [CLS] ... [SEP] sequences of at most `max_len` tokens.

    A document whose tokens do not fit is cut into nearly equal chunks, each wrapped in
    [CLS] ... [SEP] of its own; every token of every (non-empty) document ends up in exactly one
    sequence (`tokenizer.to_sequences` with overflow="split").
    """
    return to_sequences(tokenizer, texts, max_len, overflow="split")


# ----------------------------------------------------------------------------- in a training run
def special_ids(tokenizer: Tokenizer) -> list[int]:
    """Every added special token ([UNK], [CLS], [SEP], [PAD], [MASK]): never masked."""
    return sorted(tokenizer.token_to_id(t.content)
                  for t in tokenizer.get_added_tokens_decoder().values() if t.special)


def replacement_ids(tokenizer: Tokenizer, vocab_size: int) -> list[int]:
    """The ids a random replacement may take: those the tokenizer can emit from text
    (`tokenizer.emittable_ids`: no special token, no [unusedN] filler), below vocab_size."""
    return [i for i in emittable_ids(tokenizer) if i < vocab_size]


def masking_args(tokenizer: Tokenizer, config: ModernBertConfig) -> dict:
    """mask_tokens' keyword arguments for this tokenizer and model."""
    return dict(mask_id=config.mask_token_id, vocab_size=config.vocab_size,
                special_ids=special_ids(tokenizer),
                replacement_ids=replacement_ids(tokenizer, config.vocab_size))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator that masks step `step`: a function of (seed, step) only, so resumable."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def masked_loss_sum(model, inputs: torch.Tensor, labels: torch.Tensor, batch: PackedBatch,
                    n_labels: int, device: torch.device):
    """(sum of cross entropy over the masked tokens, logits) for one packed batch."""
    out = model(inputs.to(device), labels=labels.to(device),
                cu_seqlens=batch.cu_seqlens.to(device), max_seqlen=batch.max_seqlen)
    if n_labels == 0:  # nothing masked here: a zero that still reaches every parameter
        return out.logits.sum() * 0.0, out.logits
    return out.loss * n_labels, out.logits  # the model's loss is the mean over its masked tokens


def validation_slice(texts: Sequence[str], tokenizer: Tokenizer, config: ModernBertConfig, *,
                     max_len: int, batch_tokens: int, eval_tokens: int,
                     rate: float = MASK_RATE) -> list:
    """The first `eval_tokens` tokens of `texts`, packed and masked once:
    [(PackedBatch, inputs, labels)], the same for every run with these settings."""
    args = masking_args(tokenizer, config)
    loader = PackedLoader(tokenize_documents(texts, tokenizer, max_len), shuffle=False)
    out, total = [], 0
    for i, batch in enumerate(loader.batches(batch_tokens)):
        if total >= eval_tokens:
            break
        inputs, labels = mask_tokens(batch.input_ids, **args, rate=rate,
                                     generator=torch.Generator().manual_seed(EVAL_SEED + i))
        out.append((batch, inputs, labels))
        total += batch.num_tokens
    return out


@torch.no_grad()
def evaluate(model, eval_batches, device: torch.device) -> dict:
    """Loss and accuracy of a ModernBertForMaskedLM over the chosen tokens of a validation slice.

    `accuracy` counts every chosen token, including the 10% left unchanged, which a model can
    simply copy; `mask_accuracy` counts only the tokens replaced by [MASK].
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, count, mask_correct, mask_count = 0.0, 0, 0, 0, 0
    for batch, inputs, labels in eval_batches:
        chosen = labels != IGNORE_INDEX
        n = int(chosen.sum())
        with runtime.autocast(device):
            total, logits = masked_loss_sum(model, inputs, labels, batch, n, device)
        if not model.config.sparse_prediction:
            logits = logits[chosen.to(device)]
        hits = (logits.argmax(-1).cpu() == labels[chosen])  # (n,)
        as_mask = inputs[chosen] == model.config.mask_token_id  # (n,)
        loss_sum += float(total)
        correct += int(hits.sum())
        count += n
        mask_correct += int(hits[as_mask].sum())
        mask_count += int(as_mask.sum())
    model.train(was_training)
    return {"loss": loss_sum / count, "accuracy": correct / count,
            "mask_accuracy": mask_correct / mask_count, "masked_tokens": count}


def unigram_baseline(train_tokens: torch.Tensor, eval_batches, vocab_size: int,
                     specials: list[int]) -> dict:
    """Always predict the most frequent training token; and the unigram distribution's loss."""
    counts = torch.bincount(train_tokens.long(), minlength=vocab_size).double()
    counts[specials] = 0
    top = int(counts.argmax())
    log_p = ((counts + 1) / (counts + 1).sum()).log()  # add-one smoothing
    targets = torch.cat([labels[labels != IGNORE_INDEX] for _, _, labels in eval_batches])
    return {"token_id": top, "accuracy": float((targets == top).double().mean()),
            "loss": float(-log_p[targets].mean())}  # the same on [MASK]ed tokens, in expectation


# ----------------------------------------------------------------------------- long inputs
POSITION_BUCKETS = (0, 64, 128, 256, 512, 1024, 2048, 4096, 8192)  # edges of the position bins


def long_validation_slice(texts: Sequence[str], tokenizer: Tokenizer, config: ModernBertConfig, *,
                          length: int, windows: int, rate: float = MASK_RATE) -> list:
    """`windows` windows of exactly `length` tokens ([CLS], the first length - 2 tokens of one
    document, [SEP]), one per document long enough to fill one (so each window is another
    file), packed one window a batch and masked once: [(PackedBatch, inputs, labels)], as
    `validation_slice`."""
    cls_id, sep_id = config.cls_token_id, config.sep_token_id
    bare = to_sequences(tokenizer, texts, special_tokens=False)  # whole documents, no cut
    args = masking_args(tokenizer, config)
    out, room = [], length - 2
    for doc in range(len(bare)):
        ids = bare[doc]
        if len(out) == windows:
            return out
        if len(ids) < room:
            continue
        window = torch.cat([torch.tensor([cls_id]), ids[:room].long(), torch.tensor([sep_id])])
        batch = PackedBatch(window, torch.tensor([0, length], dtype=torch.int32), length)
        inputs, labels = mask_tokens(window, **args, rate=rate, generator=torch.Generator()
                                     .manual_seed(EVAL_SEED + len(out)))
        out.append((batch, inputs, labels))
    if not out:
        raise ValueError(f"no document has the {room} tokens that a window of {length} needs")
    return out


@torch.no_grad()
def loss_by_position(model, eval_batches, device: torch.device,
                     edges: Sequence[int] = POSITION_BUCKETS) -> list[dict]:
    """The MLM loss over the masked tokens at positions [edges[i], edges[i+1]) of their sequence:
    [{"start", "stop", "loss", "tokens"}] for every bin that holds a masked token."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(edges) - 1, dtype=torch.float64)
    counts = torch.zeros(len(edges) - 1, dtype=torch.long)
    bounds = torch.tensor(edges[1:-1])
    for batch, inputs, labels in eval_batches:
        chosen = labels != IGNORE_INDEX
        position = sequence_positions(batch.cu_seqlens)[1][chosen]  # (n,) within each sequence
        with runtime.autocast(device):
            _, logits = masked_loss_sum(model, inputs, labels, batch, int(chosen.sum()), device)
        if not model.config.sparse_prediction:
            logits = logits[chosen.to(device)]
        losses = torch.nn.functional.cross_entropy(logits.float(), labels[chosen].to(device),
                                                   reduction="none").double().cpu()
        bins = torch.bucketize(position, bounds, right=True)
        sums.index_add_(0, bins, losses)
        counts.index_add_(0, bins, torch.ones_like(bins))
    model.train(was_training)
    return [{"start": edges[i], "stop": edges[i + 1], "loss": float(sums[i] / counts[i]),
             "tokens": int(counts[i])} for i in range(len(counts)) if counts[i]]

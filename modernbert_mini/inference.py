"""Using a ModernBERT: text in, tensors, masked-token guesses and sentence embeddings out.

What a reader reaches for once the model is built (chapter 8) or fine-tuned (chapter 11):

- `encode(tokenizer, texts)`: a `tokenizers.Tokenizer` (chapter 1's, or the published one) or a
  transformers fast tokenizer to the model's inputs, `input_ids` and `attention_mask` (B, S). A
  text longer than `max_length` is an error unless `truncation=True`: silently cut text gives
  answers about text nobody wrote.
- `fill_mask(model, tokenizer, text)`: an encoder's `generate`. The MLM head's distribution at
  each [MASK] of the text, its `top_k` tokens with their probabilities.
- `embed(model, tokenizer, texts)`: one vector per text, the mean of the encoder's last hidden
  states over the text's real tokens (no padding), or its [CLS] state (`pooling="cls"`), for
  retrieval and clustering; `similarity(a, b)`: their cosine similarities, as
  sentence-transformers' `model.similarity`.
- `num_parameters(model)`: how big a model is, with or without the token embedding (the
  models' own `num_parameters`, as in transformers).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer
from torch import nn

from .hub import POOLINGS
from .model import ModernBertForMaskedLM, ModernBertModel, PreTrainedModel
from .tokenizer import as_tokenizer, to_sequences

MASK_TOKEN = "[MASK]"
PAD_TOKEN = "[PAD]"


# ----------------------------------------------------------------------------- text -> tensors
ENCODE_ADVICE = "pass truncation=True to cut them, or a larger max_length"


def _what(value: object) -> str:
    """A value's type for an error message; bytes also say how to make text of them."""
    kind = type(value).__name__
    return f"{kind}; decode it first (.decode('utf-8'))" if isinstance(value, (bytes, bytearray)) else kind


def _check_texts(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)):
        raise ValueError(f"texts must be a string or a list of strings, but texts is {_what(texts)}")
    if not isinstance(texts, Sequence) or not texts:
        raise ValueError(f"texts must be a string or a non-empty list of strings, got {texts!r:.80}")
    wrong = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if wrong:
        raise ValueError(f"texts must be strings, but texts[{wrong[0]}] is {_what(texts[wrong[0]])}")
    return list(texts)


def _pad_id(tokenizer: Tokenizer, pad_id: int | None) -> int | None:
    if pad_id is not None:
        return pad_id
    if tokenizer.padding is not None:
        return tokenizer.padding["pad_id"]
    return tokenizer.token_to_id(PAD_TOKEN)


def encode(tokenizer: Tokenizer, texts: str | Sequence[str], max_length: int | None = None, *,
           truncation: bool = False, pad_id: int | None = None,
           advice: str = ENCODE_ADVICE) -> dict[str, torch.Tensor]:
    """Tokenize texts into {"input_ids": (B, S) int64, "attention_mask": (B, S) int64}.

    `tokenizer`: a `tokenizers.Tokenizer` or a transformers fast tokenizer. Each text gets the
    tokenizer's special tokens ([CLS] text [SEP]); rows are padded on the right to the longest,
    with `pad_id` (default: the tokenizer's padding id, else [PAD]). A text longer than
    `max_length` tokens (special tokens included) is a ValueError that gives `advice` (the
    helpers name their own option), unless truncation=True: then its text is cut so that it
    fits, and the special tokens are kept.
    """
    tokenizer = as_tokenizer(tokenizer)
    texts = _check_texts(texts)
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                   or max_length < 1):
        raise ValueError(f"max_length={max_length!r} is invalid: must be None or a positive integer")
    sequences = to_sequences(tokenizer, texts, max_length, advice=advice,
                             overflow="truncate" if truncation else "error")  # [CLS] text [SEP]
    lengths = sequences.lengths
    longest = max(lengths)
    pad = _pad_id(tokenizer, pad_id)
    if pad is None and min(lengths) < longest:
        raise ValueError(f"these texts need padding, but the tokenizer has no padding id and no "
                         f"{PAD_TOKEN} token: pass pad_id=")
    input_ids = torch.full((len(lengths), longest), pad if pad is not None else 0, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), longest, dtype=torch.long)  # (B, S)
    for row, n in enumerate(lengths):
        input_ids[row, :n] = sequences[row]
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# ----------------------------------------------------------------------------- running a model
@contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (no dropout) and no autograd for a moment; the model's mode is set back after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class MaskPrediction:
    token: str  # the token as text, e.g. " Paris" (byte-level BPE keeps the space in front)
    token_id: int
    probability: float


def fill_mask(model: ModernBertForMaskedLM, tokenizer: Tokenizer, text: str,
              top_k: int = 5) -> list[list[MaskPrediction]]:
    """The `top_k` most likely tokens at each [MASK] of `text`, most likely first.

    Returns one list per [MASK], in the order they appear in the text. The probabilities are
    the softmax of the MLM logits at that position (in float32), over the whole vocabulary.
    A text without [MASK], or longer than max_position_embeddings tokens, is a ValueError.
    `tokenizer`: a `tokenizers.Tokenizer` or a transformers fast tokenizer.
    """
    tokenizer = as_tokenizer(tokenizer)
    if not isinstance(model, ModernBertForMaskedLM):
        raise ValueError(f"fill_mask needs a ModernBertForMaskedLM (it reads the MLM head), "
                         f"got {type(model).__name__}")
    if not isinstance(text, str):
        raise ValueError(f"text must be one string, but text is {_what(text)}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= model.config.vocab_size:
        raise ValueError(f"top_k={top_k!r} is invalid: must be an integer in "
                         f"[1, vocab_size={model.config.vocab_size}]")
    mask_id = tokenizer.token_to_id(MASK_TOKEN)
    if mask_id is None:
        raise ValueError(f"the tokenizer has no {MASK_TOKEN} token")
    if model.config.mask_token_id is not None and model.config.mask_token_id != mask_id:
        raise ValueError(f"the tokenizer's {MASK_TOKEN} is id {mask_id}, but the model's config says "
                         f"mask_token_id={model.config.mask_token_id}: they do not belong together")
    max_length = model.config.max_position_embeddings
    inputs = encode(tokenizer, text, max_length, advice=(
        f"fill_mask reads the whole text: shorten it to at most {max_length} tokens "
        "(the model's max_position_embeddings), keeping the [MASK]"))
    positions = (inputs["input_ids"][0] == mask_id).nonzero().flatten().tolist()
    if not positions:
        raise ValueError(f"text has no {MASK_TOKEN} token to fill: {text!r:.80}")
    with _evaluating(model):
        device = model.device
        logits = model(inputs["input_ids"].to(device), inputs["attention_mask"].to(device)).logits
        probabilities = logits[0, positions].float().softmax(dim=-1)  # (M, V)
        top = probabilities.topk(top_k, dim=-1)  # sorted, largest first
    return [[MaskPrediction(tokenizer.decode([i], skip_special_tokens=False), i, p)
             for i, p in zip(ids.tolist(), probs.tolist())]
            for ids, probs in zip(top.indices, top.values)]


def embed(model: nn.Module, tokenizer: Tokenizer, texts: str | Sequence[str], batch_size: int = 32,
          *, pooling: str = "mean", normalize: bool = False, truncation: bool = False) -> torch.Tensor:
    """One vector per text: (N, H) float32, pooled from the last hidden states.

    `model` is a ModernBertModel or any model with one inside (`.model`, e.g. the MLM);
    `tokenizer` a `tokenizers.Tokenizer` or a transformers fast tokenizer. pooling="mean": the
    mean over the text's real tokens; "cls": the state at its first token, [CLS]. Texts are run
    in batches of `batch_size`, shortest first so that little is padded; the rows come back in
    the order of `texts`. normalize=True scales each vector to length 1 (cosine similarity is
    then a dot product). Texts longer than max_position_embeddings are an error unless
    truncation=True.
    """
    tokenizer = as_tokenizer(tokenizer)
    encoder = model if isinstance(model, ModernBertModel) else getattr(model, "model", None)
    if not isinstance(encoder, ModernBertModel):
        raise ValueError(f"embed needs a ModernBertModel or a model with one as .model, "
                         f"got {type(model).__name__}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid: must be a positive integer")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is invalid: choose one of {POOLINGS}")
    texts = _check_texts(texts)
    max_length = encoder.config.max_position_embeddings
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # a cheap proxy for tokens
    vectors = [None] * len(texts)
    with _evaluating(encoder):
        device = encoder.device
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            inputs = encode(tokenizer, [texts[i] for i in rows], max_length, truncation=truncation,
                            advice=f"pass embed(..., truncation=True) to cut them to {max_length} "
                                   "tokens (the model's max_position_embeddings)")
            encoded = encoder.encode(inputs["input_ids"].to(device), inputs["attention_mask"].to(device))
            pooled = encoded.pool(pooling).float()  # (b, H), real tokens only
            for i, vector in zip(rows, pooled):
                vectors[i] = vector
    out = torch.stack(vectors)  # (N, H)
    return nn.functional.normalize(out, dim=-1) if normalize else out


def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The cosine similarity of every row of `a` (N, H) with every row of `b` (M, H): (N, M),
    as sentence-transformers' `model.similarity` (cosine) gives it. One vector (H,) is one row."""
    a, b = torch.atleast_2d(a).float(), torch.atleast_2d(b).float()
    if a.dim() != 2 or b.dim() != 2 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"similarity needs (N, H) and (M, H) embeddings with the same H, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return nn.functional.normalize(a, dim=-1) @ nn.functional.normalize(b, dim=-1).T  # (N, M)


# ----------------------------------------------------------------------------- size
def num_parameters(model: PreTrainedModel, exclude_embeddings: bool = False, *,
                   non_embedding: bool | None = None) -> int:
    """How big a model is, without the token embedding if exclude_embeddings=True: the method
    every model class has, as in transformers (`PreTrainedModel.num_parameters`).
    `non_embedding` is the old name of `exclude_embeddings` (deprecated)."""
    if non_embedding is not None:
        warnings.warn("num_parameters(non_embedding=) is deprecated: it is exclude_embeddings=, "
                      "as transformers names it", FutureWarning, stacklevel=2)
        exclude_embeddings = non_embedding
    return model.num_parameters(exclude_embeddings=exclude_embeddings)

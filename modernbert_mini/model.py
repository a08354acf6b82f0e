"""The ModernBERT model: the block, the encoder and its heads.

The block (`EncoderLayer`) is chapter 5; putting everything together into ModernBERT-base and
-large, with the same parameter names, shapes, initialisation and numbers as the reference
implementation in `transformers`, is chapter 8.

    input_ids (B, S)
      -> unpad: keep the T real tokens, (T,)                         (chapter 6; skipped if no padding)
      -> Embeddings: token embedding -> LayerNorm -> dropout       (no position embedding)
      -> num_hidden_layers x EncoderLayer (pre-norm; layer 0 has no attn_norm)
           x = x + attn(attn_norm(x))       global, or local with a sliding window
           x = x + mlp(mlp_norm(x))         GeGLU
      -> final LayerNorm                                             (T, H)
      -> pad back                                                    (B, S, H)
    MLM head:       dense -> GELU -> LayerNorm -> decoder (tied to the token embedding, + bias)
    classification: pool (cls or mean) -> the same dense/GELU/LayerNorm -> dropout -> classifier

No LayerNorm or Linear has a bias except the decoder and the classifiers. A packed batch
(documents back to back, `cu_seqlens`) runs unpadded as it is and comes back as (T, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention
from .config import ModernBertConfig
from .hub import HubMixin
from .linear import Linear  # nn.Linear, its weight reordered for CPU inference
from .mlp import GeGLU
from .packing import sequence_positions
from .padding import Batch, _shape, pad, unpad

IGNORE_INDEX = -100  # the label of a position that has no target


# ----------------------------------------------------------------------------- outputs
class _Output:
    """Fields by name (out.logits) or, as transformers' outputs, by index over the set ones."""

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, index):
        return self.to_tuple()[index]

    def __iter__(self):
        return iter(self.to_tuple())


@dataclass
class ModernBertOutput(_Output):
    last_hidden_state: torch.Tensor  # (B, S, H) after the final norm; (T, H) for a packed batch
    # with output_hidden_states=True, as transformers returns them: the embeddings' output, the
    # output of every layer but the last, and last_hidden_state (num_hidden_layers + 1 tensors)
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class Encoded:
    """What the encoder gives a caller, in the input's own shape: (B, S, H) for (B, S) ids,
    (T, H) for packed ids with cu_seqlens; and what pooling needs to find each sequence."""

    last_hidden_state: torch.Tensor  # (B, S, H) or (T, H), after the final norm
    hidden_states: tuple[torch.Tensor, ...] | None  # as ModernBertOutput's, when asked for
    padding_mask: torch.Tensor | None  # (B, S) bool, True at real tokens; None: nothing padded
    cu_seqlens: torch.Tensor | None  # (N + 1,) offsets of a packed input's sequences

    def pool(self, how: str) -> torch.Tensor:  # -> (N, H)
        return pool(self.last_hidden_state, how, self.padding_mask, self.cu_seqlens)


@dataclass
class MaskedLMOutput(_Output):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, S, V) or (T, V); (N, V) for the N labelled positions with sparse_prediction
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutput(_Output):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, num_labels)
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class TokenClassifierOutput(_Output):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, S, num_labels), or (T, num_labels) packed
    hidden_states: tuple[torch.Tensor, ...] | None = None


# ----------------------------------------------------------------------------- inputs
def check(condition: torch.Tensor, message: str, detail=None) -> None:
    """A ValueError where `condition` is False, with no device-to-host sync.

    On the CPU (where reading a value costs nothing) it is checked at once, and `detail()` may
    name the offending value; on a GPU, and while torch.compile traces, it is an asynchronous
    device assert with `message`, which fails at the next sync.
    """
    if condition.device.type == "cpu" and not torch.compiler.is_compiling():
        if not bool(condition):
            raise ValueError(detail() if detail else message)
    else:
        torch._assert_async(condition, message)


def validate_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    config: ModernBertConfig, packed: bool = False) -> None:
    """Raise a ValueError that says what is wrong with a batch, before it reaches the model."""
    rank, what = (1, "(total_tokens,) with cu_seqlens") if packed else (2, "(batch, seq_len)")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != rank:
        raise ValueError(f"input_ids must be a {rank}-D tensor {what}, got {_shape(input_ids)}")
    if input_ids.dtype not in (torch.long, torch.int):
        raise ValueError("input_ids must hold integer token ids (int64 or int32), "
                         f"got dtype {input_ids.dtype}")
    if 0 in input_ids.shape:
        raise ValueError(f"empty batch: input_ids has shape {tuple(input_ids.shape)}; "
                         "need at least one row and one token")
    S = input_ids.shape[-1]
    if not packed and S > config.max_position_embeddings:
        raise ValueError(f"sequence length {S} is longer than max_position_embeddings="
                         f"{config.max_position_embeddings}")

    def outside():
        low, high = int(input_ids.min()), int(input_ids.max())
        return (f"token id {low if low < 0 else high} is outside the vocab: ids must be "
                f"in [0, {config.vocab_size}) (vocab_size={config.vocab_size})")

    check(((input_ids >= 0) & (input_ids < config.vocab_size)).all(),
          f"token ids must be in [0, {config.vocab_size}) (vocab_size={config.vocab_size})", outside)
    if attention_mask is None:
        return
    if packed:
        raise ValueError("a packed batch (cu_seqlens) has no padding: pass attention_mask=None")
    if _shape(attention_mask) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask has shape {_shape(attention_mask)}, but input_ids has "
                         f"{tuple(input_ids.shape)}: they must be equal")
    if attention_mask.dtype.is_floating_point or attention_mask.dtype.is_complex:
        raise ValueError(f"attention_mask must be bool or integer 0/1, got dtype {attention_mask.dtype}")
    check(((attention_mask == 0) | (attention_mask == 1)).all(),
          "attention_mask must hold only 0 (padding) and 1 (token)")


def batch_for(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              cu_seqlens: torch.Tensor | None, max_seqlen: int | None,
              config: ModernBertConfig) -> Batch:
    """The Batch this input runs as: padded when nothing is padded, else unpadded (chapter 6);
    packed as the caller gave it when it comes with cu_seqlens.

    While torch.compile traces, a padded batch keeps its mask (unpadding has data-dependent
    shapes); everywhere else, padding is never computed.
    """
    if cu_seqlens is not None:
        batch = Batch.packed(cu_seqlens, max_seqlen)  # input_packed: its outputs stay (T, ...)
        if batch.indices.shape[0] != input_ids.shape[0]:
            raise ValueError(f"cu_seqlens covers {batch.indices.shape[0]} tokens, but input_ids "
                             f"has {input_ids.shape[0]}: cu_seqlens[-1] must equal len(input_ids)")
        if batch.max_seqlen > config.max_position_embeddings:
            raise ValueError(f"a packed document has {batch.max_seqlen} tokens, more than "
                             f"max_position_embeddings={config.max_position_embeddings}")
        return batch
    S = input_ids.shape[1]
    if attention_mask is None:
        return Batch.padded(S, device=input_ids.device)
    if torch.compiler.is_compiling():
        return Batch.padded(S, attention_mask.bool())
    return Batch.from_mask(attention_mask)  # one copy of the row lengths to the host


# ----------------------------------------------------------------------------- pieces
class Embeddings(nn.Module):
    """Token embedding -> LayerNorm -> dropout. No position embedding: RoPE does positions."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                           padding_idx=config.pad_token_id)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B, S) -> (B, S, H), (T,) -> (T, H)
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

    def forward(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:  # (B, S, H) or (T, H)
        x = x + self.attn(self.attn_norm(x), batch)
        return x + self.mlp(self.mlp_norm(x))


class PredictionHead(nn.Module):
    """dense -> GELU -> LayerNorm, shared by the MLM and classification heads."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size, bias=False)
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
    decoder shares the embedding's weight, so it keeps the embedding's init; its bias is 0; a
    classifier is cut normal with std hidden ** -0.5, bias 0 (`init_output`).
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
        elif isinstance(module, (ModernBertForMaskedLM, _Classifier)):
            init_output(module, config)


def init_output(model: nn.Module, config: ModernBertConfig) -> None:
    """The last layer of a head: the MLM decoder's bias, or a classifier."""
    if isinstance(model, ModernBertForMaskedLM):
        nn.init.zeros_(model.decoder.bias)
    else:
        trunc_normal_(model.classifier.weight, std=config.hidden_size ** -0.5,
                      cutoff=config.initializer_cutoff_factor)
        nn.init.zeros_(model.classifier.bias)


# ----------------------------------------------------------------------------- the models
class PreTrainedModel(HubMixin, nn.Module):
    """What every model here shares: loading and saving (hub.py), where its weights are and how
    many there are."""

    def init_package_weights(self) -> None:
        init_weights(self, self.config)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """The number of parameters, each counted once (the MLM decoder shares the embedding's), as
        transformers' `num_parameters`: only_trainable=True counts only those that require a
        gradient; exclude_embeddings=True leaves out the token embedding, as scaling laws count a
        model's size."""
        left_out = ({id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
                    if exclude_embeddings else set())
        return sum(p.numel() for p in self.parameters()  # parameters() yields a shared one once
                   if id(p) not in left_out and (p.requires_grad or not only_trainable))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


class ModernBertModel(PreTrainedModel):
    """The encoder: input_ids (B, S) -> last_hidden_state (B, S, H)."""

    hf_architecture = "ModernBertModel"
    encoder_prefix = ""  # its parameter names have no "model." in front

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=False)
        self.gradient_checkpointing = False  # recompute each layer in backward to save memory
        init_weights(self, config)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
               position_ids: torch.Tensor | None = None, output_hidden_states: bool = False) -> Encoded:
        """The encoder's output in the input's shape, with what pooling needs (`Encoded.pool`)."""
        x, batch, hidden_states = self.run(input_ids, attention_mask, cu_seqlens, max_seqlen,
                                           position_ids, output_hidden_states)
        padded = batch.as_padded() if batch.is_unpadded and not batch.input_packed else batch
        return Encoded(repad(x, batch), repad_all(hidden_states, batch), padded.padding_mask,
                       batch.cu_seqlens if batch.input_packed else None)

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
            position_ids: torch.Tensor | None = None, output_hidden_states: bool = False):
        """The layers on the Batch the input runs as: (x, batch, hidden_states), for the heads.

        x is (B, S, H) for a batch without padding and (T, H) for an unpadded one; the heads
        work on it before anything is padded back (`repad`).
        """
        validate_inputs(input_ids, attention_mask, self.config, packed=cu_seqlens is not None)
        batch = batch_for(input_ids, attention_mask, cu_seqlens, max_seqlen, self.config)
        unpadded = batch.is_unpadded and not batch.input_packed
        if position_ids is not None:
            if _shape(position_ids) != tuple(input_ids.shape):
                raise ValueError(f"position_ids has shape {_shape(position_ids)}, but input_ids "
                                 f"has {tuple(input_ids.shape)}: they must be equal")
            batch.positions = unpad(position_ids, batch) if unpadded else position_ids
        x = self.embeddings(unpad(input_ids, batch) if unpadded else input_ids)  # (B, S, H) or (T, H)
        hidden_states = [x]
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, batch, use_reentrant=False)
            else:
                x = layer(x, batch)
            if output_hidden_states:
                hidden_states.append(x)
        x = self.final_norm(x)
        # as transformers: the embeddings, every layer but the last, and the final output
        hidden_states = (*hidden_states[:-1], x) if output_hidden_states else None
        return x, batch, hidden_states

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                position_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
                return_dict: bool = True) -> ModernBertOutput | tuple:
        encoded = self.encode(input_ids, attention_mask, cu_seqlens, max_seqlen, position_ids,
                              output_hidden_states)
        out = ModernBertOutput(last_hidden_state=encoded.last_hidden_state,
                               hidden_states=encoded.hidden_states)
        return out if return_dict else out.to_tuple()

    def gradient_checkpointing_enable(self) -> None:
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False


def repad(x: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(T, ...) -> (B, S, ...) for a batch the model unpadded itself; a packed input stays flat."""
    return pad(x, batch) if batch.is_unpadded and not batch.input_packed else x


def repad_all(states, batch: Batch):
    return None if states is None else tuple(repad(h, batch) for h in states)


def check_labels(labels: torch.Tensor | None, input_ids: torch.Tensor) -> None:
    if labels is not None and _shape(labels) != tuple(input_ids.shape):
        raise ValueError(f"labels has shape {_shape(labels)}, but input_ids has "
                         f"{tuple(input_ids.shape)}: they must be equal")


def align_labels(labels: torch.Tensor | None, batch: Batch) -> torch.Tensor | None:
    """Per-token labels as the encoder ran: (B, S) or, for a batch it unpadded itself, (T,)."""
    if labels is None or not batch.is_unpadded or batch.input_packed:
        return labels
    return unpad(labels, batch)


class ModernBertForMaskedLM(PreTrainedModel):
    """The encoder plus the masked-language-model head: logits over the vocab at each position."""

    hf_architecture = "ModernBertForMaskedLM"
    encoder_prefix = "model."
    tied_weights = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.config = config
        self.model = ModernBertModel(config)
        self.head = PredictionHead(config)
        self.decoder = Linear(config.hidden_size, config.vocab_size, bias=True)
        self.decoder.weight = self.model.embeddings.tok_embeddings.weight  # tied: one (V, H) matrix
        init_weights(self.head, config)
        init_output(self, config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, *, cu_seqlens: torch.Tensor | None = None,
                max_seqlen: int | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, return_dict: bool = True) -> MaskedLMOutput | tuple:
        check_labels(labels, input_ids)  # before any work
        x, batch, hidden_states = self.model.run(input_ids, attention_mask, cu_seqlens,
                                                 max_seqlen, position_ids, output_hidden_states)
        labels = align_labels(labels, batch)  # (B, S) or (T,)
        sparse = self.config.sparse_prediction and labels is not None
        if sparse:  # only the positions that have a target go through the head: (N, H), (N,)
            labelled = labels != IGNORE_INDEX
            x, labels = x[labelled], labels[labelled]
        logits = self.decoder(self.head(x))  # (B, S, V), (T, V) or (N, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        out = MaskedLMOutput(loss=loss, logits=logits if sparse else repad(logits, batch),
                             hidden_states=repad_all(hidden_states, batch))
        return out if return_dict else out.to_tuple()


def pool(x: torch.Tensor, how: str, padding_mask: torch.Tensor | None = None,
         cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S, H) or, packed, (T, H) -> (N, H): each sequence's first real token ("cls") or the
    mean over its real tokens ("mean").

    padding_mask (B, S) says which tokens of a padded x are real (None: all); cu_seqlens (N + 1,)
    where each sequence of a packed x starts. The first *real* token: a left-padded row's [CLS]
    is not at position 0.
    """
    if cu_seqlens is not None:
        starts = cu_seqlens[:-1].long()
        if how == "cls":
            return x[starts]
        rows, _ = sequence_positions(cu_seqlens, x.shape[0])  # (T,); the size given: no sync
        lengths = cu_seqlens.diff()  # (N,)
        return x.new_zeros(len(lengths), x.shape[-1]).index_add_(0, rows, x) / lengths.to(x.dtype)[:, None]
    if padding_mask is None:
        return x[:, 0] if how == "cls" else x.mean(dim=1)
    if how == "cls":
        return x[torch.arange(len(x), device=x.device), padding_mask.int().argmax(dim=1)]
    weights = padding_mask.to(x.dtype).unsqueeze(-1)  # (B, S, 1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1)


class _Classifier(PreTrainedModel):
    """The encoder, the dense/GELU/LayerNorm head, dropout and a classifier over num_labels."""

    encoder_prefix = "model."

    def __init__(self, config: ModernBertConfig, num_labels: int | None = None):
        """The labels are the config's: `config.id2label` names them and `num_labels` counts them.
        A config that names none gets transformers' defaults, LABEL_0 ... for num_labels labels
        (2 when not given); a num_labels that disagrees with the config's names is an error."""
        super().__init__()
        positive = isinstance(num_labels, int) and not isinstance(num_labels, bool) and num_labels > 0
        if num_labels is not None and not positive:
            raise ValueError(f"num_labels={num_labels!r} is invalid: must be a positive integer")
        if config.id2label is None:
            config = replace(config, id2label={i: f"LABEL_{i}" for i in range(num_labels or 2)})
        elif num_labels is not None and num_labels != config.num_labels:
            raise ValueError(f"{type(self).__name__} has num_labels={num_labels}, but its config's "
                             f"id2label names {config.num_labels} labels, "
                             f"{list(config.id2label.values())}: pass id2label= with {num_labels} "
                             "names, or id2label=None for the defaults LABEL_0, ...")
        self.config = config
        self.model = ModernBertModel(config)
        self.head = PredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = Linear(config.hidden_size, self.num_labels, bias=True)
        init_weights(self.head, config)
        init_output(self, config)

    @property
    def num_labels(self) -> int:
        """How many labels the classifier scores: as many as its config names."""
        return self.config.num_labels

    def classify(self, x: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., num_labels)
        return self.classifier(self.drop(self.head(x)))

    @classmethod
    def init_kwargs_from_hf(cls, hf: dict) -> dict:
        """num_labels from config.json: how many labels its id2label names (the config reads
        transformers' default names LABEL_0 ... as no names), or its num_labels."""
        if "id2label" in hf:
            return {"num_labels": len(hf["id2label"])}
        return {"num_labels": hf["num_labels"]} if "num_labels" in hf else {}


class ModernBertForSequenceClassification(_Classifier):
    """The encoder, pooled to one vector per sequence, plus a classifier.

    num_labels == 1 is regression (MSE loss); with more labels, integer labels give cross
    entropy and float (B, num_labels) labels give a multi-label BCE loss, as in transformers.
    """

    hf_architecture = "ModernBertForSequenceClassification"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, *, cu_seqlens: torch.Tensor | None = None,
                max_seqlen: int | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False,
                return_dict: bool = True) -> SequenceClassifierOutput | tuple:
        encoded = self.model.encode(input_ids, attention_mask, cu_seqlens, max_seqlen,
                                    position_ids, output_hidden_states)
        logits = self.classify(encoded.pool(self.config.classifier_pooling))  # (N, num_labels)
        loss = None if labels is None else classification_loss(logits, labels, self.config.problem_type)
        out = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states)
        return out if return_dict else out.to_tuple()


class ModernBertForTokenClassification(_Classifier):
    """The encoder plus a classifier at every token (named entities, tags): cross entropy,
    -100 where a token has no label."""

    hf_architecture = "ModernBertForTokenClassification"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, *, cu_seqlens: torch.Tensor | None = None,
                max_seqlen: int | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False,
                return_dict: bool = True) -> TokenClassifierOutput | tuple:
        check_labels(labels, input_ids)  # before any work
        x, batch, hidden_states = self.model.run(input_ids, attention_mask, cu_seqlens,
                                                 max_seqlen, position_ids, output_hidden_states)
        logits = self.classify(x)  # (B, S, num_labels) or (T, num_labels)
        labels = align_labels(labels, batch)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        out = TokenClassifierOutput(loss=loss, logits=repad(logits, batch),
                                    hidden_states=repad_all(hidden_states, batch))
        return out if return_dict else out.to_tuple()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        problem_type: str | None = None) -> torch.Tensor:
    """The loss of a sequence classifier: the config's problem_type or, as transformers does
    when it is None, the one the number of labels and the labels' dtype imply."""
    if problem_type is None:
        problem_type = ("regression" if logits.shape[-1] == 1 else
                        "single_label_classification" if not labels.dtype.is_floating_point else
                        "multi_label_classification")
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
    if problem_type == "single_label_classification":  # one class per sequence
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))  # multi-label

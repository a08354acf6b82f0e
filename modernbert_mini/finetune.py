"""Fine-tuning ModernBERT: a classifier and a retrieval bi-encoder. Chapter 11.

ModernBERT is judged downstream on classification (GLUE) and retrieval (BEIR, code search). This
module holds what fine-tuning needs; `experiment.py` runs it on the offline tasks (`make finetune`)
and on GLUE.

- classification: `ModernBertForSequenceClassification` (pooled encoder -> head -> classifier,
  cross entropy), `train_classifier` and `predict`.
- retrieval: a bi-encoder (`BiEncoder`): one encoder for queries and documents, the mean of the
  last hidden states over real tokens, unit length, scored by cosine similarity. It trains with
  an in-batch-negative contrastive loss (InfoNCE), both ways: in a batch of n (query, document)
  pairs the other n - 1 documents are each query's negatives, and the other n - 1 queries each
  document's,

      S = Q D^T / temperature                                           Q, D: (n, H) unit rows
      loss = (cross_entropy(S, [0, ..., n-1]) + cross_entropy(S^T, [0, ..., n-1])) / 2

  `mean_cosine` measures how far the embeddings are from pointing all one way (anisotropy).
- hybrid retrieval: the bi-encoder's scores and BM25's fused, each z-normalised per query and
  weighted (`fuse_scores`, the weight chosen on validation queries, `choose_fusion_weight`); or
  their rankings by reciprocal rank fusion (Cormack et al., 2009): score(d) = sum over rankings
  of 1 / (k + rank(d)), k = 60, which throws the scores away.

The loop is the package's own (`loop.py`, chapters 6 and 9): texts are tokenized once, batches
are packed (documents back to back with `cu_seqlens`, no padding computed), StableAdamW with the
config's betas and eps and no decay on norms and biases, the warmup-stable-decay learning rate,
a tqdm progress bar.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from . import data, loop
from .config import ModernBertConfig
from .hub import save_sentence_transformers
from .model import ModernBertForSequenceClassification, ModernBertModel
from .optim import OptimConfig
from .packing import PackedBatch, collate
from .runtime import autocast
from .tokenizer import Text, load_tokenizer, to_sequences

RRF_K = 60  # reciprocal rank fusion's constant, as in Cormack et al. (2009)


# fine-tuning's optimizer: a lower peak lr than pretraining, torch-style weight decay (times the
# lr, decouple_lr=False), warmup over the first 10% of the steps and the 1-sqrt decay to 0 over
# the last 30%: shares of a run whose length the data decides
FINETUNE_OPTIM = OptimConfig(lr=3e-4, weight_decay=0.01, decouple_lr=False, warmup_steps=0.1,
                             decay_steps=0.3)


@dataclass(frozen=True)
class FinetuneConfig:
    """How one model is fine-tuned. `make finetune` runs these with epochs=3 (chosen on --validation)."""

    max_len: int = 64  # tokens per text, [CLS] and [SEP] included; longer texts are cut
    batch_size: int = 32  # sequences (classification) or pairs (retrieval) per step
    epochs: int = 1
    min_steps: int = 0  # at least this many steps: more epochs on a small training set
    temperature: float = 0.05  # of the contrastive loss
    optim: OptimConfig = FINETUNE_OPTIM
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        for name in ("max_len", "batch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: must be a positive integer")
        if self.max_len < 3:
            raise ValueError(f"max_len={self.max_len} is invalid: must be >= 3 ([CLS], a token, [SEP])")
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size} is invalid: must be >= 2 "
                             "(in-batch negatives need another pair in the batch)")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature!r} is invalid: must be > 0")


# ----------------------------------------------------------------------------- text -> batches
def length_grouped_batches(lengths: Sequence[int], batch_size: int,
                           generator: torch.Generator | None = None,
                           group: int = 64) -> list[list[int]]:
    """Indices in batches of `batch_size`: shuffled, then sorted by length within groups of
    `group` batches, and the batches shuffled again (generator=None: in order, no shuffling).

    Packed batches compute no padding in the layers, but attention backends that pad (SDPA on the
    CPU) pad to the longest sequence of the batch: similar lengths together keep that small.
    """
    n = len(lengths)
    order = list(range(n)) if generator is None else torch.randperm(n, generator=generator).tolist()
    span = batch_size * group
    order = [i for start in range(0, n, span)
             for i in sorted(order[start:start + span], key=lambda i: lengths[i])]
    batches = [order[start:start + batch_size] for start in range(0, n, batch_size)]
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def to_device(batch: PackedBatch, device: torch.device) -> dict:
    """The model's keyword arguments for a packed batch."""
    return dict(input_ids=batch.input_ids.to(device), cu_seqlens=batch.cu_seqlens.to(device),
                max_seqlen=batch.max_seqlen)


# ----------------------------------------------------------------------------- the loop
def fit(model: nn.Module, steps: Sequence, loss_of: Callable[[object], torch.Tensor],
        cfg: FinetuneConfig, desc: str = "fine-tuning") -> list[float]:
    """One optimizer step per item of `steps` (`loss_of(item)` gives its mean loss), in train
    mode (dropout on); the model is left in eval mode. The optimizer, its schedule over
    len(steps) and any gradient clipping are cfg.optim's (`loop.py`). Returns the loss of every
    step.
    """
    from tqdm.auto import tqdm

    if len(steps) == 0:
        raise ValueError("no training steps: the training data is empty")
    optimizer, scheduler = loop.build_optimizer(model, cfg.optim, len(steps))
    model.train()
    losses = []
    with tqdm(steps, desc=desc, disable=not cfg.progress, leave=False) as bar:
        for item in bar:
            with autocast(model.device):
                loss = loss_of(item)
            loop.step(model, optimizer, scheduler, loss, cfg.optim.grad_clip)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def epoch_batches(lengths: Sequence[int], cfg: FinetuneConfig) -> list[list[int]]:
    """cfg.epochs epochs of length-grouped batches, each epoch in its own order (from cfg.seed);
    more epochs where that is fewer than cfg.min_steps batches."""
    generator = torch.Generator().manual_seed(cfg.seed)
    per_epoch = -(-len(lengths) // cfg.batch_size)
    epochs = max(cfg.epochs, -(-cfg.min_steps // max(per_epoch, 1)))
    return [b for _ in range(epochs)
            for b in length_grouped_batches(lengths, cfg.batch_size, generator)]


# ----------------------------------------------------------------------------- classification
def classifier_batch_loss(model: ModernBertForSequenceClassification, batch: PackedBatch,
                          labels: torch.Tensor) -> torch.Tensor:
    """The classifier run on a packed batch: its loss (cross entropy; MSE for one label)."""
    return model(**to_device(batch, model.device), labels=labels.to(model.device)).loss


def train_classifier(model: ModernBertForSequenceClassification, tokenizer: Tokenizer,
                     texts: Sequence[Text], labels: Sequence[int | float],
                     cfg: FinetuneConfig) -> list[float]:
    """Fine-tune `model` on (text, label) pairs; returns the loss of every step."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels: they must pair up")
    sequences = to_sequences(tokenizer, texts, cfg.max_len, overflow="truncate")
    dtype = torch.float32 if model.num_labels == 1 else torch.long
    targets = torch.tensor(list(labels), dtype=dtype)
    steps = epoch_batches(sequences.lengths, cfg)
    return fit(model, steps, lambda rows: classifier_batch_loss(
        model, collate(sequences, rows), targets[rows]), cfg, desc="classifier")


@torch.inference_mode()
def predict(model: ModernBertForSequenceClassification, tokenizer: Tokenizer,
            texts: Sequence[Text], max_len: int, batch_size: int = 64) -> torch.Tensor:
    """The logits (N, num_labels) for each text, in the order of `texts`."""
    model.eval()
    sequences = to_sequences(tokenizer, texts, max_len, overflow="truncate")
    logits = torch.empty(len(texts), model.num_labels)
    for rows in length_grouped_batches(sequences.lengths, batch_size):
        batch = collate(sequences, rows)
        with autocast(model.device):
            logits[rows] = model(**to_device(batch, model.device)).logits.float().cpu()
    return logits


# ----------------------------------------------------------------------------- retrieval
class BiEncoder(nn.Module):
    """One encoder for queries and documents: mean of the last hidden states over the real
    tokens of each sequence, scaled to unit length, so a dot product is the cosine similarity.

    encoder: a ModernBertModel, or any module with its `encode(input_ids, cu_seqlens=,
    max_seqlen=)` (an `Encoded` back), `config.hidden_size` and `device` (`reference.py`)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        if not (hasattr(encoder, "encode") and hasattr(encoder, "config")):
            raise ValueError(f"BiEncoder needs a ModernBertModel (or a module with encode and "
                             f"config), got {type(encoder).__name__}")
        self.encoder = encoder

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def forward(self, batch: PackedBatch) -> torch.Tensor:  # -> (N, H)
        encoded = self.encoder.encode(**to_device(batch, self.device))  # (T, H), packed
        return F.normalize(encoded.pool("mean").float(), dim=-1)  # (N, H)

    def save_sentence_transformers(self, directory: str | Path, tokenizer: Tokenizer) -> Path:
        """A folder that sentence-transformers loads (`SentenceTransformer(directory)`) and that
        embeds as this bi-encoder does: mean pooling, unit length (`hub.save_sentence_transformers`)."""
        return save_sentence_transformers(self.encoder, directory, tokenizer, pooling="mean",
                                          normalize=True)


def contrastive_loss(queries: torch.Tensor, documents: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """In-batch-negative InfoNCE, both ways: query i's positive is document i, and document
    i's is query i; the other rows are the negatives.

    queries, documents: (n, H) unit vectors. S = Q D^T / temperature; the mean of
    cross_entropy(S, arange(n)) (queries -> documents) and cross_entropy(S^T, arange(n)).
    """
    if queries.shape != documents.shape or queries.dim() != 2:
        raise ValueError(f"queries {tuple(queries.shape)} and documents {tuple(documents.shape)} "
                         "must both be (n, H)")
    scores = queries @ documents.T / temperature  # (n, n)
    targets = torch.arange(len(queries), device=scores.device)
    return (F.cross_entropy(scores, targets) + F.cross_entropy(scores.T, targets)) / 2


def train_biencoder(model: BiEncoder, tokenizer: Tokenizer, queries: Sequence[str],
                    documents: Sequence[str], cfg: FinetuneConfig) -> list[float]:
    """Fine-tune on (query, document) pairs with in-batch negatives; the loss of every step."""
    if len(queries) != len(documents):
        raise ValueError(f"{len(queries)} queries but {len(documents)} documents: they must pair up")
    q_seqs = to_sequences(tokenizer, queries, cfg.max_len, overflow="truncate")
    d_seqs = to_sequences(tokenizer, documents, cfg.max_len, overflow="truncate")
    steps = epoch_batches(d_seqs.lengths, cfg)  # documents are the long side: group by them

    def loss_of(rows):
        return contrastive_loss(model(collate(q_seqs, rows)), model(collate(d_seqs, rows)),
                                cfg.temperature)
    return fit(model, steps, loss_of, cfg, desc="bi-encoder")


@torch.inference_mode()
def embed_texts(model: BiEncoder, tokenizer: Tokenizer, texts: Sequence[str], max_len: int,
                batch_size: int = 64) -> torch.Tensor:
    """(N, H) unit vectors, in the order of `texts`, cut at max_len tokens as in training."""
    model.eval()
    sequences = to_sequences(tokenizer, texts, max_len, overflow="truncate")
    out = torch.empty(len(texts), model.encoder.config.hidden_size)
    for rows in length_grouped_batches(sequences.lengths, batch_size):
        with autocast(model.device):
            out[rows] = model(collate(sequences, rows)).cpu()
    return out


def top_k(scores: torch.Tensor, k: int) -> list[list[int]]:
    """For each row of scores (Q, D), the k best columns, best first."""
    return scores.topk(min(k, scores.shape[1]), dim=-1).indices.tolist()


def mean_cosine(embeddings: torch.Tensor) -> float:
    """The mean cosine similarity between two different rows of (N, H) embeddings: near 0 when
    they spread over the space, near 1 when they all point one way (anisotropy)."""
    if embeddings.dim() != 2 or len(embeddings) < 2:
        raise ValueError(f"embeddings must be (N, H) with N >= 2, got {tuple(embeddings.shape)}")
    unit = F.normalize(embeddings.double(), dim=-1)
    total = unit.sum(0)  # sum over pairs i != j of u_i . u_j = |sum u|^2 - N
    n = len(unit)
    return float((total @ total - n) / (n * (n - 1)))


def fuse_scores(dense: torch.Tensor, lexical: torch.Tensor, weight: float) -> torch.Tensor:
    """weight * z(dense) + (1 - weight) * z(lexical), each score matrix (Q, D) z-normalised per
    query (its row's mean 0, standard deviation 1), so that the two scales can be added."""
    if dense.shape != lexical.shape or dense.dim() != 2:
        raise ValueError(f"dense {tuple(dense.shape)} and lexical {tuple(lexical.shape)} must "
                         "both be (queries, documents)")
    if not 0 <= weight <= 1:
        raise ValueError(f"weight={weight!r} is invalid: must be in [0, 1]")

    def z(scores):
        scores = scores.double()
        return (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True).clamp(min=1e-12)
    return weight * z(dense) + (1 - weight) * z(lexical)


FUSION_WEIGHTS = tuple(i / 10 for i in range(11))


def choose_fusion_weight(dense: torch.Tensor, lexical: torch.Tensor,
                         metric: Callable[[list[list[int]]], float],
                         weights: Sequence[float] = FUSION_WEIGHTS) -> tuple[float, dict]:
    """The weight of `fuse_scores` with the best metric(rankings) on these (validation) queries,
    the first of the best on a tie; and the metric of every weight tried."""
    tried = {w: metric(top_k(fuse_scores(dense, lexical, w), 10)) for w in weights}
    best = max(tried.values())
    return next(w for w in weights if tried[w] == best), tried


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Sequence[int]]], k: int = RRF_K,
                           depth: int | None = None) -> list[list[int]]:
    """Fuse several rankings of the same queries: score(d) = sum_r 1 / (k + rank_r(d)).

    rankings[r][q] lists the documents ranker r returns for query q, best first (rank 1 is the
    first); a document a ranker did not return gets nothing from it. Returns, per query, the
    documents by fused score, best first (ties: the smaller document index first), at most
    `depth` of them (None: all that any ranker returned).
    """
    if not rankings:
        raise ValueError("rankings is empty: fusion needs at least one ranking")
    if len({len(r) for r in rankings}) != 1:
        raise ValueError(f"rankings cover different numbers of queries: {[len(r) for r in rankings]}")
    if not (isinstance(k, (int, float)) and k >= 0):
        raise ValueError(f"k={k!r} is invalid: must be a number >= 0")
    fused = []
    for per_query in zip(*rankings):
        scores: dict[int, float] = {}
        for documents in per_query:
            for position, document in enumerate(documents):
                scores[document] = scores.get(document, 0.0) + 1.0 / (k + position + 1)
        best = sorted(scores, key=lambda d: (-scores[d], d))
        fused.append(best if depth is None else best[:depth])
    return fused


# ----------------------------------------------------------------------------- starting points
def load_encoder_checkpoint(checkpoint: str | Path, init: str, *, num_labels: int | None,
                            seed: int, **overrides) -> nn.Module:
    """A classifier (num_labels given) or a bare encoder (num_labels=None) with the
    checkpoint's architecture: its weights (init="pretrained"; a new head is initialised as the
    package does, from `seed`) or none of them (init="random": the package's initialisation)."""
    if init not in ("pretrained", "random"):
        raise ValueError(f"init={init!r} is invalid: must be 'pretrained' or 'random'")
    cls = ModernBertModel if num_labels is None else ModernBertForSequenceClassification
    extra = {} if num_labels is None else {"num_labels": num_labels}
    torch.manual_seed(seed)
    if init == "random":
        config = ModernBertConfig.from_pretrained(checkpoint, **overrides)
        return cls(config, **extra)
    with warnings.catch_warnings():  # "skipped decoder.*": a new head is the point here
        warnings.simplefilter("ignore")
        return cls.from_pretrained(checkpoint, strict=False, **overrides, **extra)


def load_checkpoint_tokenizer(checkpoint: str | Path) -> Tokenizer:
    """The checkpoint's tokenizer.json, or the corpus tokenizer `make pretrain` trains with."""
    path = Path(checkpoint)
    return load_tokenizer(path) if (path / "tokenizer.json").is_file() else data.corpus_tokenizer()

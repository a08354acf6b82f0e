"""Fine-tuning ModernBERT: a classifier and a retrieval bi-encoder. Chapter 11.

ModernBERT is judged downstream on classification (GLUE) and retrieval (BEIR, code search). This
module holds what fine-tuning needs; `experiment.py` runs it on the offline tasks (`make finetune`).

- classification: `ModernBertForSequenceClassification` (pooled encoder -> head -> classifier,
  cross entropy), `train_classifier` and `predict`.
- retrieval: a bi-encoder (`BiEncoder`): one encoder for queries and documents, the mean of the
  last hidden states over real tokens, unit length, scored by cosine similarity. It trains with
  an in-batch-negative contrastive loss (InfoNCE), both ways: in a batch of n (query, document)
  pairs the other n - 1 documents are each query's negatives, and the other n - 1 queries each
  document's,

      S = Q D^T / temperature                                           Q, D: (n, H) unit rows
      loss = (cross_entropy(S, [0, ..., n-1]) + cross_entropy(S^T, [0, ..., n-1])) / 2

- one model, one task, scored: `run_classification` (accuracy, macro-F1) and `run_retrieval`
  (MRR, nDCG, recall; before and after fine-tuning; fused with BM25), with `tasks.py`'s metrics
  and fusion; `mini_classifier`, `mini_encoder`: the mini checkpoint as they start from it.
- GLUE (online): `finetune_glue` fine-tunes the published ModernBERT-base on one of its tasks.

The loop is the package's own (`loop.py`, chapters 6 and 9): texts are tokenized once, batches
are packed (`packing.py`: documents back to back with `cu_seqlens`, no padding computed),
StableAdamW and the warmup-stable-decay learning rate as `FinetuneConfig.optim` says (no decay
on norms and biases), a tqdm progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from . import loop, tasks
from .checkpoint import load_encoder_checkpoint
from .hub import save_sentence_transformers
from .model import ModernBertForSequenceClassification, ModernBertModel
from .optim import OptimConfig
from .packing import PackedBatch, collate
from .runtime import autocast, detect
from .tasks import choose_fusion_weight, fuse_scores, mean_cosine, reciprocal_rank_fusion, top_k
from .tokenizer import Text, load_tokenizer, to_sequences

# fine-tuning's optimizer: a lower peak lr than pretraining, torch-style weight decay (times the
# lr, decouple_lr=False), warmup over the first 10% of the steps and the 1-sqrt decay to 0 over
# the last 30%: shares of a run whose length the data decides
FINETUNE_OPTIM = OptimConfig(lr=3e-4, weight_decay=0.01, decouple_lr=False, warmup_steps=0.1,
                             decay_steps=0.3)
BASE_MODEL = "answerdotai/ModernBERT-base"
FUSION_DEPTH = 100  # how deep each ranking goes into the fusion
GLUE_TEXTS = {  # task -> its text field(s)
    "cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


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


GLUE_CONFIG = FinetuneConfig(max_len=512, optim=replace(FINETUNE_OPTIM, lr=8e-5))  # ModernBERT-base


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
    from tqdm.auto import tqdm  # it loads IPython where there is one: not with the package

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


def epochs_for(n: int, cfg: FinetuneConfig) -> int:
    """The epochs a run on n examples trains for: cfg.epochs, or more where that is fewer than
    cfg.min_steps batches."""
    per_epoch = -(-n // cfg.batch_size)
    return max(cfg.epochs, -(-cfg.min_steps // max(per_epoch, 1)))


def epoch_batches(lengths: Sequence[int], cfg: FinetuneConfig) -> list[list[int]]:
    """epochs_for(len(lengths), cfg) epochs of length-grouped batches, each epoch in its own
    order (from cfg.seed)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    epochs = epochs_for(len(lengths), cfg)
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


# ----------------------------------------------------------------------------- one model, one task, scored
def run_classification(task: tasks.ClassificationTask, make_model: Callable[[int], nn.Module],
                       cfg: FinetuneConfig, tokenizer: Tokenizer) -> dict:
    """Fine-tune make_model(cfg.seed) on task.train, score on task.test: accuracy, macro-F1,
    seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    model = make_model(cfg.seed)
    train_classifier(model, tokenizer, [e.text for e in task.train], [e.label for e in task.train],
                     cfg)
    predicted = predict(model, tokenizer, [e.text for e in task.test], cfg.max_len).argmax(-1)
    scores = tasks.classification_metrics([e.label for e in task.test], predicted.tolist(),
                                          per_item=True)
    return {**scores, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def dense_scores(model: BiEncoder, tokenizer: Tokenizer, pairs: Sequence[tasks.SearchPair],
                 max_len: int) -> tuple[torch.Tensor, float]:
    """The cosine of every query with every document (Q, D), and the documents' mean cosine."""
    queries = embed_texts(model, tokenizer, [p.query for p in pairs], max_len)
    documents = embed_texts(model, tokenizer, [p.code for p in pairs], max_len)
    return queries @ documents.T, mean_cosine(documents)


def metrics_of(scores: torch.Tensor) -> dict:
    """The retrieval metrics of a (Q, D) score matrix, with each query's rank ("per_item")."""
    return tasks.retrieval_metrics(top_k(scores, FUSION_DEPTH), per_item=True)


def zero_shot_retrieval(task: tasks.RetrievalTask, model: BiEncoder, tokenizer: Tokenizer,
                        max_len: int) -> dict:
    """A bi-encoder's metrics on task.test as it is, and the documents' mean cosine."""
    scores, cosine = dense_scores(model, tokenizer, task.test, max_len)
    return {**metrics_of(scores), "mean_cosine": cosine}


def run_retrieval(task: tasks.RetrievalTask, make_encoder: Callable[[int], nn.Module],
                  cfg: FinetuneConfig, tokenizer: Tokenizer, bm25: dict | None = None) -> dict:
    """The bi-encoder of make_encoder(cfg.seed) on task.test before fine-tuning ("zero_shot",
    with the documents' mean cosine), fine-tuned on task.train and scored again (the metrics,
    "mean_cosine"); with BM25's score matrices bm25={"test", "validation"}, the hybrids too:
    score fusion with the weight that is best on task.validation ("fused"), and RRF ("rrf")."""
    start, cpu = time.perf_counter(), time.process_time()
    model = BiEncoder(make_encoder(cfg.seed))
    zero_shot = zero_shot_retrieval(task, model, tokenizer, cfg.max_len)
    train_biencoder(model, tokenizer, [p.query for p in task.train], [p.code for p in task.train],
                    cfg)
    after, cosine_after = dense_scores(model, tokenizer, task.test, cfg.max_len)
    out = {**metrics_of(after), "mean_cosine": cosine_after,
           "zero_shot": zero_shot}
    if bm25 is not None:
        on_validation, _ = dense_scores(model, tokenizer, task.validation, cfg.max_len)
        weight, tried = choose_fusion_weight(
            on_validation, bm25["validation"], lambda ranked: tasks.retrieval_metrics(ranked)["mrr@10"])
        out["fused"] = {**metrics_of(fuse_scores(after, bm25["test"], weight)), "weight": weight,
                        "validation_mrr@10": {str(w): m for w, m in tried.items()}}
        out["rrf"] = tasks.retrieval_metrics(reciprocal_rank_fusion(
            [top_k(after, FUSION_DEPTH), top_k(bm25["test"], FUSION_DEPTH)]), per_item=True)
    out.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu)
    return out


def mini_classifier(checkpoint, init: str, num_labels: int, **overrides):
    """make_model for the mini model: pooled by the mean of its tokens (ModernBERT's released
    fine-tuning configs pool with "mean"; MLM never trains [CLS]'s output)."""
    return lambda seed: load_encoder_checkpoint(checkpoint, init, num_labels=num_labels, seed=seed,
                                                **{"classifier_pooling": "mean", **overrides})


def mini_encoder(checkpoint, init: str, **overrides):
    return lambda seed: load_encoder_checkpoint(checkpoint, init, num_labels=None, seed=seed,
                                                **overrides)


# ----------------------------------------------------------------------------- online: GLUE
def _needs_network(what: str, error: Exception) -> RuntimeError:
    return RuntimeError(f"{what} needs the network (the Hugging Face hub), and it could not be "
                        f"reached: {type(error).__name__}: {error}. Offline, use the tasks that "
                        "work here: `python -m modernbert_mini.experiment` (make finetune).")


def finetune_glue(name: str, model_id: str | Path = BASE_MODEL,
                  cfg: FinetuneConfig = replace(GLUE_CONFIG, epochs=2),
                  max_train: int | None = None) -> dict:
    """Fine-tune `model_id` (the published ModernBERT-base by default) on a GLUE task and score
    it on the validation split (GLUE's test labels are not public). Online only.

    The same loop as the offline tasks; on a GPU the model and batches go there (bf16 autocast
    where it is native). Returns accuracy and macro-F1 (Pearson and Spearman r for stsb).
    """
    if name not in GLUE_TEXTS:
        raise ValueError(f"GLUE task {name!r} is not supported here; choose one of {tuple(GLUE_TEXTS)}")
    try:
        tokenizer = load_tokenizer(model_id)
        splits = {s: tasks.load_glue(name, s) for s in
                  ("train", "validation_matched" if name == "mnli" else "validation")}
    except (OSError, ConnectionError) as error:  # huggingface_hub's offline errors are OSErrors
        raise _needs_network(f"fine-tuning on GLUE {name}", error) from error
    train, validation = splits.values()
    if max_train is not None:
        train = train.select(range(min(max_train, len(train))))
    fields_ = GLUE_TEXTS[name]

    def texts(split):
        columns = [split[f] for f in fields_]
        return list(columns[0]) if len(columns) == 1 else list(zip(*columns))
    regression = name == "stsb"
    num_labels = 1 if regression else train.features["label"].num_classes
    try:
        model = ModernBertForSequenceClassification.from_pretrained(
            model_id, strict=False, num_labels=num_labels)
    except OSError as error:
        raise _needs_network(f"loading {model_id}", error) from error
    model.to(detect().device)
    train_classifier(model, tokenizer, texts(train), list(train["label"]), cfg)
    logits = predict(model, tokenizer, texts(validation), cfg.max_len)
    truth = list(validation["label"])
    if regression:
        from scipy.stats import pearsonr, spearmanr  # for stsb alone: not with the package

        predicted = logits[:, 0].tolist()
        return {"pearson": float(pearsonr(truth, predicted)[0]),
                "spearman": float(spearmanr(truth, predicted)[0])}
    return tasks.classification_metrics(truth, logits.argmax(-1).tolist())

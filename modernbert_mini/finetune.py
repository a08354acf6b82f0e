"""Fine-tuning ModernBERT: a classifier, a retrieval bi-encoder and a hybrid retriever. Chapter 11.

ModernBERT is judged downstream on classification (GLUE) and retrieval (BEIR, code search). This
module fine-tunes the package's models on the offline tasks of `tasks.py` and measures them:

- classification: `ModernBertForSequenceClassification` (pooled encoder -> head -> classifier,
  cross entropy) on `tasks.package_classification`; accuracy and macro-F1 on the test split.
- retrieval: a bi-encoder (`BiEncoder`): one encoder for queries and documents, the mean of the
  last hidden states over real tokens, unit length, scored by cosine similarity. It trains with
  an in-batch-negative contrastive loss (InfoNCE): in a batch of n (query, document) pairs the
  other n - 1 documents are each query's negatives,

      loss = cross_entropy(Q D^T / temperature, [0, 1, ..., n-1])      Q, D: (n, H) unit rows

  MRR@10, nDCG@10 and recall@10 on `tasks.code_search`'s test split.
- hybrid retrieval: the bi-encoder's ranking and BM25's fused by reciprocal rank fusion
  (Cormack et al., 2009): score(d) = sum over rankings of 1 / (k + rank(d)), k = 60.

The loop is the package's own (chapters 6 and 9): texts are tokenized once, batches are packed
(documents back to back with `cu_seqlens`, no padding computed), StableAdamW with no decay on
norms and biases, the warmup-stable-decay learning rate, a tqdm progress bar.

`python -m modernbert_mini.finetune` (`make finetune`) compares, on the test splits, the
baselines (TF-IDF + logistic regression, BM25), the `make pretrain` checkpoint fine-tuned, the
same architecture fine-tuned from random initialisation (what pretraining is worth), and the
hybrid; each trained row is the mean over seeds, with its standard deviation. Hyperparameters
are chosen with `--validation` (a held-out part of the training split, by file), never on test.
Online (e.g. Colab), `--glue sst2` fine-tunes the published ModernBERT-base on a GLUE task.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from . import data, tasks
from .config import ModernBertConfig
from .mlm import PackedBatch, Sequences, collate
from .model import ModernBertForSequenceClassification, ModernBertModel, pool
from .optim import StableAdamW, lr_scheduler, param_groups
from .tokenizer import load_tokenizer
from .train import autocast

BASE_MODEL = "answerdotai/ModernBERT-base"
RRF_K = 60  # reciprocal rank fusion's constant, as in Cormack et al. (2009)
FUSION_DEPTH = 100  # how deep each ranking goes into the fusion
VALIDATION_FRACTION = 0.15  # of the training files, with --validation
MAX_TRAIN = 1500  # training examples per task by default (a quick run; `make finetune` uses all)
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
    lr: float = 3e-4  # the peak learning rate
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # of the steps: linear warmup ...
    decay_ratio: float = 0.3  # ... and, at the end, the 1-sqrt decay to 0
    temperature: float = 0.05  # of the contrastive loss
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
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be > 0")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} is invalid: must be >= 0")
        for name in ("warmup_ratio", "decay_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid: must be in [0, 1]")
        if self.warmup_ratio + self.decay_ratio > 1:
            raise ValueError(f"warmup_ratio + decay_ratio = {self.warmup_ratio + self.decay_ratio} "
                             "is invalid: must be <= 1")


# ----------------------------------------------------------------------------- text -> batches
Text = str | tuple[str, str]  # one text, or a pair (GLUE's sentence1, sentence2)


def tokenize(tokenizer: Tokenizer, texts: Sequence[Text], max_len: int) -> Sequences:
    """Each text (or pair) as one [CLS] ... [SEP] sequence of at most `max_len` tokens.

    A longer text is cut at the end (a pair: the longer of the two first), keeping the special
    tokens; a classifier sees one sequence per example, so nothing is split into pieces.
    """
    if not texts:
        raise ValueError("texts is empty: there is nothing to tokenize")
    plain = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's settings stay as they were
    plain.no_padding()
    plain.enable_truncation(max_len)
    encodings = plain.encode_batch(list(texts))
    lengths = torch.tensor([len(e.ids) for e in encodings], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    tokens = torch.tensor([i for e in encodings for i in e.ids], dtype=torch.int32)
    return Sequences(tokens, offsets)


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
    """One optimizer step per item of `steps` (`loss_of(item)` gives its mean loss).

    StableAdamW with ModernBERT's betas (0.9, 0.98) and eps 1e-6, weight decay except on norms
    and biases; warmup-stable-decay over len(steps). Returns the loss of every step.
    """
    from tqdm.auto import tqdm

    total = len(steps)
    if total == 0:
        raise ValueError("no training steps: the training data is empty")
    optimizer = StableAdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98),
                            eps=1e-6)
    warmup = round(cfg.warmup_ratio * total)
    scheduler = lr_scheduler(optimizer, warmup_steps=warmup,
                             decay_steps=min(round(cfg.decay_ratio * total), total - warmup),
                             total_steps=total)
    model.train()
    losses = []
    with tqdm(steps, desc=desc, disable=not cfg.progress, leave=False) as bar:
        for item in bar:
            with autocast(model.device):
                loss = loss_of(item)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def epoch_batches(lengths: Sequence[int], cfg: FinetuneConfig) -> list[list[int]]:
    """cfg.epochs epochs of length-grouped batches, each epoch in its own order (from cfg.seed)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    return [b for _ in range(cfg.epochs)
            for b in length_grouped_batches(lengths, cfg.batch_size, generator)]


# ----------------------------------------------------------------------------- classification
def classification_loss(model: ModernBertForSequenceClassification, batch: PackedBatch,
                        labels: torch.Tensor) -> torch.Tensor:
    """The model's loss (cross entropy; MSE for one label) on a packed batch."""
    return model(**to_device(batch, model.device), labels=labels.to(model.device)).loss


def train_classifier(model: ModernBertForSequenceClassification, tokenizer: Tokenizer,
                     texts: Sequence[Text], labels: Sequence[int | float],
                     cfg: FinetuneConfig) -> list[float]:
    """Fine-tune `model` on (text, label) pairs; returns the loss of every step."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels: they must pair up")
    sequences = tokenize(tokenizer, texts, cfg.max_len)
    dtype = torch.float32 if model.num_labels == 1 else torch.long
    targets = torch.tensor(list(labels), dtype=dtype)
    steps = epoch_batches(sequences.lengths, cfg)
    return fit(model, steps, lambda rows: classification_loss(
        model, collate(sequences, rows), targets[rows]), cfg, desc="classifier")


@torch.inference_mode()
def predict(model: ModernBertForSequenceClassification, tokenizer: Tokenizer,
            texts: Sequence[Text], max_len: int, batch_size: int = 64) -> torch.Tensor:
    """The logits (N, num_labels) for each text, in the order of `texts`."""
    model.eval()
    sequences = tokenize(tokenizer, texts, max_len)
    logits = torch.empty(len(texts), model.num_labels)
    for rows in length_grouped_batches(sequences.lengths, batch_size):
        batch = collate(sequences, rows)
        with autocast(model.device):
            logits[rows] = model(**to_device(batch, model.device)).logits.float().cpu()
    return logits


# ----------------------------------------------------------------------------- retrieval
class BiEncoder(nn.Module):
    """One encoder for queries and documents: mean of the last hidden states over the real
    tokens of each sequence, scaled to unit length, so a dot product is the cosine similarity."""

    def __init__(self, encoder: ModernBertModel):
        super().__init__()
        if not isinstance(encoder, ModernBertModel):
            raise ValueError(f"BiEncoder needs a ModernBertModel, got {type(encoder).__name__}")
        self.encoder = encoder

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def forward(self, batch: PackedBatch) -> torch.Tensor:  # -> (N, H)
        x, layout, _ = self.encoder.encode(**to_device(batch, self.device))
        return F.normalize(pool(x, layout, "mean").float(), dim=-1)  # x: (T, H) -> (N, H)


def contrastive_loss(queries: torch.Tensor, documents: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """In-batch-negative InfoNCE: query i's positive is document i, the other rows its negatives.

    queries, documents: (n, H) unit vectors. cross_entropy(Q D^T / temperature, arange(n)).
    """
    if queries.shape != documents.shape or queries.dim() != 2:
        raise ValueError(f"queries {tuple(queries.shape)} and documents {tuple(documents.shape)} "
                         "must both be (n, H)")
    scores = queries @ documents.T / temperature  # (n, n)
    return F.cross_entropy(scores, torch.arange(len(queries), device=scores.device))


def train_biencoder(model: BiEncoder, tokenizer: Tokenizer, queries: Sequence[str],
                    documents: Sequence[str], cfg: FinetuneConfig) -> list[float]:
    """Fine-tune on (query, document) pairs with in-batch negatives; the loss of every step."""
    if len(queries) != len(documents):
        raise ValueError(f"{len(queries)} queries but {len(documents)} documents: they must pair up")
    q_seqs = tokenize(tokenizer, queries, cfg.max_len)
    d_seqs = tokenize(tokenizer, documents, cfg.max_len)
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
    sequences = tokenize(tokenizer, texts, max_len)
    out = torch.empty(len(texts), model.encoder.config.hidden_size)
    for rows in length_grouped_batches(sequences.lengths, batch_size):
        with autocast(model.device):
            out[rows] = model(collate(sequences, rows)).cpu()
    return out


def rank(queries: torch.Tensor, documents: torch.Tensor, k: int) -> list[list[int]]:
    """For each query (Q, H), the indices of its k most similar documents (D, H), best first."""
    scores = queries @ documents.T  # (Q, D)
    return scores.topk(min(k, len(documents)), dim=-1).indices.tolist()


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


# ----------------------------------------------------------------------------- the experiment
def holdout_validation(examples: Sequence, fraction: float = VALIDATION_FRACTION) -> tuple[list, list]:
    """Split training examples by file (a stable hash of the path): (train, validation).
    Hyperparameters are chosen on the validation part, never on the test split."""
    def held(e):
        return data.stable_hash("validation:" + e.path) % 1000 < fraction * 1000
    return [e for e in examples if not held(e)], [e for e in examples if held(e)]


def finetuning_data(tokenizer: Tokenizer, max_len: int, validation: bool = False,
                    retrieval_max_len: int | None = None,
                    ) -> tuple[tasks.ClassificationTask, tasks.RetrievalTask]:
    """The two offline tasks as the experiment uses them: train on .train, score on .test.

    The test split is the task's own (the baselines score the same examples); from .train go the
    examples the model would see exactly as a scored one (`drop_overlap`). validation=True: .train
    is the training split minus some of its files and .test those files (`holdout_validation`),
    so the real test split is not looked at.
    """
    classification, search = tasks.package_classification(), tasks.code_search()
    if validation:
        train, held = holdout_validation(classification.train)
        classification = replace(classification, train=tuple(train), test=tuple(held))
        train, held = holdout_validation(search.train)
        search = replace(search, train=tuple(train), test=tuple(held))
    return (drop_overlap(classification, tokenizer, max_len),
            drop_overlap(search, tokenizer, retrieval_max_len or max_len))


def example_texts(example: tasks.LabelledText | tasks.SearchPair) -> list[str]:
    """What the model reads of an example: its text, or a search pair's query and code."""
    return [example.text] if isinstance(example, tasks.LabelledText) else [example.query, example.code]


def drop_overlap(task, tokenizer: Tokenizer, max_len: int):
    """The task without the training examples that the model, reading max_len tokens, would see
    exactly as it sees a scored one: texts that differ only after the cut are one example to it.
    (The task keeps distinct texts apart; cut to 128 tokens, two `distutils` `link` methods meet.)"""
    def cut(examples):
        texts = [t for e in examples for t in example_texts(e)]
        return [tuple(s.tolist()) for s in tokenize(tokenizer, texts, max_len)] if texts else []
    scored = set(cut(task.test))
    per = len(example_texts(task.train[0]))
    seen = cut(task.train)
    kept = [e for i, e in enumerate(task.train) if scored.isdisjoint(seen[i * per:(i + 1) * per])]
    return replace(task, train=tuple(kept))


def run_classification(task: tasks.ClassificationTask, checkpoint: str | Path, init: str,
                       cfg: FinetuneConfig, tokenizer: Tokenizer, **overrides) -> dict:
    """Fine-tune on task.train, score on task.test: accuracy, macro-F1, seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    model = load_encoder_checkpoint(checkpoint, init, num_labels=len(task.labels), seed=cfg.seed,
                                    **overrides)
    train_classifier(model, tokenizer, [e.text for e in task.train], [e.label for e in task.train],
                     cfg)
    predicted = predict(model, tokenizer, [e.text for e in task.test], cfg.max_len).argmax(-1)
    scores = tasks.classification_metrics([e.label for e in task.test], predicted.tolist())
    return {**scores, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def run_retrieval(task: tasks.RetrievalTask, checkpoint: str | Path, init: str,
                  cfg: FinetuneConfig, tokenizer: Tokenizer, bm25: list[list[int]] | None = None,
                  **overrides) -> dict:
    """Fine-tune the bi-encoder on task.train, score on task.test; with BM25's rankings of the
    test queries, the hybrid (RRF) too, under "hybrid"."""
    start, cpu = time.perf_counter(), time.process_time()
    model = BiEncoder(load_encoder_checkpoint(checkpoint, init, num_labels=None, seed=cfg.seed,
                                              **overrides))
    train_biencoder(model, tokenizer, [p.query for p in task.train], [p.code for p in task.train],
                    cfg)
    queries = embed_texts(model, tokenizer, [p.query for p in task.test], cfg.max_len)
    documents = embed_texts(model, tokenizer, [p.code for p in task.test], cfg.max_len)
    dense = rank(queries, documents, FUSION_DEPTH)
    out = {**tasks.retrieval_metrics(dense), "seconds": time.perf_counter() - start,
           "cpu_seconds": time.process_time() - cpu}
    if bm25 is not None:
        out["hybrid"] = tasks.retrieval_metrics(reciprocal_rank_fusion([dense, bm25]))
    return out


def mean_and_spread(runs: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """metric -> (mean, sample standard deviation) over runs (0 spread for a single run)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    return {k: (statistics.fmean(r[k] for r in runs),
                statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0) for k in keys}


COLUMNS = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("mrr@10", "MRR@10"),
           ("ndcg@10", "nDCG@10"), ("recall@10", "recall@10"))


def markdown_table(rows: dict[str, dict[str, tuple[float, float | None]]]) -> str:
    """One row per model, one column per metric: "0.625" or "0.612 ± 0.010", "—" where none."""
    def cell(value):
        if value is None:
            return "—"
        mean, spread = value
        return f"{mean:.3f}" if spread is None else f"{mean:.3f} ± {spread:.3f}"
    lines = ["| model | " + " | ".join(title for _, title in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    lines += [f"| {name} | " + " | ".join(cell(scores.get(key)) for key, _ in COLUMNS) + " |"
              for name, scores in rows.items()]
    return "\n".join(lines)


def bar_plot(rows: dict[str, dict[str, tuple[float, float | None]]], path: Path) -> None:
    """Grouped bars: a group per metric, a bar per model that has it, spread as error bars."""
    from .viz import file_figure

    fig = file_figure(figsize=(10, 4.5))
    ax = fig.subplots()
    width = 0.8 / len(rows)
    for i, (name, scores) in enumerate(rows.items()):
        xs = [j for j, (key, _) in enumerate(COLUMNS) if key in scores]
        means = [scores[COLUMNS[j][0]][0] for j in xs]
        spreads = [scores[COLUMNS[j][0]][1] or 0.0 for j in xs]
        ax.bar([x + (i - (len(rows) - 1) / 2) * width for x in xs], means, width,
               yerr=spreads if any(spreads) else None, capsize=3, label=name)
    ax.set_xticks(range(len(COLUMNS)), [title for _, title in COLUMNS])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score on the held-out test split")
    ax.set_title("package classification (accuracy, macro-F1) and code search (MRR, nDCG, recall)")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def compare(checkpoint: str | Path, out_dir: str | Path, seeds: Sequence[int] = (0, 1, 2),
            cfg: FinetuneConfig = FinetuneConfig(), retrieval_cfg: FinetuneConfig | None = None,
            validation: bool = False, max_train: int | None = MAX_TRAIN, **overrides) -> str:
    """The table of `make finetune`: baselines, pretrained and random-init fine-tuned (mean ±
    std over seeds), the hybrid. Writes results.md, results.json and results.png to out_dir.

    max_train: fine-tune on at most this many training examples per task (a fixed choice, the
    same for every row; the baselines use the whole training split), for quick runs; None:
    all of them (`make finetune`). validation=True scores on a held-out
    part of the training split instead of the test split (for choosing hyperparameters).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    retrieval_cfg = retrieval_cfg or cfg
    tokenizer = load_checkpoint_tokenizer(checkpoint)
    classification, search = finetuning_data(tokenizer, cfg.max_len, validation, retrieval_cfg.max_len)
    baseline_classification, baseline_search = classification, search
    if max_train is not None:
        classification, search = (replace(t, train=tuple(tasks._sample(list(t.train), max_train)))
                                   for t in (classification, search))
    split = "validation" if validation else "test"
    print(f"package classification: {len(classification.train)} train, {len(classification.test)} "
          f"{split}, {len(classification.labels)} classes; code search: {len(search.train)} train, "
          f"{len(search.test)} {split} pairs", flush=True)

    rows: dict[str, dict] = {}
    log: dict = {"checkpoint": str(checkpoint), "split": split, "seeds": list(seeds),
                 "classification_config": asdict(cfg), "retrieval_config": asdict(retrieval_cfg)}
    tfidf = tasks.tfidf_logreg_baseline(baseline_classification)
    bm25_scores = tasks.bm25_baseline(baseline_search)
    bm25 = tasks.bm25_rankings(search, FUSION_DEPTH)
    rows["TF-IDF + logistic regression"] = {k: (v, None) for k, v in tfidf.items()}
    rows["BM25"] = {k: (v, None) for k, v in bm25_scores.items()}
    log["baselines"] = {"tfidf_logreg": tfidf, "bm25": bm25_scores}
    hybrid_runs = []
    for init, name in (("pretrained", "mini, pretrained, fine-tuned"),
                       ("random", "mini, random init, fine-tuned")):
        runs_c, runs_r = [], []
        for seed in seeds:
            runs_c.append(run_classification(classification, checkpoint, init,
                                             replace(cfg, seed=seed), tokenizer, **overrides))
            print(f"{name}, seed {seed}: classification {_brief(runs_c[-1])}", flush=True)
            result = run_retrieval(search, checkpoint, init, replace(retrieval_cfg, seed=seed),
                                   tokenizer, bm25 if init == "pretrained" else None, **overrides)
            if init == "pretrained":
                hybrid_runs.append(result.pop("hybrid"))
            runs_r.append(result)
            print(f"{name}, seed {seed}: code search {_brief(runs_r[-1])}", flush=True)
        rows[name] = {**mean_and_spread(runs_c), **mean_and_spread(runs_r)}
        log[init] = {"classification": runs_c, "retrieval": runs_r}
    rows["hybrid: pretrained bi-encoder + BM25 (RRF)"] = mean_and_spread(hybrid_runs)
    log["hybrid"] = hybrid_runs
    timing = "; ".join(
        f"{init}: classification {statistics.fmean(r['seconds'] for r in log[init]['classification']):.0f} s"
        f" ({statistics.fmean(r['cpu_seconds'] for r in log[init]['classification']):.0f} CPU s), "
        f"code search {statistics.fmean(r['seconds'] for r in log[init]['retrieval']):.0f} s"
        f" ({statistics.fmean(r['cpu_seconds'] for r in log[init]['retrieval']):.0f} CPU s)"
        for init in ("pretrained", "random"))
    for scores in rows.values():
        scores.pop("seconds", None)
        scores.pop("cpu_seconds", None)
        scores.pop("recall@1", None)

    table = markdown_table(rows)
    note = (f"Scores on the held-out {split} split; trained rows: mean ± standard deviation over "
            f"{len(seeds)} seeds, fine-tuned on {len(classification.train)} classification and "
            f"{len(search.train)} search training examples (the baselines: all "
            f"{len(baseline_classification.train)} and {len(baseline_search.train)}). "
            f"Checkpoint: {checkpoint}. Mean time per seed, wall (CPU): {timing}.")
    (out_dir / "results.md").write_text(table + "\n\n" + note + "\n")
    (out_dir / "results.json").write_text(json.dumps(log, indent=2) + "\n")
    bar_plot(rows, out_dir / "results.png")
    return table + "\n\n" + note


def _brief(result: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" if "seconds" not in k else f"{k} {v:.0f}"
                     for k, v in result.items() if isinstance(v, float))


# ----------------------------------------------------------------------------- online: GLUE
def _needs_network(what: str, error: Exception) -> RuntimeError:
    return RuntimeError(f"{what} needs the network (the Hugging Face hub), and it could not be "
                        f"reached: {type(error).__name__}: {error}. Offline, use the tasks that "
                        "work here: `python -m modernbert_mini.finetune` (make finetune).")


def finetune_glue(name: str, model_id: str | Path = BASE_MODEL,
                  cfg: FinetuneConfig = FinetuneConfig(lr=8e-5, epochs=2, max_len=512),
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
    from .runtime import detect

    model.to(detect().device)
    train_classifier(model, tokenizer, texts(train), list(train["label"]), cfg)
    logits = predict(model, tokenizer, texts(validation), cfg.max_len)
    truth = list(validation["label"])
    if regression:
        from scipy.stats import pearsonr, spearmanr

        predicted = logits[:, 0].tolist()
        return {"pearson": float(pearsonr(truth, predicted)[0]),
                "spearman": float(spearmanr(truth, predicted)[0])}
    return tasks.classification_metrics(truth, logits.argmax(-1).tolist())


# ----------------------------------------------------------------------------- the command line
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m modernbert_mini.finetune",
        description="Fine-tune ModernBERT on the offline tasks and compare it with the baselines "
                    "and with no pretraining; or, online, on GLUE.")
    parser.add_argument("--checkpoint", default="out/pretrain",
                        help="the pretrained MLM checkpoint (config.json + model.safetensors)")
    parser.add_argument("--out-dir", default="out/finetune")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--validation", action="store_true",
                        help="score on a held-out part of the training split, not on test")
    parser.add_argument("--attention-backend", default=None,
                        help="force an attention backend (default: the checkpoint's / auto)")
    parser.add_argument("--glue", default=None, choices=sorted(GLUE_TEXTS),
                        help="online: fine-tune --model on this GLUE task instead")
    parser.add_argument("--model", default=BASE_MODEL, help="with --glue: a hub id or directory")
    parser.add_argument("--max-train", type=int, default=None,
                        help=f"fine-tune on at most this many training examples per task "
                             f"(default: {MAX_TRAIN} offline, all with --glue; 0: all)")
    for f in fields(FinetuneConfig):
        if f.name not in ("seed", "progress"):
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    parser.add_argument("--retrieval-epochs", type=int, default=None,
                        help="epochs for the bi-encoder (default: --epochs)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    given = {f.name: getattr(args, f.name) for f in fields(FinetuneConfig)
             if getattr(args, f.name, None) is not None}
    if args.glue:
        cfg = replace(FinetuneConfig(lr=8e-5, max_len=512), progress=not args.no_progress, **given)
        print(json.dumps(finetune_glue(args.glue, args.model, cfg, args.max_train or None), indent=2))
        return
    if not (Path(args.checkpoint) / "model.safetensors").is_file():
        parser.error(f"{args.checkpoint} has no model.safetensors: run `make pretrain` first")
    cfg = replace(FinetuneConfig(), progress=not args.no_progress, **given)
    retrieval_cfg = replace(cfg, epochs=args.retrieval_epochs or cfg.epochs)
    overrides = {} if args.attention_backend is None else {"attention_backend": args.attention_backend}
    max_train = MAX_TRAIN if args.max_train is None else (args.max_train or None)
    print(compare(args.checkpoint, args.out_dir, args.seeds, cfg, retrieval_cfg,
                  validation=args.validation, max_train=max_train, **overrides))


if __name__ == "__main__":
    main()

"""The fine-tuning experiment of chapter 11 (`make finetune`): what pretraining buys downstream.

`python -m modernbert_mini.experiment` compares, on the test splits of the offline tasks
(`tasks.py`: package classification, code search), the baselines (TF-IDF + logistic regression,
BM25), the `make pretrain` checkpoint fine-tuned (`finetune.py`), the same architecture
fine-tuned from random initialisation, and the hybrid retriever (the bi-encoder and BM25 fused);
each trained row is the mean over seeds, with its standard deviation (results.md, results.json,
results.png). Hyperparameters are chosen with `--validation` (a held-out part of the training
split, by file), never on test. Online (e.g. Colab), `--glue sst2` fine-tunes the published
ModernBERT-base on a GLUE task.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from tokenizers import Tokenizer

import torch
from torch import nn

from . import cli, data, tasks
from . import reference as reference_module
from .finetune import (FINETUNE_OPTIM, BiEncoder, FinetuneConfig, choose_fusion_weight, embed_texts, fuse_scores,
                       load_checkpoint_tokenizer, load_encoder_checkpoint, mean_cosine, predict,
                       reciprocal_rank_fusion, top_k, train_biencoder, train_classifier)
from .model import ModernBertForSequenceClassification
from .tokenizer import load_tokenizer, to_sequences

BASE_MODEL = "answerdotai/ModernBERT-base"
FUSION_DEPTH = 100  # how deep each ranking goes into the fusion
VALIDATION_PERCENT = 8  # of the training files (about 15% of the examples): where settings are chosen
REFERENCE_EPOCHS = 1  # all-MiniLM-L6-v2's fine-tuning: one epoch on each task
CURVE_MIN_STEPS = 50  # a learning-curve run trains for at least this many steps
MAX_TRAIN = 1500  # training examples per task by default (a quick run; `make finetune` uses all)
GLUE_CONFIG = FinetuneConfig(max_len=512, optim=replace(FINETUNE_OPTIM, lr=8e-5))  # for ModernBERT-base
GLUE_TEXTS = {  # task -> its text field(s)
    "cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


# ----------------------------------------------------------------------------- the data
def holdout_validation(examples: Sequence, percent: int = VALIDATION_PERCENT) -> tuple[list, list]:
    """Split training examples by file, with the corpus's rule and its own salt
    (`data.is_heldout(path, salt="validation:")`): (train, validation). Settings are chosen on
    the validation part, never on the test split."""
    held = [data.is_heldout(e.path, salt="validation:", percent=percent) for e in examples]
    return ([e for e, h in zip(examples, held) if not h], [e for e, h in zip(examples, held) if h])


def finetuning_data(tokenizer: Tokenizer, max_len: int, validation: bool = False,
                    retrieval_max_len: int | None = None,
                    ) -> tuple[tasks.ClassificationTask, tasks.RetrievalTask]:
    """The two offline tasks as the experiment uses them: train on .train, choose on
    .validation, score on .test.

    .validation is some of the training split's files (`holdout_validation`), .train the rest;
    .test is the task's own test split (the baselines score the same examples), and from .train
    go the examples the model would see exactly as a scored one (`drop_overlap`).
    validation=True scores on .validation instead (.test is then those files), so that the real
    test split is not looked at while choosing.
    """
    out = []
    for task, cut in ((tasks.package_classification(), max_len),
                      (tasks.code_search(), retrieval_max_len or max_len)):
        train, held = holdout_validation(task.train)
        task = replace(task, train=tuple(train), validation=tuple(held))
        if validation:
            task = replace(task, test=tuple(held))
        out.append(drop_overlap(task, tokenizer, cut))
    return out[0], out[1]


def example_texts(example: tasks.LabelledText | tasks.SearchPair) -> list[str]:
    """What the model reads of an example: its text, or a search pair's query and code."""
    return [example.text] if isinstance(example, tasks.LabelledText) else [example.query, example.code]


def drop_overlap(task, tokenizer: Tokenizer, max_len: int):
    """The task without the training examples that the model, reading max_len tokens, would see
    exactly as it sees a scored one: texts that differ only after the cut are one example to it.
    (The task keeps distinct texts apart; cut to 128 tokens, two `distutils` `link` methods meet.)"""
    def cut(examples):
        texts = [t for e in examples for t in example_texts(e)]
        return [tuple(s.tolist()) for s in to_sequences(tokenizer, texts, max_len, overflow="truncate")]
    scored = set(cut(task.test))
    per = len(example_texts(task.train[0]))
    seen = cut(task.train)
    kept = [e for i, e in enumerate(task.train) if scored.isdisjoint(seen[i * per:(i + 1) * per])]
    return replace(task, train=tuple(kept))


# ----------------------------------------------------------------------------- one model, one task
def run_classification(task: tasks.ClassificationTask, make_model: Callable[[int], nn.Module],
                       cfg: FinetuneConfig, tokenizer: Tokenizer) -> dict:
    """Fine-tune make_model(cfg.seed) on task.train, score on task.test: accuracy, macro-F1,
    seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    model = make_model(cfg.seed)
    train_classifier(model, tokenizer, [e.text for e in task.train], [e.label for e in task.train],
                     cfg)
    predicted = predict(model, tokenizer, [e.text for e in task.test], cfg.max_len).argmax(-1)
    scores = tasks.classification_metrics([e.label for e in task.test], predicted.tolist())
    return {**scores, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def dense_scores(model: BiEncoder, tokenizer: Tokenizer, pairs: Sequence[tasks.SearchPair],
                 max_len: int) -> tuple[torch.Tensor, float]:
    """The cosine of every query with every document (Q, D), and the documents' mean cosine."""
    queries = embed_texts(model, tokenizer, [p.query for p in pairs], max_len)
    documents = embed_texts(model, tokenizer, [p.code for p in pairs], max_len)
    return queries @ documents.T, mean_cosine(documents)


def metrics_of(scores: torch.Tensor) -> dict:
    return tasks.retrieval_metrics(top_k(scores, FUSION_DEPTH))


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
            [top_k(after, FUSION_DEPTH), top_k(bm25["test"], FUSION_DEPTH)]))
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


# ----------------------------------------------------------------------------- tables, plots
def mean_and_spread(runs: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """metric -> (mean, sample standard deviation) over runs (0 spread for a single run)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    return {k: (statistics.fmean(r[k] for r in runs),
                statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0) for k in keys}


COLUMNS = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("mrr@10", "MRR@10"),
           ("ndcg@10", "nDCG@10"), ("recall@10", "recall@10"), ("mean_cosine", "mean cosine"))


def markdown_table(rows: dict[str, dict[str, tuple[float, float | None]]],
                   columns: Sequence[tuple[str, str]] = COLUMNS, first: str = "model") -> str:
    """One row per model, one column per metric: "0.625" or "0.612 ± 0.010", "—" where none."""
    def cell(value):
        if value is None:
            return "—"
        mean, spread = value
        return f"{mean:.3f}" if spread is None else f"{mean:.3f} ± {spread:.3f}"
    lines = [f"| {first} | " + " | ".join(title for _, title in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(cell(scores.get(key)) for key, _ in columns) + " |"
              for name, scores in rows.items()]
    return "\n".join(lines)


def bar_plot(rows: dict[str, dict[str, tuple[float, float | None]]], path: Path) -> None:
    """Grouped bars: a group per metric, a bar per model that has it, spread as error bars."""
    from .viz import file_figure

    columns = COLUMNS[:5]
    fig = file_figure(figsize=(11, 5))
    ax = fig.subplots()
    width = 0.8 / len(rows)
    for i, (name, scores) in enumerate(rows.items()):
        xs = [j for j, (key, _) in enumerate(columns) if key in scores]
        means = [scores[columns[j][0]][0] for j in xs]
        spreads = [scores[columns[j][0]][1] or 0.0 for j in xs]
        ax.bar([x + (i - (len(rows) - 1) / 2) * width for x in xs], means, width,
               yerr=spreads if any(spreads) else None, capsize=3, label=name)
    ax.set_xticks(range(len(columns)), [title for _, title in columns])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score on the held-out test split")
    ax.set_title("package classification (accuracy, macro-F1) and code search (MRR, nDCG, recall)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def curve_plot(curve: dict[str, dict[int, tuple[float, float]]], path: Path) -> None:
    """Test accuracy against the number of labelled training examples, one line per model."""
    from .viz import file_figure

    fig = file_figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for name, points in curve.items():
        sizes = sorted(points)
        ax.errorbar(sizes, [points[n][0] for n in sizes], yerr=[points[n][1] for n in sizes],
                    marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    sizes = sorted({n for points in curve.values() for n in points})
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title("package classification: what pretraining buys with few labels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------- the experiment
class RunCache:
    """Each fine-tuning run's result as a JSON file in `directory`, named by a digest of what
    made it (the model and its weights, the data, the settings, the seed): a `make finetune`
    that stopped continues where it was, and a changed setting runs again. directory=None: no
    cache."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    def get(self, what: dict, run: Callable[[], dict]) -> dict:
        if self.directory is None:
            return run()
        what = {k: ({f: v for f, v in value.items() if f != "progress"} if k == "cfg" else value)
                for k, value in what.items()}  # a progress bar changes no result
        key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = self.directory / f"{what['kind']}-{key}.json"
        if path.is_file():
            return json.loads(path.read_text())["result"]
        result = run()
        self.directory.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"what": what, "result": result}, default=str) + "\n")
        return result


def digest_of(*files: Path) -> str:
    """A short sha256 of files' bytes: which weights a run started from."""
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def data_digest(task) -> str:
    """A short sha256 of which examples a task trains, chooses and scores on."""
    parts = [[(e.path, e.name) for e in split] for split in (task.train, task.validation, task.test)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


PRETRAINED, RANDOM = "mini, pretrained, fine-tuned", "mini, random init, fine-tuned"
ZERO_SHOT = "mini, pretrained, zero-shot (no fine-tuning)"
FUSED, RRF = ("hybrid: pretrained bi-encoder + BM25, score fusion (weight on validation)",
              "hybrid: pretrained bi-encoder + BM25, RRF")
TFIDF = "TF-IDF + logistic regression"
PARTS = ("pretrained", "random", "curve", "reference")


def compare(checkpoint: str | Path, out_dir: str | Path, seeds: Sequence[int] = (0, 1, 2),
            cfg: FinetuneConfig = FinetuneConfig(), retrieval_cfg: FinetuneConfig | None = None,
            validation: bool = False, max_train: int | None = MAX_TRAIN,
            curve: Sequence[int] = (), curve_min_steps: int = CURVE_MIN_STEPS,
            reference: bool = False, cache: bool = True, only: Sequence[str] = (),
            **overrides) -> str:
    """The tables of `make finetune`. Writes results.md, results.json, results.png (and, with
    a learning curve, curve.png) to out_dir; returns results.md's text.

    - baselines (TF-IDF + logistic regression, BM25), trained on the same training files;
    - the checkpoint fine-tuned and the same architecture from random init, mean ± std over
      seeds; the pretrained bi-encoder before fine-tuning (zero-shot); the hybrids (score
      fusion, its weight chosen on the validation files; RRF); the documents' mean cosine;
    - curve: classification with this many labelled examples (a fixed sample per seed, the same
      for every model: pretrained, random init, TF-IDF), at least curve_min_steps steps each;
    - reference: all-MiniLM-L6-v2 (`reference.py`), zero-shot, then fine-tuned (first seed).

    max_train: fine-tune on at most this many training examples per task (None: all).
    validation=True scores on the validation files instead of the test split (for choosing).
    cache: keep each run's result in out_dir/runs (`RunCache`), so that a stopped run continues.
    only: run just these parts ("pretrained", "random", "curve", "reference") into the cache and
    write no table: several processes can share the runs (one thread each), and a last call
    without `only` puts the table together from the cache.
    """
    unknown = set(only) - set(PARTS)
    if unknown or (only and not cache):
        raise ValueError(f"only={list(only)} is invalid: choose among {PARTS}, with cache=True")
    parts = set(only or PARTS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    retrieval_cfg = retrieval_cfg or cfg
    tokenizer = load_checkpoint_tokenizer(checkpoint)
    classification, search = finetuning_data(tokenizer, cfg.max_len, validation, retrieval_cfg.max_len)
    baseline_classification = classification
    if max_train is not None:
        classification, search = (replace(t, train=tuple(tasks.fixed_sample(list(t.train), max_train)))
                                  for t in (classification, search))
    split = "validation" if validation else "test"
    print(f"package classification: {len(classification.train)} train, "
          f"{len(classification.validation)} validation, {len(classification.test)} {split}, "
          f"{len(classification.labels)} classes; code search: {len(search.train)} train, "
          f"{len(search.validation)} validation, {len(search.test)} {split} pairs", flush=True)

    rows: dict[str, dict] = {}
    log: dict = {"checkpoint": str(checkpoint), "split": split, "seeds": list(seeds),
                 "classification_config": asdict(cfg), "retrieval_config": asdict(retrieval_cfg)}
    tfidf = tasks.tfidf_logreg_baseline(baseline_classification)
    bm25_scores = tasks.bm25_baseline(search)
    bm25 = {name: torch.from_numpy(tasks.bm25_scores([p.query for p in pairs], [p.code for p in pairs]))
            for name, pairs in (("test", search.test), ("validation", search.validation))}
    rows[TFIDF] = {k: (v, None) for k, v in tfidf.items()}
    rows["BM25"] = {k: (v, None) for k, v in bm25_scores.items()}
    log["baselines"] = {"tfidf_logreg": tfidf, "bm25": bm25_scores}
    n_labels = len(classification.labels)
    runs = RunCache(out_dir / "runs" if cache else None)
    weights = digest_of(Path(checkpoint) / "config.json", Path(checkpoint) / "model.safetensors")
    for init, name in (("pretrained", PRETRAINED), ("random", RANDOM)):
        if init not in parts:
            continue
        runs_c, runs_r = [], []
        model_id = {"model": f"mini {init}", "weights": weights, "overrides": overrides}
        for seed in seeds:
            c_cfg, r_cfg = replace(cfg, seed=seed), replace(retrieval_cfg, seed=seed)
            runs_c.append(runs.get(
                {"kind": "classification", **model_id, "data": data_digest(classification),
                 "cfg": asdict(c_cfg)},
                lambda: run_classification(classification, mini_classifier(
                    checkpoint, init, n_labels, **overrides), c_cfg, tokenizer)))
            print(f"{name}, seed {seed}: classification {_brief(runs_c[-1])}", flush=True)
            runs_r.append(runs.get(
                {"kind": "retrieval", **model_id, "data": data_digest(search), "cfg": asdict(r_cfg),
                 "fusion": init == "pretrained"},
                lambda: run_retrieval(search, mini_encoder(checkpoint, init, **overrides), r_cfg,
                                      tokenizer, bm25 if init == "pretrained" else None)))
            print(f"{name}, seed {seed}: code search {_brief(runs_r[-1])}", flush=True)
        rows[name] = {**mean_and_spread(runs_c), **mean_and_spread(runs_r)}
        log[init] = {"classification": runs_c, "retrieval": runs_r}
    if only:  # the runs are in the cache; the table needs all of them
        if "reference" in parts and reference:
            reference_rows(classification, search, cfg, retrieval_cfg, seeds[0], log, runs)
        if "curve" in parts and curve:
            learning_curve(classification, checkpoint, cfg, tokenizer, seeds, curve,
                           curve_min_steps, log, runs, weights, **overrides)
        return f"the runs of {sorted(parts)} are in {out_dir / 'runs'}"
    pretrained_runs = log["pretrained"]["retrieval"]
    rows[ZERO_SHOT] = mean_and_spread([r["zero_shot"] for r in pretrained_runs])
    rows[FUSED] = mean_and_spread([r["fused"] for r in pretrained_runs])
    rows[RRF] = mean_and_spread([r["rrf"] for r in pretrained_runs])
    rows[FUSED].pop("weight")
    log["random_init_zero_shot"] = mean_and_spread([r["zero_shot"] for r in log["random"]["retrieval"]])

    if reference:
        rows.update(reference_rows(classification, search, cfg, retrieval_cfg, seeds[0], log, runs))
    curve_rows = learning_curve(classification, checkpoint, cfg, tokenizer, seeds, curve,
                                curve_min_steps, log, runs, weights, **overrides) if curve else {}
    if curve_rows:  # and the full training set: the rows above
        everything = len(classification.train)
        for name in (PRETRAINED, RANDOM):
            curve_rows[name][everything] = rows[name]["accuracy"]
        if len(baseline_classification.train) == everything:
            curve_rows[TFIDF][everything] = (tfidf["accuracy"], 0.0)
        curve_plot(curve_rows, out_dir / "curve.png")
        log["curve"] = {name: {str(n): v for n, v in points.items()} for name, points in curve_rows.items()}

    timing = "; ".join(
        f"{init}: classification {statistics.fmean(r['seconds'] for r in log[init]['classification']):.0f} s"
        f" ({statistics.fmean(r['cpu_seconds'] for r in log[init]['classification']):.0f} CPU s), "
        f"code search {statistics.fmean(r['seconds'] for r in log[init]['retrieval']):.0f} s"
        f" ({statistics.fmean(r['cpu_seconds'] for r in log[init]['retrieval']):.0f} CPU s)"
        for init in ("pretrained", "random"))
    for scores in rows.values():
        for key in ("seconds", "cpu_seconds", "recall@1"):
            scores.pop(key, None)

    text = markdown_table(rows)
    weights = [r["fused"]["weight"] for r in pretrained_runs]
    text += (f"\n\nScores on the held-out {split} split; trained rows: mean ± standard deviation "
             f"over {len(seeds)} seeds, fine-tuned on {len(classification.train)} classification "
             f"and {len(search.train)} search training examples (the baselines: the same "
             f"training files). Mean cosine: between the test documents' embeddings. Score "
             f"fusion weights of the bi-encoder, chosen on {len(search.validation)} validation "
             f"pairs: {weights}. Checkpoint: {checkpoint}. Mean time per seed, wall (CPU): {timing}.")
    if curve_rows:
        sizes = sorted({n for points in curve_rows.values() for n in points})
        text += "\n\nLearning curve, classification accuracy:\n\n" + markdown_table(
            curve_rows, [(n, str(n)) for n in sizes], first="labelled examples")
    (out_dir / "results.md").write_text(text + "\n")
    (out_dir / "results.json").write_text(json.dumps(log, indent=2) + "\n")
    bar_plot(rows, out_dir / "results.png")
    return text


def learning_curve(classification: tasks.ClassificationTask, checkpoint, cfg: FinetuneConfig,
                   tokenizer: Tokenizer, seeds: Sequence[int], sizes: Sequence[int],
                   min_steps: int, log: dict, runs_cache: RunCache, weights: str,
                   **overrides) -> dict[str, dict[int, tuple]]:
    """Accuracy with n labelled examples, for each n in sizes: per seed, one fixed sample of the
    training examples, on which the pretrained and the random-init model are fine-tuned and
    TF-IDF + logistic regression trained. {model: {n: (mean, std)}}."""
    runs: dict[str, dict[int, list]] = {PRETRAINED: {}, RANDOM: {}, TFIDF: {}}
    for n in sizes:
        for seed in seeds:
            subset = replace(classification, train=tuple(tasks.fixed_sample(
                list(classification.train), n, salt=f"curve {seed}:")))
            runs[TFIDF].setdefault(n, []).append(tasks.tfidf_logreg_baseline(subset))
            for init, name in (("pretrained", PRETRAINED), ("random", RANDOM)):
                c_cfg = replace(cfg, seed=seed, min_steps=min_steps)
                result = runs_cache.get(
                    {"kind": "curve", "model": f"mini {init}", "weights": weights,
                     "overrides": overrides, "data": data_digest(subset), "cfg": asdict(c_cfg)},
                    lambda: run_classification(subset, mini_classifier(
                        checkpoint, init, len(classification.labels), **overrides), c_cfg, tokenizer))
                runs[name].setdefault(n, []).append(result)
            print(f"learning curve, {n} examples, seed {seed}: " + ", ".join(
                f"{name.split(',')[0 if name == TFIDF else 1].strip()} {runs[name][n][-1]['accuracy']:.3f}"
                for name in runs), flush=True)
    log["curve_runs"] = {name: {str(n): r for n, r in per.items()} for name, per in runs.items()}
    return {name: {n: mean_and_spread(r)["accuracy"] for n, r in per.items()}
            for name, per in runs.items()}


def reference_rows(classification: tasks.ClassificationTask, search: tasks.RetrievalTask,
                   cfg: FinetuneConfig, retrieval_cfg: FinetuneConfig, seed: int, log: dict,
                   runs: RunCache) -> dict:
    """all-MiniLM-L6-v2: retrieval zero-shot (it was trained as a sentence encoder on about a
    billion pairs), and classification fine-tuned with the same code and settings as the mini
    model, its own tokenizer, but one seed and one epoch (REFERENCE_EPOCHS): it is four times the
    mini model's compute a token."""
    if reference_module.minilm_dir() is None:
        raise FileNotFoundError(f"the reference row needs {reference_module.NAME}: "
                                f"{reference_module.INSTALL} (make finetune installs it)")
    _, tokenizer = reference_module.load_minilm()
    weights = digest_of(reference_module.minilm_dir() / "model.safetensors")
    c_cfg = replace(cfg, seed=seed, epochs=REFERENCE_EPOCHS)
    r_cfg = replace(retrieval_cfg, seed=seed, epochs=REFERENCE_EPOCHS)
    zero_shot = runs.get({"kind": "zero-shot", "model": reference_module.NAME, "weights": weights,
                          "data": data_digest(search), "max_len": retrieval_cfg.max_len},
                         lambda: zero_shot_retrieval(search, BiEncoder(reference_module.load_minilm()[0]),
                                                     tokenizer, retrieval_cfg.max_len))
    c = runs.get({"kind": "classification", "model": reference_module.NAME, "weights": weights,
                  "data": data_digest(classification), "cfg": asdict(c_cfg)},
                 lambda: run_classification(classification, lambda s: reference_module.MeanPoolClassifier(
                     reference_module.load_minilm()[0], len(classification.labels), s), c_cfg, tokenizer))
    print(f"{reference_module.NAME}: classification {_brief(c)}; code search, zero-shot "
          f"{_brief(zero_shot)}", flush=True)
    log["reference"] = {"model": reference_module.NAME, "classification": c, "zero_shot": zero_shot}
    name = reference_module.NAME
    def one_run(*results):  # no spread to show: one seed
        return {k: (v, None) for result in results for k, v in result.items() if isinstance(v, float)}
    return {f"{name} (22.7M parameters), zero-shot": one_run(zero_shot),
            f"{name}, fine-tuned ({REFERENCE_EPOCHS} epoch, seed {seed})": one_run(c)}


def _brief(result: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" if "seconds" not in k else f"{k} {v:.0f}"
                     for k, v in result.items() if isinstance(v, float))


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
        prog="python -m modernbert_mini.experiment",
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
    cli.add_fields(parser, FinetuneConfig, skip=("seed",), unset=True)  # unset: the task's default
    parser.add_argument("--retrieval-epochs", type=int, default=None,
                        help="epochs for the bi-encoder (default: --epochs)")
    parser.add_argument("--curve", type=int, nargs="*", default=[],
                        help="learning curve: classification with these many labelled examples")
    parser.add_argument("--curve-min-steps", type=int, default=CURVE_MIN_STEPS,
                        help="the least steps of a learning-curve run")
    parser.add_argument("--only", nargs="+", default=[], choices=PARTS,
                        help="run only these parts into out-dir/runs, writing no table (to share "
                             "the work among processes; a last run without it writes the table)")
    parser.add_argument("--reference", action="store_true",
                        help=f"add {reference_module.NAME} ({reference_module.INSTALL})")
    args = parser.parse_args(argv)

    given = cli.given(args, FinetuneConfig)
    if args.glue:
        cfg = cli.build(GLUE_CONFIG, given)
        print(json.dumps(finetune_glue(args.glue, args.model, cfg, args.max_train or None), indent=2))
        return
    if not (Path(args.checkpoint) / "model.safetensors").is_file():
        parser.error(f"{args.checkpoint} has no model.safetensors: run `make pretrain` first")
    cfg = cli.build(FinetuneConfig(), given)
    retrieval_cfg = replace(cfg, epochs=args.retrieval_epochs or cfg.epochs)
    overrides = {} if args.attention_backend is None else {"attention_backend": args.attention_backend}
    max_train = MAX_TRAIN if args.max_train is None else (args.max_train or None)
    print(compare(args.checkpoint, args.out_dir, args.seeds, cfg, retrieval_cfg,
                  validation=args.validation, max_train=max_train, curve=args.curve,
                  curve_min_steps=args.curve_min_steps, reference=args.reference, only=args.only,
                  **overrides))


if __name__ == "__main__":
    main()

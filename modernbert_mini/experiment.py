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
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from tokenizers import Tokenizer

from . import cli, data, tasks
from .finetune import (BiEncoder, FinetuneConfig, embed_texts, load_checkpoint_tokenizer,
                       load_encoder_checkpoint, predict, rank, reciprocal_rank_fusion,
                       train_biencoder, train_classifier)
from .model import ModernBertForSequenceClassification
from .tokenizer import load_tokenizer, to_sequences

BASE_MODEL = "answerdotai/ModernBERT-base"
FUSION_DEPTH = 100  # how deep each ranking goes into the fusion
VALIDATION_FRACTION = 0.15  # of the training files, with --validation
MAX_TRAIN = 1500  # training examples per task by default (a quick run; `make finetune` uses all)
GLUE_TEXTS = {  # task -> its text field(s)
    "cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


# ----------------------------------------------------------------------------- the data
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
        return [tuple(s.tolist()) for s in to_sequences(tokenizer, texts, max_len, overflow="truncate")]
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
        classification, search = (replace(t, train=tuple(tasks.fixed_sample(list(t.train), max_train)))
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
                        "work here: `python -m modernbert_mini.experiment` (make finetune).")


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
    args = parser.parse_args(argv)

    given = cli.given(args, FinetuneConfig)
    if args.glue:
        cfg = replace(FinetuneConfig(lr=8e-5, max_len=512), **given)
        print(json.dumps(finetune_glue(args.glue, args.model, cfg, args.max_train or None), indent=2))
        return
    if not (Path(args.checkpoint) / "model.safetensors").is_file():
        parser.error(f"{args.checkpoint} has no model.safetensors: run `make pretrain` first")
    cfg = replace(FinetuneConfig(), **given)
    retrieval_cfg = replace(cfg, epochs=args.retrieval_epochs or cfg.epochs)
    overrides = {} if args.attention_backend is None else {"attention_backend": args.attention_backend}
    max_train = MAX_TRAIN if args.max_train is None else (args.max_train or None)
    print(compare(args.checkpoint, args.out_dir, args.seeds, cfg, retrieval_cfg,
                  validation=args.validation, max_train=max_train, **overrides))


if __name__ == "__main__":
    main()

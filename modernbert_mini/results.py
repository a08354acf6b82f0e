"""The results of the fine-tuning study of chapter 11 (`experiment.compare`): how each run's
result is kept (`RunCache`: a file per run, named by a digest of what made it, so a stopped
`make finetune` continues), and how they are reported: each trained row the mean and sample
standard deviation over seeds (`mean_and_spread`), a markdown table with a row per model and a
column per metric (`markdown_table`), and the figures, grouped bars per metric (`bar_plot`,
results.png) and test accuracy against the number of labelled examples (`curve_plot`,
curve.png)."""

from __future__ import annotations

import hashlib
import json
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
    from .viz import file_figure  # IPython, matplotlib: imported to draw, not with the package

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

"""The fine-tuning experiment of chapter 11 (`make finetune`): what pretraining buys downstream.

`python -m modernbert_mini.experiment` compares, on the test splits of the offline tasks
(`tasks.py`: package classification, code search), the baselines (TF-IDF + logistic regression,
BM25), the `make pretrain` checkpoint fine-tuned (`finetune.py`), the same architecture
fine-tuned from random initialisation, and the hybrid retriever (the bi-encoder and BM25 fused);
each trained row is the mean over seeds, with its standard deviation, beside the test set's
sampling error, a bootstrap over test items and the paired differences between rows
(results.md, results.json, results.png; every run keeps its per-item outcomes for the
bootstrap). Settings are chosen on the validation files (a held-out part of the training split,
by file), never on test: the learning curve's least number of steps (`choose_curve_steps`), the
reference model's learning rate, the fusion weight; `--validation` scores a whole run there.
Online (e.g. Colab), `--glue sst2` fine-tunes the published ModernBERT-base on a GLUE task
(`finetune.finetune_glue`).

`compare` puts the study together from parts that share a `Study`: `prepare` (the tasks),
`baselines`, `fine_tuned` (one row, every seed; each run through `finetune.run_classification`
and `run_retrieval`, kept in a `results.RunCache`; the zero-shot and hybrid scores ride along in
each retrieval run), `choose_curve_steps` and `learning_curve`, `reference_rows`,
`write_results` (results.json; then
`results.write_report` makes the tables and figures from it alone, as
`python -m modernbert_mini.results --render` does again later).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tokenizers import Tokenizer

from . import cli, tasks
from . import reference as reference_module
from .checkpoint import load_checkpoint_tokenizer
from .config import ModernBertConfig
from .finetune import (BASE_MODEL, GLUE_CONFIG, GLUE_TEXTS, BiEncoder, FinetuneConfig,
                       epochs_for, finetune_glue, mini_classifier, mini_encoder, run_classification,
                       run_retrieval, zero_shot_retrieval)
from .results import (FUSED, PRETRAINED, RANDOM, RANDOM_ZERO_SHOT, RRF, TFIDF,  # noqa: F401
                      ZERO_SHOT, RunCache, curve_plot, data_digest, digest_of, mean_and_spread,
                      write_report)
from .tasks import finetuning_data

REFERENCE_EPOCHS = 1  # all-MiniLM-L6-v2's fine-tuning: one epoch on each task
CURVE_MIN_STEPS = (50,)  # a learning-curve run trains for at least this many steps (several:
# the one best on the validation files, per model and size)
MAX_TRAIN = 1500  # training examples per task by default (a quick run; `make finetune` uses all)


# ----------------------------------------------------------------------------- the experiment
# the rows' names (PRETRAINED, RANDOM, TFIDF, ...) are results.py's, which writes the table
PARTS = ("pretrained", "random", "curve", "reference")


@dataclass
class Study:
    """What the parts of `compare` share: the checkpoint, its weights' digest and tokenizer, the
    tasks (`everything`: classification before max_train, as the baselines train on it), the
    settings and seeds, the run cache, the model's config overrides, and the log it fills.
    A random-init run's cache key is the model's config, not the checkpoint's weights: it does
    not start from them."""

    checkpoint: str | Path
    weights: str
    tokenizer: Tokenizer
    classification: tasks.ClassificationTask
    search: tasks.RetrievalTask
    everything: tasks.ClassificationTask
    cfg: FinetuneConfig
    retrieval_cfg: FinetuneConfig
    seeds: Sequence[int]
    runs: RunCache
    overrides: dict
    log: dict

    def run(self, kind: str, init: str, task, cfg: FinetuneConfig, run: Callable[[], dict],
            **what) -> dict:
        """A mini-model run's result, from the cache when it holds one."""
        weights = self.weights if init == "pretrained" else \
            ModernBertConfig.from_pretrained(self.checkpoint, **self.overrides).to_hf_dict()
        return self.runs.get({"kind": kind, "model": f"mini {init}", "weights": weights,
                              "overrides": self.overrides, "data": data_digest(task),
                              "cfg": asdict(cfg), **what}, run)


def compare(checkpoint: str | Path, out_dir: str | Path, seeds: Sequence[int] = (0, 1, 2),
            cfg: FinetuneConfig = FinetuneConfig(), retrieval_cfg: FinetuneConfig | None = None,
            validation: bool = False, max_train: int | None = MAX_TRAIN,
            curve: Sequence[int] = (), curve_min_steps: Sequence[int] = CURVE_MIN_STEPS,
            curve_seeds: Sequence[int] | None = None, reference: bool = False,
            reference_lrs: Sequence[float] = (), cache: bool = True, only: Sequence[str] = (),
            inits: Sequence[str] = ("pretrained", "random"), **overrides) -> str:
    """The tables of `make finetune`. Writes results.md, results.json, results.png (and, with
    a learning curve, curve.png) to out_dir; returns results.md's text.

    - baselines (TF-IDF + logistic regression, BM25), trained on the same training files;
    - the checkpoint fine-tuned and the same architecture from random init, mean ± std over
      seeds; the pretrained bi-encoder before fine-tuning (zero-shot); the hybrids (score
      fusion, its weight chosen on the validation files; RRF); the documents' mean cosine;
    - curve: classification with this many labelled examples (a fixed sample per seed of
      curve_seeds, default seeds, the same for every model: pretrained, random init, TF-IDF), at
      least curve_min_steps steps each; given several, the one best on the validation files for
      each model and size (`choose_curve_steps`, first seed), shown in the report;
    - reference: all-MiniLM-L6-v2 (`reference.py`), zero-shot, then fine-tuned (first seed), its
      learning rate the best of reference_lrs on the validation files (none given: the mini's).

    max_train: fine-tune on at most this many training examples per task (None: all).
    validation=True scores on the validation files instead of the test split (for choosing).
    cache: keep each run's result in out_dir/runs (`RunCache`), so that a stopped run continues.
    only: run just these parts ("pretrained", "random", "curve", "reference") into the cache and
    write no table: several processes can share the runs (one thread each), and a last call
    without `only` puts the table together from the cache. inits: with `only`, the curve's and
    the table's runs of these inits alone (the random-init runs need no pretrained weights).
    """
    unknown = set(only) - set(PARTS)
    if unknown or (only and not cache):
        raise ValueError(f"only={list(only)} is invalid: choose among {PARTS}, with cache=True")
    parts = set(only or PARTS)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = RunCache(out_dir / "runs" if cache else None)
    study = prepare(checkpoint, seeds, cfg, retrieval_cfg or cfg, validation, max_train, runs,
                    overrides)
    needs_choice = (curve and len(curve_min_steps) > 1) or (reference and reference_lrs)
    on_validation = (prepare(checkpoint, seeds, cfg, retrieval_cfg or cfg, True, max_train, runs,
                             overrides) if needs_choice and not validation else study)
    rows, bm25 = baselines(study)
    inits = inits if only else ("pretrained", "random")
    for init, name in (("pretrained", PRETRAINED), ("random", RANDOM)):
        if init in parts and init in inits:
            rows[name] = fine_tuned(study, init, name, bm25)
    curve_seeds = list(curve_seeds or seeds)

    def curve_part():
        steps = choose_curve_steps(on_validation, study, curve, curve_min_steps, curve_seeds[0],
                                   inits)
        return learning_curve(study, curve, steps, curve_seeds, inits)
    if only:  # the runs are in the cache; the table needs all of them
        if "reference" in parts and reference:
            reference_rows(study, on_validation, reference_lrs)
        if "curve" in parts and curve:
            curve_part()
        return f"the runs of {sorted(parts)} are in {out_dir / 'runs'}"
    if reference:
        reference_rows(study, on_validation, reference_lrs)
    curve_rows = curve_part() if curve else {}
    if curve_rows:  # and the full training set: the rows above
        curve_rows = with_everything(study, curve_rows, rows)
        curve_plot(curve_rows, out_dir / "curve.png")
    return write_results(study, out_dir)


def prepare(checkpoint: str | Path, seeds: Sequence[int], cfg: FinetuneConfig,
            retrieval_cfg: FinetuneConfig, validation: bool, max_train: int | None,
            runs: RunCache, overrides: dict) -> Study:
    """The checkpoint's tokenizer, the tasks (`finetuning_data`, at most max_train
    training examples each) and the log's header."""
    tokenizer = load_checkpoint_tokenizer(checkpoint)
    everything, search = finetuning_data(tokenizer, cfg.max_len, validation, retrieval_cfg.max_len)
    classification = everything
    if max_train is not None:
        classification, search = (replace(t, train=tuple(tasks.fixed_sample(list(t.train), max_train)))
                                  for t in (classification, search))
    split = "validation" if validation else "test"
    print(f"package classification: {len(classification.train)} train, "
          f"{len(classification.validation)} validation, {len(classification.test)} {split}, "
          f"{len(classification.labels)} classes; code search: {len(search.train)} train, "
          f"{len(search.validation)} validation, {len(search.test)} {split} pairs", flush=True)
    log = {"checkpoint": str(checkpoint), "split": split, "seeds": list(seeds),
           "classification_config": asdict(cfg), "retrieval_config": asdict(retrieval_cfg)}
    weights = digest_of(Path(checkpoint) / "config.json", Path(checkpoint) / "model.safetensors")
    return Study(checkpoint, weights, tokenizer, classification, search, everything, cfg,
                 retrieval_cfg, seeds, runs, overrides, log)


def baselines(study: Study) -> tuple[dict, dict[str, torch.Tensor]]:
    """The rows of TF-IDF + logistic regression (on every training example) and BM25; and
    BM25's score matrices of the test and validation pairs, which the hybrids fuse."""
    tfidf = tasks.tfidf_logreg_baseline(study.everything, per_item=True)
    bm25 = tasks.bm25_baseline(study.search, per_item=True)
    study.log["baselines"] = {"tfidf_logreg": tfidf, "bm25": bm25}
    matrices = {name: torch.from_numpy(tasks.bm25_scores([p.query for p in pairs],
                                                         [p.code for p in pairs]))
                for name, pairs in (("test", study.search.test),
                                    ("validation", study.search.validation))}
    return {TFIDF: {k: (v, None) for k, v in tfidf.items()},
            "BM25": {k: (v, None) for k, v in bm25.items()}}, matrices


def fine_tuned(study: Study, init: str, name: str, bm25: dict | None) -> dict:
    """The mini model from `init` fine-tuned on both tasks, every seed (with bm25's matrices,
    the hybrids too): its row, each metric's mean and spread over the seeds."""
    runs_c, runs_r = [], []
    classifier = mini_classifier(study.checkpoint, init, len(study.classification.labels),
                                 **study.overrides)
    encoder = mini_encoder(study.checkpoint, init, **study.overrides)
    for seed in study.seeds:
        c_cfg, r_cfg = replace(study.cfg, seed=seed), replace(study.retrieval_cfg, seed=seed)
        runs_c.append(study.run("classification", init, study.classification, c_cfg,
                                lambda: run_classification(study.classification, classifier,
                                                           c_cfg, study.tokenizer)))
        print(f"{name}, seed {seed}: classification {_brief(runs_c[-1])}", flush=True)
        runs_r.append(study.run("retrieval", init, study.search, r_cfg,
                                lambda: run_retrieval(study.search, encoder, r_cfg,
                                                      study.tokenizer, bm25),
                                fusion=bm25 is not None))
        print(f"{name}, seed {seed}: code search {_brief(runs_r[-1])}", flush=True)
    study.log[init] = {"classification": runs_c, "retrieval": runs_r}
    return {**mean_and_spread(runs_c), **mean_and_spread(runs_r)}


def with_everything(study: Study, curve_rows: dict, rows: dict) -> dict:
    """The learning curve with its last point, every training example: the rows of the table
    (TF-IDF's where it trained on as many)."""
    everything = len(study.classification.train)
    for name in (PRETRAINED, RANDOM):
        curve_rows[name][everything] = rows[name]["accuracy"]
    if len(study.everything.train) == everything:
        curve_rows[TFIDF][everything] = (study.log["baselines"]["tfidf_logreg"]["accuracy"], 0.0)
    study.log["curve"] = {name: {str(n): v for n, v in points.items()}
                          for name, points in curve_rows.items()}
    return curve_rows


def write_results(study: Study, out_dir: Path) -> str:
    """results.json (the log, with the splits' sizes) and, from it alone, results.md and
    results.png (`results.write_report`: every row the log holds, the test set's sampling error,
    the paired differences); returns results.md's text."""
    log = study.log
    log["sizes"] = {name: {"train": len(t.train), "validation": len(t.validation),
                           "test": len(t.test)}
                    for name, t in (("classification", study.classification),
                                    ("search", study.search))}
    (out_dir / "results.json").write_text(json.dumps(log, indent=2) + "\n")
    return write_report(log, out_dir)


def choose_curve_steps(on_validation: Study, study: Study, sizes: Sequence[int],
                       grid: Sequence[int], seed: int,
                       inits: Sequence[str]) -> dict[str, dict[int, int]]:
    """The least number of steps of each learning-curve point, per model and size: the value of
    grid with the best validation accuracy (the smaller on a tie), fine-tuned on the seed's
    labelled sample and scored on the validation files; one value: that one. The choice is
    logged in study.log["curve_choice"]. {model: {size: steps}}."""
    names = [(init, name) for init, name in (("pretrained", PRETRAINED), ("random", RANDOM))
             if init in inits]
    if len(grid) == 1:
        return {name: {n: grid[0] for n in sizes} for _, name in names}
    chosen, log = {}, {}
    for init, name in names:
        for n in sizes:
            accuracy, by_epochs = {}, {}
            for m in grid:  # two values that give the same number of epochs: one run
                epochs = epochs_for(n, replace(study.cfg, min_steps=m))
                if epochs not in by_epochs:
                    by_epochs[epochs] = curve_run(on_validation, init, n, seed, m)["accuracy"]
                accuracy[m] = by_epochs[epochs]
            best = max(grid, key=lambda m: (accuracy[m], -m))
            chosen.setdefault(name, {})[n] = best
            log.setdefault(name, {})[str(n)] = {"validation_accuracy": {str(m): a for m, a in
                                                                         accuracy.items()},
                                                "chosen": best}
            print(f"learning curve, {name}, {n} examples: least steps {best} (validation "
                  f"accuracy {', '.join(f'{m}: {a:.3f}' for m, a in accuracy.items())})", flush=True)
    study.log["curve_choice"], study.log["curve_choice_seed"] = log, seed
    return chosen


def curve_sample(study: Study, n: int, seed: int) -> tasks.ClassificationTask:
    """Seed's fixed sample of n labelled training examples (the same for every model)."""
    classification = study.classification
    return replace(classification, train=tuple(tasks.fixed_sample(
        list(classification.train), n, salt=f"curve {seed}:")))


def curve_run(study: Study, init: str, n: int, seed: int, min_steps: int) -> dict:
    """The mini model from init fine-tuned on seed's sample of n examples, at least min_steps."""
    subset = curve_sample(study, n, seed)
    c_cfg = replace(study.cfg, seed=seed, min_steps=min_steps)
    model = mini_classifier(study.checkpoint, init, len(subset.labels), **study.overrides)
    return study.run("curve", init, subset, c_cfg,
                     lambda: run_classification(subset, model, c_cfg, study.tokenizer))


def learning_curve(study: Study, sizes: Sequence[int], steps: dict[str, dict[int, int]],
                   seeds: Sequence[int], inits: Sequence[str] = ("pretrained", "random"),
                   ) -> dict[str, dict[int, tuple]]:
    """Accuracy with n labelled examples, for each n in sizes: per seed, one fixed sample of the
    training examples, on which the pretrained and the random-init model are fine-tuned (at
    least steps[model][n] steps) and TF-IDF + logistic regression trained.
    {model: {n: (mean, std)}}."""
    runs: dict[str, dict[int, list]] = {name: {} for init, name in (
        ("pretrained", PRETRAINED), ("random", RANDOM)) if init in inits}
    runs[TFIDF] = {}
    for n in sizes:
        for seed in seeds:
            runs[TFIDF].setdefault(n, []).append(tasks.tfidf_logreg_baseline(
                curve_sample(study, n, seed), per_item=True))
            for init, name in (("pretrained", PRETRAINED), ("random", RANDOM)):
                if init in inits:
                    runs[name].setdefault(n, []).append(
                        curve_run(study, init, n, seed, steps[name][n]))
            print(f"learning curve, {n} examples, seed {seed}: " + ", ".join(
                f"{name.split(',')[0 if name == TFIDF else 1].strip()} {runs[name][n][-1]['accuracy']:.3f}"
                for name in runs), flush=True)
    study.log["curve_seeds"] = list(seeds)
    study.log["curve_runs"] = {name: {str(n): r for n, r in per.items()} for name, per in runs.items()}
    return {name: {n: mean_and_spread(r)["accuracy"] for n, r in per.items()}
            for name, per in runs.items()}


def reference_rows(study: Study, on_validation: Study, lrs: Sequence[float] = ()) -> dict:
    """all-MiniLM-L6-v2: retrieval zero-shot (it was trained contrastively on about a billion
    pairs, CodeSearchNet's among them: `results.REFERENCE_TRAINING`), and classification
    fine-tuned with the same code and settings as the mini model but its own tokenizer, one
    seed and one epoch (REFERENCE_EPOCHS: it is four times the mini model's compute a token),
    and its learning rate the one of lrs best on the validation files (none given: the mini
    model's). Its entry of the log."""
    name, seed = reference_module.NAME, study.seeds[0]
    if reference_module.minilm_dir() is None:
        raise FileNotFoundError(f"the reference row needs {name}: {reference_module.INSTALL} "
                                "(make finetune installs it)")
    _, tokenizer = reference_module.load_minilm()
    weights = digest_of(reference_module.minilm_dir() / "model.safetensors")
    max_len, labels = study.retrieval_cfg.max_len, len(study.classification.labels)
    zero_shot = study.runs.get(
        {"kind": "zero-shot", "model": name, "weights": weights,
         "data": data_digest(study.search), "max_len": max_len},
        lambda: zero_shot_retrieval(study.search, BiEncoder(reference_module.load_minilm()[0]),
                                    tokenizer, max_len))

    def classification(on: Study, lr: float) -> dict:
        c_cfg = replace(on.cfg, seed=seed, epochs=REFERENCE_EPOCHS,
                        optim=replace(on.cfg.optim, lr=lr))
        return on.runs.get(
            {"kind": "classification", "model": name, "weights": weights,
             "data": data_digest(on.classification), "cfg": asdict(c_cfg)},
            lambda: run_classification(on.classification, lambda s: reference_module.MeanPoolClassifier(
                reference_module.load_minilm()[0], labels, s), c_cfg, tokenizer))
    entry = {"model": name, "epochs": REFERENCE_EPOCHS, "seed": seed}
    lr = study.cfg.optim.lr
    if lrs:
        accuracy = {}
        for candidate in lrs:
            accuracy[candidate] = classification(on_validation, candidate)["accuracy"]
            print(f"{name}: lr {candidate:g}, validation accuracy {accuracy[candidate]:.3f}",
                  flush=True)
        lr = max(lrs, key=lambda x: accuracy[x])
        entry.update(lr=lr, lr_choice={f"{x:g}": a for x, a in accuracy.items()})
    c = classification(study, lr)
    print(f"{name}: classification {_brief(c)}; code search, zero-shot {_brief(zero_shot)}",
          flush=True)
    study.log["reference"] = {**entry, "classification": c, "zero_shot": zero_shot}
    return study.log["reference"]


def _brief(result: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" if "seconds" not in k else f"{k} {v:.0f}"
                     for k, v in result.items() if isinstance(v, float))


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
    parser.add_argument("--curve-min-steps", type=int, nargs="+", default=list(CURVE_MIN_STEPS),
                        help="the least steps of a learning-curve run (several: the best on "
                             "the validation files, per model and size)")
    parser.add_argument("--curve-seeds", type=int, nargs="+", default=None,
                        help="the learning curve's seeds (default: --seeds)")
    parser.add_argument("--only", nargs="+", default=[], choices=PARTS,
                        help="run only these parts into out-dir/runs, writing no table (to share "
                             "the work among processes; a last run without it writes the table)")
    parser.add_argument("--reference", action="store_true",
                        help=f"add {reference_module.NAME} ({reference_module.INSTALL})")
    parser.add_argument("--reference-lrs", type=float, nargs="+", default=[],
                        help="its learning rates to choose from on the validation files "
                             "(default: the mini model's --lr)")
    parser.add_argument("--inits", nargs="+", default=["pretrained", "random"],
                        choices=["pretrained", "random"],
                        help="with --only: the runs of these inits alone")
    parser.add_argument("--attention-dropout", type=float, default=None,
                        help="the fine-tuned model's attention dropout (default: the checkpoint's)")
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
    overrides = {key: value for key, value in (("attention_backend", args.attention_backend),
                                               ("attention_dropout", args.attention_dropout))
                 if value is not None}
    max_train = MAX_TRAIN if args.max_train is None else (args.max_train or None)
    print(compare(args.checkpoint, args.out_dir, args.seeds, cfg, retrieval_cfg,
                  validation=args.validation, max_train=max_train, curve=args.curve,
                  curve_min_steps=args.curve_min_steps, curve_seeds=args.curve_seeds,
                  reference=args.reference, reference_lrs=args.reference_lrs, only=args.only,
                  inits=args.inits, **overrides))


if __name__ == "__main__":
    main()

"""results.py: the report of chapter 11's study, checked by hand and against the log it reads.

The paired interval and the binomial standard error are worked out by hand on made-up numbers;
the report of a made-up log and of the committed `make finetune` log must show every metric of
every run the log holds, and the committed results.md must be what the code renders from the
committed results.json (it is regenerated, never edited)."""

import json
import math
import re
from pathlib import Path

import pytest

from modernbert_mini import results

FINETUNE = Path(results.__file__).parent / "assets" / "finetune"
NOT_SCORES = ("seconds", "cpu_seconds", "weight")  # in the notes below the table, not columns


def test_paired_interval_by_hand():
    # differences 0.1, 0.2, 0.3: mean 0.2, sample sd 0.1, t(0.975, df 2) = 4.303
    i = results.paired_interval([0.5, 0.6, 0.7], [0.4, 0.4, 0.4])
    half = 4.303 * 0.1 / math.sqrt(3)  # 0.2484
    assert i["differences"] == pytest.approx([0.1, 0.2, 0.3])
    assert (i["mean"], i["low"], i["high"]) == pytest.approx((0.2, 0.2 - half, 0.2 + half))
    assert results.reading(i, "pretrained", "random") == "not distinguishable here"  # 0 inside
    assert results.paired_interval([0.5, 0.6, 0.7], 0.4)["low"] == pytest.approx(0.2 - half)
    # differences 0.30, 0.31, 0.32: sd 0.01, half 0.0248, the interval clear of 0
    ahead = results.paired_interval([0.7, 0.71, 0.72], [0.4, 0.4, 0.4])
    assert ahead["low"] == pytest.approx(0.31 - 4.303 * 0.01 / math.sqrt(3))
    assert results.reading(ahead, "pretrained", "random") == "pretrained higher"
    behind = results.paired_interval([0.4, 0.4, 0.4], [0.7, 0.71, 0.72])
    assert results.reading(behind, "pretrained", "random") == "random higher"
    one = results.paired_interval([0.5], [0.4])  # one seed: a difference, no interval
    assert one["low"] is None and results.reading(one, "a", "b") == "not distinguishable here"
    with pytest.raises(ValueError, match="seed by seed"):
        results.paired_interval([0.5, 0.6], [0.4])
    assert results.t_quantile_95(4) == 2.776  # 5 seeds
    with pytest.raises(ValueError, match="df=0"):
        results.t_quantile_95(0)


def test_binomial_standard_error_by_hand():
    assert results.binomial_se(0.6, 1000) == pytest.approx(math.sqrt(0.6 * 0.4 / 1000))  # 0.0155
    assert results.binomial_se(0.594, 971) == pytest.approx(0.01576, abs=1e-5)


def run(**scores):
    return {**scores, "seconds": 10.0, "cpu_seconds": 8.0}


def made_up_log(seeds=(0, 1, 2)):
    """A log shaped as `make finetune` writes it, with made-up numbers that differ by seed."""
    def retrieval(k, fused):
        r = run(**{"mrr@10": 0.2 + k, "ndcg@10": 0.25 + k, "recall@1": 0.15 + k,
                   "recall@10": 0.4 + k, "mean_cosine": 0.1 + k,
                   "zero_shot": {"mrr@10": 0.05 + k, "ndcg@10": 0.06 + k, "recall@1": 0.03 + k,
                                 "recall@10": 0.11 + k, "mean_cosine": 0.8 + k}})
        if fused:
            r["fused"] = {"mrr@10": 0.45 + k, "ndcg@10": 0.5 + k, "recall@1": 0.33 + k,
                          "recall@10": 0.7 + k, "weight": 0.7,
                          "validation_mrr@10": {"0.0": 0.4, "0.7": 0.5, "1.0": 0.2}}
            r["rrf"] = {"mrr@10": 0.38 + k, "ndcg@10": 0.44 + k, "recall@1": 0.27 + k,
                        "recall@10": 0.63 + k}
        return r
    ks = [0.01 * s for s in range(len(seeds))]
    return {
        "checkpoint": "out/pretrain", "split": "test", "seeds": list(seeds),
        "classification_config": {"max_len": 64, "optim": {"lr": 3e-4}},
        "retrieval_config": {"max_len": 64, "optim": {"lr": 3e-4}},
        "baselines": {"tfidf_logreg": {"accuracy": 0.6, "macro_f1": 0.56},
                      "bm25": {"mrr@10": 0.42, "ndcg@10": 0.48, "recall@1": 0.31, "recall@10": 0.65}},
        "pretrained": {"classification": [run(accuracy=0.59 + k, macro_f1=0.55 + k) for k in ks],
                       "retrieval": [retrieval(k, True) for k in ks]},
        "random": {"classification": [run(accuracy=0.55 + 2 * k, macro_f1=0.52 + k) for k in ks],
                   "retrieval": [retrieval(k / 2, False) for k in ks]},
        "reference": {"model": "all-MiniLM-L6-v2", "epochs": 1, "seed": 0,
                      "classification": run(accuracy=0.594, macro_f1=0.56),
                      "zero_shot": {"mrr@10": 0.54, "ndcg@10": 0.6, "recall@1": 0.43,
                                    "recall@10": 0.77, "mean_cosine": 0.24}},
        "curve_runs": {name: {"100": [run(accuracy=a + k, macro_f1=a - 0.05 + k) for k in ks]}
                       for name, a in ((results.PRETRAINED, 0.37), (results.RANDOM, 0.24),
                                       (results.TFIDF, 0.33))},
        "curve": {name: {"100": [0.3, 0.01], "2937": [0.5, 0.01]}
                  for name in (results.PRETRAINED, results.RANDOM, results.TFIDF)},
        "sizes": {"classification": {"train": 2937, "validation": 567, "test": 971},
                  "search": {"train": 4170, "validation": 705, "test": 1141}},
    }


def rows_of(log):
    """(name in the table, a run) for every run the log holds, each metric of it to be shown."""
    for name, key in ((results.TFIDF, "tfidf_logreg"), ("BM25", "bm25")):
        yield name, log["baselines"][key]
    for init, name, zero in (("pretrained", results.PRETRAINED, results.ZERO_SHOT),
                             ("random", results.RANDOM, results.RANDOM_ZERO_SHOT)):
        for r in log[init]["classification"] + log[init]["retrieval"]:
            yield name, r
        for r in log[init]["retrieval"]:
            yield zero, r["zero_shot"]
            if "fused" in r:
                yield results.FUSED, r["fused"]
                yield results.RRF, r["rrf"]
    for key in ("zero_shot", "classification"):
        yield "all-MiniLM-L6-v2, " + ("zero-shot" if key == "zero_shot" else "fine-tuned"), \
            log["reference"][key]


def table_cells(text):
    """The main table of results.md: {row name: {column title: cell}}."""
    lines = text.split("\n\n")[0].splitlines()
    titles = [t.strip() for t in lines[0].strip("|").split("|")][1:]
    table = {}
    for line in lines[2:]:
        name, *cells = [c.strip() for c in line.strip("|").split("|")]
        table[name] = dict(zip(titles, cells))
    return table


def check_every_key_reaches_the_table(log, text):
    table, titles = table_cells(text), dict(results.COLUMNS)
    rows = results.table_rows(log)
    for name, r in rows_of(log):
        shown = next(row for row in table if row.startswith(name))
        for key, value in r.items():
            if not isinstance(value, float) or key in NOT_SCORES:
                continue
            assert key in titles, f"{key} of {name} has no column"
            cell = table[shown][titles[key]]
            assert cell.split(" ± ")[0] == f"{rows[shown][key][0]:.3f}", (name, key, cell)
    for init in ("pretrained", "random"):  # the times and the fusion weight, in the notes
        assert f"{init}: classification" in text
    assert "Score fusion weights" in text and "validation MRR@10 at that weight" in text


def test_every_key_of_a_made_up_log_reaches_the_table_and_the_comparisons():
    log = made_up_log()
    text, rows = results.report(log, log["sizes"])
    check_every_key_reaches_the_table(log, text)
    assert results.RANDOM_ZERO_SHOT in rows and "recall@1" in rows[results.RANDOM]
    # the pretrained zero-shot scores differ by seed here, so they have a spread
    assert rows[results.ZERO_SHOT]["mrr@10"][1] is not None
    # accuracy 0.59 + k against random's 0.55 + 2k: differences 0.04, 0.03, 0.02 (sd 0.01)
    line = next(l for l in text.splitlines()
                if l.startswith("| classification, 2937 labels: pretrained − random init | accuracy"))
    assert "+0.040, +0.030, +0.020 | +0.030 | [+0.005, +0.055] | — | pretrained higher" in line
    # the curve's point: the same differences per seed for pretrained and TF-IDF, +0.04 each
    line = next(l for l in text.splitlines() if l.startswith("| classification, 100 labels: "
                                                            "pretrained − TF-IDF") and "accuracy" in l)
    assert "+0.040, +0.040, +0.040 | +0.040 | [+0.040, +0.040] | — | pretrained higher" in line
    se = math.sqrt(0.6 * 0.4 / 971)  # TF-IDF's accuracy on 971 test items
    assert f"| {results.TFIDF} | {se:.3f} |" in text
    assert "bootstrap over test items" in text and "no per-item outcomes" in text


def test_bootstrap_interval_by_hand():
    # every item right in a, wrong in b: every resample's difference is 1
    right, wrong = {"per_item": "1 1 1 1"}, {"per_item": "0 0 0 0"}
    assert results.bootstrap_interval([right, right], [wrong, wrong], "accuracy") == (1.0, 1.0)
    # 400 items, half right: the mean's standard error is 0.5 / sqrt(400) = 0.025, so the 95%
    # interval is about 0.5 ± 1.96 * 0.025
    half = {"per_item": " ".join(["1", "0"] * 200)}
    low, high = results.bootstrap_interval([half], None, "accuracy")
    assert low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.006)
    assert high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.006)
    # ranks: reciprocal rank, recall@1 and recall@10 from the same outcomes
    ranks = {"per_item": "1 2 0 10"}
    assert results.item_scores(ranks, "mrr@10") == [1.0, 0.5, 0.0, 0.1]
    assert results.item_scores(ranks, "recall@1") == [1.0, 0.0, 0.0, 0.0]
    assert results.item_scores(ranks, "recall@10") == [1.0, 1.0, 0.0, 1.0]
    # a run without per-item outcomes, or a metric that is no mean over items: no interval
    assert results.bootstrap_interval([{"accuracy": 0.5}], None, "accuracy") is None
    assert results.bootstrap_interval([ranks], None, "ndcg@10") is None
    # the same draw for both rows: a row against itself differs by exactly 0 in every resample
    assert results.bootstrap_interval([half], [half], "accuracy") == (0.0, 0.0)


def test_reading_needs_both_intervals_clear_of_zero():
    ahead = results.paired_interval([0.7, 0.71, 0.72], [0.4, 0.4, 0.4])  # seeds: clear of 0
    assert results.reading(ahead, "a", "b", (0.01, 0.5)) == "a higher"
    assert results.reading(ahead, "a", "b", (-0.01, 0.5)) == "not distinguishable here"
    behind = results.paired_interval([0.4, 0.4, 0.4], [0.7, 0.71, 0.72])
    assert results.reading(behind, "a", "b", (-0.5, -0.01)) == "b higher"


def test_one_seed_renders_without_intervals():
    log = made_up_log(seeds=(0,))
    for key in ("curve_runs", "curve", "reference"):
        del log[key]
    text, _ = results.report(log, log["sizes"])
    assert "one seed: none" in text
    assert re.search(r"\| accuracy \| \+0\.040 \| \+0\.040 \| — \| — \| not distinguishable here \|", text)


def test_the_committed_results_md_is_the_rendering_of_results_json():
    log = json.loads((FINETUNE / "results.json").read_text())
    sizes = log.get("sizes") or results.task_sizes(log)  # checked against the log's shares
    text, _ = results.report(log, sizes)
    assert (FINETUNE / "results.md").read_text() == text + "\n"
    check_every_key_reaches_the_table(log, text)
    # the row that goes against pretraining is there: random init's zero-shot MRR@10 above
    table = table_cells(text)
    assert table[results.RANDOM_ZERO_SHOT]["MRR@10"].startswith("0.111")
    assert table[results.ZERO_SHOT]["MRR@10"] == "0.042"
    # every run of the committed log keeps its per-item outcomes: each paired row of a metric that
    # is a mean over items has its bootstrap interval
    paired = [line.split("|")[1:-1] for line in text.splitlines()
              if line.count("|") == 8 and "−" in line.split("|")[1]]
    assert len(paired) > 30
    for what, metric, *_, items, _reading in paired:
        if metric.strip() in ("accuracy", "MRR@10", "recall@1", "recall@10"):
            assert items.strip() != "—", (what, metric)


def test_per_item_outcomes_and_the_choices_reach_the_report():
    """With per-item outcomes in every run, each paired row has a bootstrap interval and each
    row of the table its own; the curve's and the reference's choices on validation are shown."""
    log = made_up_log()
    right = " ".join(["1"] * 600 + ["0"] * 371)  # 971 classification test items
    ranks = " ".join(["1"] * 400 + ["3"] * 300 + ["0"] * 441)  # 1,141 queries
    for init in ("pretrained", "random"):
        for r in log[init]["classification"]:
            r["per_item"] = right
        for r in log[init]["retrieval"]:
            for part in (r, r["zero_shot"], *(r[k] for k in ("fused", "rrf") if k in r)):
                part["per_item"] = ranks
    log["baselines"]["tfidf_logreg"]["per_item"] = right
    log["baselines"]["bm25"]["per_item"] = ranks
    log["curve_choice"] = {results.PRETRAINED: {"100": {"validation_accuracy": {"50": 0.3, "100": 0.4},
                                                        "chosen": 100}}}
    log["curve_choice_seed"] = 0
    log["reference"].update(lr=1e-4, lr_choice={"3e-05": 0.5, "0.0001": 0.6, "0.0003": 0.55})
    text, _ = results.report(log, log["sizes"])
    line = next(l for l in text.splitlines()
                if l.startswith("| classification, 2937 labels: pretrained − random init | accuracy"))
    # the same outcomes in both rows: every resample's difference is 0, so the reading is "not
    # distinguishable" although the seeds' interval alone is clear of 0
    assert "| [+0.005, +0.055] | [+0.000, +0.000] | not distinguishable here |" in line
    assert f"| {results.PRETRAINED} | [0." in text  # the rows' own bootstrap table
    assert "| mini, pretrained, fine-tuned, 100 labels | 0.300 | 0.400 | 100 |" in text
    assert "lr 0.0001 chosen on validation" in text and "3e-05 (accuracy 0.500)" in text

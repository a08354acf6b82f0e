"""The small pretrained checkpoint: `export` on a tiny run, and the committed mini checkpoint
(modernbert_mini/assets/mini, `make mini-checkpoint`) against the log that came with it."""

import json

import pytest
import torch
from safetensors.torch import load_file

from modernbert_mini.checkpoint import PRETRAINED_DIR, export, load_pretrained, validate
from modernbert_mini.train import LOG_FILE, TrainConfig, train
from test_train import tiny_config, tokenizer_dir  # noqa: F401  (a fixture)


def test_export_halves_the_weights_and_rescores_them(tokenizer_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tokenizer_dir, run, max_steps=5, save_every=5))
    log = export(run, tmp_path / "small")
    weights = load_file(tmp_path / "small" / "model.safetensors")
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    model, _, read = load_pretrained(tmp_path / "small")
    assert next(model.parameters()).dtype == torch.float32 and read == log
    # recomputed on the float16 weights: close to the run's own figure, not copied from it
    assert log["validation"]["masked_tokens"] == log["validation_of_the_run"]["masked_tokens"]
    assert log["validation"]["loss"] == pytest.approx(log["validation_of_the_run"]["loss"], abs=5e-3)
    assert validate(tmp_path / "small") == log["validation"]


def test_export_refuses_an_unfinished_run(tokenizer_dir, tmp_path):
    train(tiny_config(tokenizer_dir, tmp_path, max_steps=5, stop_after=2, save_every=2))
    with pytest.raises(ValueError, match="unfinished run"):
        export(tmp_path, tmp_path / "small")


def test_committed_checkpoint_matches_its_log_and_beats_unigram():
    # the corpus ships with the package, so this holds on every Python version, with no skip
    log = json.loads((PRETRAINED_DIR / LOG_FILE).read_text())
    again = validate(PRETRAINED_DIR)
    assert again["masked_tokens"] == log["validation"]["masked_tokens"]
    assert again["loss"] == pytest.approx(log["validation"]["loss"], abs=1e-4)
    assert again["accuracy"] == pytest.approx(log["validation"]["accuracy"], abs=2e-3)
    assert again["loss"] < log["unigram_baseline"]["loss"] - 1.0
    assert again["accuracy"] > 5 * log["unigram_baseline"]["accuracy"]
    assert TrainConfig.from_dict(log["train_config"]).max_steps == log["steps"]


def test_committed_checkpoint_extended_its_context_as_its_log_says():
    """Its loss by position on 1,024-token validation windows, recomputed on the shipped weights,
    is its log's; and the run it was extended from is in the log, at 128 tokens with theta 10k."""
    from modernbert_mini.checkpoint import load_pretrained
    from modernbert_mini.train import position_losses

    model, tokenizer, log = load_pretrained()
    cfg = TrainConfig.from_dict(log["train_config"])
    again = position_losses(cfg, tokenizer, model.config, model, torch.device("cpu"))
    assert again["length"] == log["position_loss"]["length"] == model.config.max_position_embeddings
    for ours, theirs in zip(again["buckets"], log["position_loss"]["buckets"], strict=True):
        assert ours["tokens"] == theirs["tokens"]
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=0.02)  # float16 weights
    short = log["init_from_run"]
    assert short["train_config"]["max_len"] == 128 and cfg.max_len == 1024
    assert short["model_config"]["global_rope_theta"] == 10_000 and model.config.global_rope_theta == 160_000


def _make_pretrain_runs() -> dict[str, TrainConfig]:
    """The three runs `make pretrain` makes, as the Makefile says them today ({out dir's last
    part: TrainConfig}), read from `make -n` (which prints the commands without running them)."""
    import shlex
    import subprocess
    from pathlib import Path

    from modernbert_mini.train import parse_args

    root = Path(__file__).resolve().parents[1]
    script = subprocess.run(["make", "-n", "--always-make", "pretrain", "PRETRAIN_DIR=run"],
                            cwd=root, capture_output=True, text=True, check=True).stdout
    script = script.replace("\\\n", " ")
    runs = {}
    for line in script.splitlines():
        if "-m modernbert_mini.train" in line:
            cfg = parse_args(shlex.split(line.split("-m modernbert_mini.train", 1)[1]))
            runs[cfg.out_dir.split("/")[-1]] = cfg
    return runs


def test_make_pretrain_made_the_committed_checkpoint():
    """The settings of each run in the shipped log (phase 1, phase 2, the control) are what
    `make pretrain` runs today, so that it reproduces the checkpoint: ModernBERT's schedule
    shape (phase 1 warmup then constant, the extension at a constant lower rate with the only
    decay at its end) and attention dropout 0.1 in pretraining."""
    runs = _make_pretrain_runs()
    log = json.loads((PRETRAINED_DIR / LOG_FILE).read_text())
    logged = {"short": log["init_from_run"]["train_config"], "run": log["train_config"],
              "control": log["control_run"]["train_config"]}
    assert set(runs) == set(logged)
    for name, cfg in runs.items():
        theirs = TrainConfig.from_dict(logged[name])
        for field in ("max_len", "max_steps", "batch_tokens", "batch_warmup_start",
                      "batch_warmup_tokens", "batch_warmup_multiple", "model_overrides",
                      "mask_rate", "seed", "eval_tokens"):
            assert getattr(cfg, field) == getattr(theirs, field), (name, field)
        assert cfg.optim == theirs.optim, name
    short, long = runs["short"].optim, runs["run"].optim
    assert short.decay_steps == 0 and short.warmup_steps > 0  # no decay in phase 1
    assert long.warmup_steps == 0 and long.decay_steps > 0 and long.lr < short.lr
    assert runs["control"].optim == long and runs["control"].max_len == runs["short"].max_len
    assert runs["short"].model_overrides["attention_dropout"] == 0.1
    assert json.loads((PRETRAINED_DIR / "config.json").read_text())["attention_dropout"] == 0.0

"""The small pretrained checkpoint that chapters 10 and 11 load (modernbert_mini/assets/mini/):
a finished `make pretrain` run exported in float16 (`export`, `make mini-checkpoint`), its
validation loss recomputed on the cast weights (`validate`), and read back (`load_pretrained`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .mlm import evaluate
from .model import ModernBertForMaskedLM
from .tokenizer import load_tokenizer, save_tokenizer
from .train import LOG_FILE, PLOT_FILE, TrainConfig, validation_batches

PRETRAINED_DIR = Path(__file__).parent / "assets" / "mini"  # `make mini-checkpoint` writes it
EXPORTED_LOG = ("train_config", "parameters", "train_tokens", "eval_tokens", "device", "steps",
                "tokens_seen", "train_seconds", "tokens_per_second", "unigram_baseline",
                "fill_mask_before", "fill_mask_after", "history", "position_loss_before",
                "position_loss", "init_from_run")


def validate(directory: str | Path) -> dict:
    """A checkpoint's validation loss and accuracy, recomputed on the slice its run was scored on
    (the settings in its log.json), in float32 on the CPU."""
    directory = Path(directory)
    cfg = TrainConfig.from_dict(json.loads((directory / LOG_FILE).read_text())["train_config"])
    tokenizer = load_tokenizer(directory)
    model = ModernBertForMaskedLM.from_pretrained(directory)
    return evaluate(model, validation_batches(cfg, tokenizer, model.config), torch.device("cpu"))


def export(run_dir: str | Path, dest: str | Path = PRETRAINED_DIR,
           dtype: torch.dtype = torch.float16) -> dict:
    """A finished run as the small checkpoint that chapters 10 and 11 load (`load_pretrained`).

    The weights are cast to `dtype` (float16 halves the file: 11 MB for the mini model), and
    the validation figures in the new log.json are recomputed on the cast weights, so that a
    test can check the file against its log. Returns that log.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    log = json.loads((run_dir / LOG_FILE).read_text())
    if "final_eval" not in log:
        raise ValueError(f"{run_dir} holds an unfinished run (no final_eval in {LOG_FILE}): "
                         "finish it first (PRETRAIN_ARGS=--resume)")
    dest.mkdir(parents=True, exist_ok=True)
    ModernBertForMaskedLM.from_pretrained(run_dir).to(dtype).save_pretrained(dest)
    save_tokenizer(load_tokenizer(run_dir), dest)
    shutil.copy(run_dir / PLOT_FILE, dest / PLOT_FILE)
    small = {key: log[key] for key in EXPORTED_LOG if key in log}
    small["validation_of_the_run"] = log["final_eval"]  # before the cast
    small["python"] = list(sys.version_info[:2])  # the corpus follows the Python it is read from
    (dest / LOG_FILE).write_text(json.dumps(small, indent=1) + "\n")  # validate reads its settings
    small["validation"] = validate(dest)
    (dest / LOG_FILE).write_text(json.dumps(small, indent=1) + "\n")
    return small


def load_pretrained(directory: str | Path = PRETRAINED_DIR) -> tuple[ModernBertForMaskedLM, Tokenizer, dict]:
    """(model in float32, tokenizer, log) of the committed mini checkpoint (or another export)."""
    directory = Path(directory)
    if not (directory / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{directory} holds no model.safetensors: a checkpoint folder holds config.json, "
            "model.safetensors, tokenizer.json and log.json (what `export` writes; the package "
            "ships one at modernbert_mini/assets/mini); in a clone of the repository, "
            "`make mini-checkpoint` makes it again from a `make pretrain` run")
    return (ModernBertForMaskedLM.from_pretrained(directory), load_tokenizer(directory),
            json.loads((directory / LOG_FILE).read_text()))

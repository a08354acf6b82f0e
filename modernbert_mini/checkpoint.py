"""The small pretrained checkpoint that chapters 10 and 11 load (modernbert_mini/assets/mini/):
a finished `make pretrain` run exported in float16 (`export`, `make mini-checkpoint`), its
validation loss recomputed on the cast weights (`validate`), and read back (`load_pretrained`);
and a checkpoint as fine-tuning starts from it (`load_encoder_checkpoint`: its weights, or its
architecture from random initialisation; `load_checkpoint_tokenizer`).
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn

from . import data
from .config import ModernBertConfig
from .mlm import evaluate
from .model import ModernBertForMaskedLM, ModernBertForSequenceClassification, ModernBertModel
from .tokenizer import load_tokenizer, save_tokenizer
from .train import LOG_FILE, PLOT_FILE, TrainConfig, validation_batches

PRETRAINED_DIR = Path(__file__).parent / "assets" / "mini"  # `make mini-checkpoint` writes it
EXPORTED_LOG = ("train_config", "parameters", "train_tokens", "eval_tokens", "device", "steps",
                "tokens_seen", "train_seconds", "tokens_per_second", "unigram_baseline",
                "fill_mask_before", "fill_mask_after", "history", "position_loss_before",
                "position_loss", "init_from_run")
CONTROL_LOG = ("train_config", "steps", "tokens_seen", "train_seconds", "final_eval",
               "position_loss_before", "position_loss")


def validate(directory: str | Path) -> dict:
    """A checkpoint's validation loss and accuracy, recomputed on the slice its run was scored on
    (the settings in its log.json), in float32 on the CPU."""
    directory = Path(directory)
    cfg = TrainConfig.from_dict(json.loads((directory / LOG_FILE).read_text())["train_config"])
    tokenizer = load_tokenizer(directory)
    model = ModernBertForMaskedLM.from_pretrained(directory)
    return evaluate(model, validation_batches(cfg, tokenizer, model.config), torch.device("cpu"))


def export(run_dir: str | Path, dest: str | Path = PRETRAINED_DIR,
           dtype: torch.dtype = torch.float16, control: str | Path | None = None) -> dict:
    """A finished run as the small checkpoint that chapters 10 and 11 load (`load_pretrained`).

    The weights are cast to `dtype` (float16 halves the file: 11 MB for the mini model), and
    the validation figures in the new log.json are recomputed on the cast weights, so that a
    test can check the file against its log. Its config has no attention dropout: dropout was
    a setting of pretraining (log.json keeps it), and the published ModernBERT checkpoints'
    configs say attention_dropout 0.0 too; a fine-tuning run sets its own. control: a run
    that the book compares this one with (`make pretrain`'s control: phase 1 continued at
    its short length), whose settings, validation and loss by position the log keeps as
    "control_run". Returns that log.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    log = json.loads((run_dir / LOG_FILE).read_text())
    if "final_eval" not in log:
        raise ValueError(f"{run_dir} holds an unfinished run (no final_eval in {LOG_FILE}): "
                         "finish it first (PRETRAIN_ARGS=--resume)")
    dest.mkdir(parents=True, exist_ok=True)
    ModernBertForMaskedLM.from_pretrained(run_dir, attention_dropout=0.0).to(dtype).save_pretrained(dest)
    save_tokenizer(load_tokenizer(run_dir), dest)
    shutil.copy(run_dir / PLOT_FILE, dest / PLOT_FILE)
    small = {key: log[key] for key in EXPORTED_LOG if key in log}
    small["validation_of_the_run"] = log["final_eval"]  # before the cast
    if control is not None:
        other = json.loads((Path(control) / LOG_FILE).read_text())
        small["control_run"] = {key: other[key] for key in CONTROL_LOG}
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


# ----------------------------------------------------------------------------- fine-tuning from it
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

"""Pretraining ModernBERT with masked language modelling: the loop. Chapter 10 runs it.

    python -m modernbert_mini.train --out-dir out/pretrain --max-steps 600
    torchrun --nproc_per_node=2 -m modernbert_mini.train ...      (DistributedDataParallel)

One step, as ModernBERT trains:
  1. the next packed batch of the training split, as many tokens as the batch-size warmup
     allows (`optim.batch_size_schedule`), documents back to back with cu_seqlens (`packing.py`);
  2. 30% masking, 80/10/10 (`mlm.mask_tokens`), drawn from a generator seeded by the step;
  3. forward on the unpadded batch with sparse prediction (the head sees masked tokens only),
     cross entropy at the masked tokens; bf16 autocast on a GPU of capability >= 8.0, else fp32;
  4. backward, StableAdamW (which clips each update; a global gradient-norm clip only with
     `--grad-clip` > 0), the warmup-stable-decay learning rate (`loop.build_optimizer`).

Every `eval_every` steps: the loss and accuracy on a fixed, masked slice of the validation
split (`mlm.evaluate`). Every `save_every` steps: a checkpoint directory, `checkpoint-<step>/`,
holding the weights as transformers writes them (`save_pretrained`: config.json +
model.safetensors) and `training_state.pt`: optimizer, scheduler, data position, RNG and the
history so far, saved as tensors and plain containers, so that it loads with weights_only=True
(no code runs on load; `loop.save_state`). Resuming from it gives the same losses, bit for bit,
as a run that never stopped: the data order is a function of (seed, epoch), the masking of
(seed, step).

Data parallel: every rank builds the same global batch and trains on its own share of the
sequences; the loss is the sum over a rank's masked tokens divided by the masked tokens of the
whole global batch (times the world size, as DDP averages gradients), so N ranks take the same
step as one process on the global batch. gloo on the CPU, nccl on a GPU.

At the end the output directory holds the model (config.json, model.safetensors), the
tokenizer (tokenizer.json, tokenizer_config.json), `loss_curve.png` and `log.json`: it loads in
transformers as it is (AutoModelForMaskedLM, AutoTokenizer, pipeline("fill-mask")).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tokenizers import Tokenizer

from . import cli, loop, runtime
from .config import ModernBertConfig
from .data import corpus_texts, corpus_tokenizer
from .hub import read_hf_config
from .loop import Dist, shard
from .mlm import (MASK_RATE, evaluate, long_validation_slice, loss_by_position, mask_tokens,
                  masked_loss_sum, masking_args, special_ids, step_generator, tokenize_documents,
                  unigram_baseline, validation_slice)
from .model import IGNORE_INDEX, ModernBertForMaskedLM
from .optim import OptimConfig, batch_size_schedule
from .packing import PackedBatch, PackedLoader
from .tokenizer import load_tokenizer, save_tokenizer

LOG_FILE = "log.json"
EARLIER_RUN = ("train_config", "model_config", "steps", "tokens_seen", "train_seconds",
               "tokens_per_second", "final_eval", "position_loss", "history")  # kept by init_from
PLOT_FILE = "loss_curve.png"
FILL_MASK_PROMPTS = (
    "import [MASK]",
    "def __init__(self, [MASK]):",
    "for i in [MASK](len(items)):",
    "if x is [MASK]:\n    return",
    "Return the number of [MASK] in the list.",
)


@dataclass
class TrainConfig:
    out_dir: str = "out/pretrain"
    # the model: a size of ModernBertConfig (mini, base, large) and fields to change in it
    model_size: str = "mini"
    model_overrides: dict = field(default_factory=dict)
    sparse_prediction: bool = True
    attention_backend: str = "auto"
    # data: the stdlib corpus (data.py) through a tokenizer (default: the corpus's own BPE)
    tokenizer: str | None = None
    max_len: int = 512  # longer documents are cut into chunks of at most this many tokens
    max_docs: int | None = None  # only the first N training documents (for quick runs)
    val_docs: int | None = None
    mask_rate: float = MASK_RATE
    # context extension: start from a finished run's weights and tokenizer (model_overrides can
    # then raise global_rope_theta, as ModernBERT's 8k phase did); optimizer and schedule anew
    init_from: str | None = None
    # the loss by position on position_eval_windows windows of this many validation tokens (0:
    # the model's max_position_embeddings), each from another file, before and after training
    position_eval_len: int = 0
    position_eval_windows: int = 24
    # batches, in tokens (packed): batch-size warmup from batch_warmup_start to batch_tokens,
    # in steps of batch_warmup_multiple, each size for the same number of steps (optim.py)
    batch_tokens: int = 8192
    batch_warmup_start: int | None = None  # None: no batch-size warmup
    batch_warmup_tokens: int = 0
    batch_warmup_multiple: int = 1
    # optimiser and schedule: ModernBERT's StableAdamW, weight decay relative to the peak lr,
    # no gradient-norm clip (StableAdamW clips updates); warmup and decay in steps
    max_steps: int = 500
    optim: OptimConfig = OptimConfig(warmup_steps=50, decay_steps=100)
    # bookkeeping
    eval_every: int = 50
    eval_tokens: int = 32_768  # size of the validation slice
    save_every: int = 100
    keep_checkpoints: int = 2
    stop_after: int | None = None  # stop (with a checkpoint) after this step, as if interrupted
    resume: bool = False  # continue from the newest checkpoint-* in out_dir
    seed: int = 0
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The config a log.json's "train_config" holds: `optim` as a dict, or (a log written
        before OptimConfig, as the shipped checkpoint's) its fields among the others."""
        names = {f.name for f in dataclasses.fields(OptimConfig)}
        optim = {**values.get("optim", {}), **{k: v for k, v in values.items() if k in names}}
        rest = {k: v for k, v in values.items() if k not in names and k != "optim"}
        return cls(**rest, optim=OptimConfig(**optim))

    def __post_init__(self):
        positive = ("max_len", "batch_tokens", "max_steps", "eval_every", "eval_tokens",
                    "save_every", "keep_checkpoints", "batch_warmup_multiple", "position_eval_windows")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"TrainConfig.{name}={value!r} is invalid: must be an integer >= 1")
        if self.batch_tokens < self.max_len:
            raise ValueError(f"TrainConfig.batch_tokens={self.batch_tokens} is invalid: a batch "
                             f"must hold at least one sequence of max_len={self.max_len} tokens")
        if self.batch_warmup_start is not None and not (
                self.max_len <= self.batch_warmup_start <= self.batch_tokens):
            raise ValueError(f"TrainConfig.batch_warmup_start={self.batch_warmup_start} is "
                             f"invalid: must be between max_len={self.max_len} and "
                             f"batch_tokens={self.batch_tokens}")
        if self.model_size not in ("mini", "base", "large"):
            raise ValueError(f"TrainConfig.model_size={self.model_size!r} is invalid: "
                             "use 'mini', 'base' or 'large'")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.max_steps:
            raise ValueError(f"TrainConfig.stop_after={self.stop_after} is invalid: must be "
                             f"between 1 and max_steps={self.max_steps}")


# ----------------------------------------------------------------------------- pieces
def run_settings(cfg: TrainConfig) -> dict:
    return dict(sparse_prediction=cfg.sparse_prediction, attention_backend=cfg.attention_backend)


def build_model_config(cfg: TrainConfig, tokenizer: Tokenizer) -> ModernBertConfig:
    run = run_settings(cfg)
    if cfg.init_from:  # the earlier run's model, with this run's changes
        config = ModernBertConfig.from_hf_dict(read_hf_config(Path(cfg.init_from)),
                                               **{**run, **cfg.model_overrides})
    else:
        ids = {f"{name}_token_id": tokenizer.token_to_id(f"[{name.upper()}]")
               for name in ("cls", "sep", "pad", "mask")}
        sizes = dict(vocab_size=tokenizer.get_vocab_size(), **ids, **run)
        config = getattr(ModernBertConfig, cfg.model_size)(**{**sizes, **cfg.model_overrides})
    if config.max_position_embeddings < cfg.max_len:
        raise ValueError(f"max_len={cfg.max_len} is longer than the model's "
                         f"max_position_embeddings={config.max_position_embeddings}")
    return config


def validation_batches(cfg: TrainConfig, tokenizer: Tokenizer, config: ModernBertConfig) -> list:
    """The run's fixed validation slice: the first cfg.eval_tokens tokens of the validation
    split, packed and masked once (`mlm.validation_slice`)."""
    return validation_slice(corpus_texts("validation")[:cfg.val_docs], tokenizer, config,
                            max_len=cfg.max_len, batch_tokens=cfg.batch_tokens,
                            eval_tokens=cfg.eval_tokens, rate=cfg.mask_rate)


def scorer(cfg: TrainConfig, tokenizer: Tokenizer, config: ModernBertConfig, device):
    """score(model) -> the validation figures of `evaluate` at the run's masking rate, and
    `loss_15`, the loss on the same slice masked at 15% (BERT's rate, the paper's comparison)."""
    at_rate = validation_batches(cfg, tokenizer, config)
    at_15 = validation_batches(dataclasses.replace(cfg, mask_rate=0.15), tokenizer, config)

    def score(model) -> dict:
        return {**evaluate(model, at_rate, device), "loss_15": evaluate(model, at_15, device)["loss"]}
    return score, at_rate


def position_losses(cfg: TrainConfig, tokenizer: Tokenizer, config: ModernBertConfig, model,
                    device) -> dict:
    """{"length", "windows", "buckets"}: loss_by_position on position_eval_windows windows of
    position_eval_len validation tokens, each from another file."""
    length = cfg.position_eval_len or config.max_position_embeddings
    batches = long_validation_slice(corpus_texts("validation")[:cfg.val_docs], tokenizer, config,
                                    length=length, windows=cfg.position_eval_windows,
                                    rate=cfg.mask_rate)
    return {"length": length, "windows": len(batches),
            "buckets": loss_by_position(model, batches, device)}


def train_step(model, optimizer, scheduler, batch: PackedBatch, inputs: torch.Tensor,
               labels: torch.Tensor, d: Dist, grad_clip: float) -> tuple[float, torch.Tensor | None]:
    """One update on this rank's share of the global batch; returns (global loss, grad norm).

    The loss a rank backpropagates is its sum over masked tokens / all masked tokens of the
    global batch, times the world size (DDP averages the gradients): so the gradient is that of
    the mean loss over the whole global batch, however it is shared.
    """
    first, stop = shard(batch, d.rank, d.world)  # this rank's sequences
    lo, hi = int(batch.cu_seqlens[first]), int(batch.cu_seqlens[stop])  # and their tokens
    my_labels = labels[lo:hi]
    n_mine = int((my_labels != IGNORE_INDEX).sum())
    n_global = max(int((labels != IGNORE_INDEX).sum()), 1)
    with runtime.autocast(d.device):
        loss_sum, _ = masked_loss_sum(model, inputs[lo:hi], my_labels, batch.select(first, stop),
                                      n_mine, d.device)
    grad_norm = loop.step(model, optimizer, scheduler, loss_sum * (d.world / n_global), grad_clip)
    return float(d.all_sum(loss_sum.detach())) / n_global, grad_norm


@torch.no_grad()
def guesses(model: ModernBertForMaskedLM, tokenizer: Tokenizer, prompt: str,
            top_k: int = 3) -> list:
    """The model's top_k guesses at each [MASK] of prompt, best first, as (token, probability)
    pairs for log.json: the softmax of the MLM logits there, in eval mode (what a reader's
    `inference.fill_mask` gives, without the checks a user's text needs)."""
    was_training = model.training
    model.eval()
    ids = torch.tensor([tokenizer.encode(prompt).ids], device=model.device)  # (1, S): [CLS] ... [SEP]
    logits = model(ids).logits[0, ids[0] == model.config.mask_token_id]  # (M, V): at each [MASK]
    model.train(was_training)
    top = logits.float().softmax(dim=-1).topk(top_k, dim=-1)
    return [[(tokenizer.decode([i], skip_special_tokens=False), round(p, 4))
             for i, p in zip(token_ids.tolist(), probs.tolist())]
            for token_ids, probs in zip(top.indices, top.values)]


def plot_losses(history: dict, baseline: dict | None, path: Path) -> None:
    from .viz import file_figure  # IPython, matplotlib: imported to draw, not with the package

    fig = file_figure(figsize=(7, 4))
    ax = fig.subplots()
    steps = [row["step"] for row in history["train"]]
    ax.plot(steps, [row["loss"] for row in history["train"]], lw=0.8, alpha=0.6, label="train")
    if history["eval"]:
        ax.plot([row["step"] for row in history["eval"]], [row["loss"] for row in history["eval"]],
                "o-", label="validation")
    if baseline is not None:
        ax.axhline(baseline["loss"], color="grey", ls="--", label="unigram baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("MLM loss (masked tokens)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig) -> dict:
    """Pretrain as `cfg` says; returns the log (also written to out_dir/log.json)."""
    from tqdm.auto import tqdm  # it loads IPython where there is one: not with the package

    d = loop.setup_distributed()
    out_dir = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)
    source = cfg.tokenizer or cfg.init_from
    tokenizer = load_tokenizer(source) if source else corpus_tokenizer()
    config = build_model_config(cfg, tokenizer)
    mask_args = masking_args(tokenizer, config)
    train_seqs = tokenize_documents(corpus_texts("train")[:cfg.max_docs], tokenizer, cfg.max_len)
    score, eval_batches = scorer(cfg, tokenizer, config, d.device)
    loader = PackedLoader(train_seqs, seed=cfg.seed)

    if cfg.init_from:
        model = ModernBertForMaskedLM.from_pretrained(
            cfg.init_from, device=d.device, **{**run_settings(cfg), **cfg.model_overrides})
    else:
        model = ModernBertForMaskedLM(config).to(d.device)
    optimizer, scheduler = loop.build_optimizer(model, cfg.optim, cfg.max_steps)
    parts = {"optimizer": optimizer, "scheduler": scheduler, "loader": loader}
    state = {"step": 0, "tokens_seen": 0, "train_seconds": 0.0, "history": {"train": [], "eval": []}}
    log = {"train_config": dataclasses.asdict(cfg), "model_config": config.to_hf_dict(),
           "world_size": d.world, "device": runtime.detect().summary(),
           "parameters": sum(p.numel() for p in model.parameters()),
           "train_tokens": train_seqs.num_tokens, "train_sequences": len(train_seqs),
           "eval_tokens": sum(b.num_tokens for b, _, _ in eval_batches)}
    if cfg.init_from:  # the run this one continues: what a reader compares it with
        earlier = json.loads((Path(cfg.init_from) / LOG_FILE).read_text())
        log["init_from_run"] = {key: earlier.get(key) for key in EARLIER_RUN}
    saved = loop.checkpoints(out_dir) if cfg.resume else []
    if saved:
        state = loop.load_state(saved[-1], d, model, parts)
        log["resumed_from"] = str(saved[-1])
    else:
        loop.remove_checkpoints(out_dir, d)  # an earlier run's checkpoints would mix with ours
        state["fill_mask_before"] = {p: guesses(model, tokenizer, p) for p in FILL_MASK_PROMPTS}
        state["position_loss_before"] = position_losses(cfg, tokenizer, config, model, d.device)
        if d.main:
            state["history"]["eval"].append({"step": 0, **score(model)})
    history, log["fill_mask_before"] = state["history"], state["fill_mask_before"]
    log["position_loss_before"] = state["position_loss_before"]
    log["unigram_baseline"] = baseline = unigram_baseline(
        train_seqs.tokens, eval_batches, config.vocab_size, special_ids(tokenizer))
    ddp = loop.distribute(model, d)
    model.train()

    last = cfg.max_steps if cfg.stop_after is None else cfg.stop_after
    bar = tqdm(total=cfg.max_steps, initial=state["step"], disable=not (d.main and cfg.progress),
               desc="pretraining", unit="step", dynamic_ncols=True)
    while state["step"] < last:
        step, started = state["step"], time.perf_counter()
        budget = cfg.batch_tokens if cfg.batch_warmup_start is None else batch_size_schedule(
            state["tokens_seen"], start=cfg.batch_warmup_start, end=cfg.batch_tokens,
            warmup_tokens=cfg.batch_warmup_tokens, multiple=cfg.batch_warmup_multiple)
        batch = loader.next_batch(budget)  # the global batch, the same on every rank
        inputs, labels = mask_tokens(batch.input_ids, **mask_args, rate=cfg.mask_rate,
                                     generator=step_generator(cfg.seed, step))
        lr = optimizer.param_groups[0]["lr"]
        loss, grad_norm = train_step(ddp, optimizer, scheduler, batch, inputs, labels, d,
                                     cfg.optim.grad_clip)
        state["step"] = step = step + 1
        state["tokens_seen"] += batch.num_tokens
        state["train_seconds"] += time.perf_counter() - started
        history["train"].append({"step": step, "loss": loss, "lr": lr, "tokens": batch.num_tokens,
                                 "grad_norm": None if grad_norm is None else float(grad_norm)})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}",
                        tok_s=f"{state['tokens_seen'] / max(state['train_seconds'], 1e-9):.0f}")
        if d.main and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            history["eval"].append({"step": step, **score(model)})
            bar.write(f"step {step}: validation loss {history['eval'][-1]['loss']:.4f}")
        if step % cfg.save_every == 0 or step == last:
            loop.save_state(out_dir / f"checkpoint-{step}", d, model, parts, state)
            loop.remove_checkpoints(out_dir, d, keep=cfg.keep_checkpoints)
    bar.close()

    log.update(history=history, steps=state["step"], tokens_seen=state["tokens_seen"],
               train_seconds=state["train_seconds"],
               tokens_per_second=state["tokens_seen"] / max(state["train_seconds"], 1e-9),
               params_max_diff_across_ranks=loop.param_spread(model, d))
    if state["step"] == cfg.max_steps and d.main:
        log["final_eval"] = history["eval"][-1]
        log["fill_mask_after"] = {p: guesses(model, tokenizer, p) for p in FILL_MASK_PROMPTS}
        log["position_loss"] = position_losses(cfg, tokenizer, config, model, d.device)
        model.save_pretrained(out_dir)
        save_tokenizer(tokenizer, out_dir)
    if d.main:
        plot_losses(history, baseline, out_dir / PLOT_FILE)
        (out_dir / LOG_FILE).write_text(json.dumps(log, indent=1) + "\n")
    d.barrier()
    return log


# ----------------------------------------------------------------------------- the CLI
def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python -m modernbert_mini.train",
                                     description="Pretrain ModernBERT with MLM on the stdlib corpus.")
    cli.add_fields(parser, TrainConfig, help={
        "model_overrides": 'ModernBertConfig fields as JSON, e.g. \'{"num_hidden_layers": 4}\''})
    return cli.build(TrainConfig(), cli.given(parser.parse_args(argv), TrainConfig))


def main(argv: list[str] | None = None) -> None:
    log = train(parse_args(argv))
    if not dist.is_initialized() or dist.get_rank() == 0:
        summary = {"steps": log["steps"], "tokens_per_second": round(log["tokens_per_second"], 1),
                   "final_train_loss": log["history"]["train"][-1]["loss"],
                   "validation": log.get("final_eval"), "unigram_baseline": log["unigram_baseline"]}
        print(json.dumps(summary, indent=1))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

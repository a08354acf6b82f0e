"""Pretraining ModernBERT with masked language modelling: the loop. Chapter 10 runs it.

    python -m modernbert_mini.train --out-dir out/pretrain --max-steps 600
    torchrun --nproc_per_node=2 -m modernbert_mini.train ...      (DistributedDataParallel)

One step, as ModernBERT trains:
  1. the next packed batch of the training split, as many tokens as the batch-size warmup
     allows (`optim.batch_size_schedule`), documents back to back with cu_seqlens (`mlm.py`);
  2. 30% masking, 80/10/10 (`mlm.mask_tokens`), drawn from a generator seeded by the step;
  3. forward on the unpadded batch with sparse prediction (the head sees masked tokens only),
     cross entropy at the masked tokens; bf16 autocast on a GPU of capability >= 8.0, else fp32;
  4. backward, gradient-norm clipping, StableAdamW, the warmup-stable-decay learning rate.

Every `eval_every` steps: the loss and accuracy on a fixed, masked slice of the validation
split. Every `save_every` steps: a checkpoint directory, `checkpoint-<step>/`, holding the
weights as transformers writes them (`save_pretrained`: config.json + model.safetensors) and
`training_state.pt`: optimizer, scheduler, data position, RNG and the history so far, saved
with torch.save as tensors and plain containers, so that it loads with weights_only=True (no
code runs on load). Resuming from it gives the same losses, bit for bit, as a run that never
stopped: the data order is a function of (seed, epoch), the masking of (seed, step).

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
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tokenizers import Tokenizer

from . import runtime
from .config import ModernBertConfig
from .data import corpus_texts, corpus_tokenizer
from .hub import load_hf_state_dict, read_state_dict
from .inference import fill_mask
from .mlm import MASK_RATE, PackedBatch, PackedLoader, mask_tokens, tokenize_documents
from .model import IGNORE_INDEX, ModernBertForMaskedLM
from .optim import StableAdamW, batch_size_schedule, lr_scheduler, param_groups
from .tokenizer import load_tokenizer, save_tokenizer

STATE_FILE = "training_state.pt"
LOG_FILE = "log.json"
PLOT_FILE = "loss_curve.png"
EVAL_SEED = 20_241_219  # the validation slice is masked the same way in every run
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
    # batches, in tokens (packed): batch-size warmup from batch_warmup_start to batch_tokens
    batch_tokens: int = 8192
    batch_warmup_start: int | None = None  # None: no batch-size warmup
    batch_warmup_tokens: int = 0
    # optimiser and schedule
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 1e-5
    max_steps: int = 500
    warmup_steps: int = 50
    decay_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    # bookkeeping
    eval_every: int = 50
    eval_tokens: int = 32_768  # size of the validation slice
    save_every: int = 100
    keep_checkpoints: int = 2
    stop_after: int | None = None  # stop (with a checkpoint) after this step, as if interrupted
    resume: bool = False  # continue from the newest checkpoint-* in out_dir
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        self.betas = tuple(self.betas)
        positive = ("max_len", "batch_tokens", "max_steps", "eval_every", "eval_tokens",
                    "save_every", "keep_checkpoints")
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


# ----------------------------------------------------------------------------- distribution
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed() -> Dist:
    """One process (no torchrun), or this rank of a torchrun job: gloo on CPU, nccl on a GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world == 1:
        return Dist(0, 1, device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), world, device)


def shard(batch: PackedBatch, rank: int, world: int) -> tuple[int, int]:
    """This rank's share of a global batch: sequences [start, stop), about T / world tokens."""
    n = batch.num_sequences
    if n < world:
        raise ValueError(f"a batch of {n} sequences cannot be shared by {world} ranks: "
                         "raise batch_tokens (or lower max_len)")
    starts = batch.cu_seqlens[:-1].double()
    bounds = [0]
    for r in range(1, world):
        cut = int(torch.searchsorted(starts, r * batch.num_tokens / world))
        bounds.append(min(max(cut, bounds[-1] + 1), n - (world - r)))
    bounds.append(n)
    return bounds[rank], bounds[rank + 1]


# ----------------------------------------------------------------------------- pieces
def build_model_config(cfg: TrainConfig, tokenizer: Tokenizer) -> ModernBertConfig:
    ids = {f"{name}_token_id": tokenizer.token_to_id(f"[{name.upper()}]")
           for name in ("cls", "sep", "pad", "mask")}
    sizes = dict(vocab_size=tokenizer.get_vocab_size(), **ids,
                 sparse_prediction=cfg.sparse_prediction, attention_backend=cfg.attention_backend)
    config = getattr(ModernBertConfig, cfg.model_size)(**{**sizes, **cfg.model_overrides})
    if config.max_position_embeddings < cfg.max_len:
        raise ValueError(f"max_len={cfg.max_len} is longer than the model's "
                         f"max_position_embeddings={config.max_position_embeddings}")
    return config


def special_ids(tokenizer: Tokenizer) -> list[int]:
    """Every added special token ([UNK], [CLS], [SEP], [PAD], [MASK]): never masked."""
    return sorted(tokenizer.token_to_id(t.content)
                  for t in tokenizer.get_added_tokens_decoder().values() if t.special)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator that masks step `step`: a function of (seed, step) only, so resumable."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def autocast(device: torch.device):
    """bf16 autocast on a CUDA GPU with native bf16 (capability >= 8.0); fp32 everywhere else."""
    if device.type == "cuda" and runtime.detect().bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def masked_loss_sum(model, inputs: torch.Tensor, labels: torch.Tensor, batch: PackedBatch,
                    n_labels: int, device: torch.device):
    """(sum of cross entropy over the masked tokens, logits) for one packed batch."""
    out = model(inputs.to(device), labels=labels.to(device),
                cu_seqlens=batch.cu_seqlens.to(device), max_seqlen=batch.max_seqlen)
    if n_labels == 0:  # nothing masked here: a zero that still reaches every parameter
        return out.logits.sum() * 0.0, out.logits
    return out.loss * n_labels, out.logits  # the model's loss is the mean over its masked tokens


def train_step(model, optimizer, batch: PackedBatch, inputs: torch.Tensor, labels: torch.Tensor,
               d: Dist, grad_clip: float) -> tuple[float, torch.Tensor | None]:
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
    with autocast(d.device):
        loss_sum, _ = masked_loss_sum(model, inputs[lo:hi], my_labels, batch.select(first, stop),
                                      n_mine, d.device)
    (loss_sum * (d.world / n_global)).backward()
    grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                 if grad_clip > 0 else None)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(d.all_sum(loss_sum.detach())) / n_global, grad_norm


@torch.no_grad()
def evaluate(model: ModernBertForMaskedLM, eval_batches, device: torch.device) -> dict:
    """Loss and accuracy over the chosen tokens of the fixed validation slice.

    `accuracy` counts every chosen token, including the 10% left unchanged, which a model can
    simply copy; `mask_accuracy` counts only the tokens replaced by [MASK].
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, count, mask_correct, mask_count = 0.0, 0, 0, 0, 0
    for batch, inputs, labels in eval_batches:
        chosen = labels != IGNORE_INDEX
        n = int(chosen.sum())
        with autocast(device):
            total, logits = masked_loss_sum(model, inputs, labels, batch, n, device)
        if not model.config.sparse_prediction:
            logits = logits[chosen.to(device)]
        hits = (logits.argmax(-1).cpu() == labels[chosen])  # (n,)
        as_mask = inputs[chosen] == model.config.mask_token_id  # (n,)
        loss_sum += float(total)
        correct += int(hits.sum())
        count += n
        mask_correct += int(hits[as_mask].sum())
        mask_count += int(as_mask.sum())
    model.train(was_training)
    return {"loss": loss_sum / count, "accuracy": correct / count,
            "mask_accuracy": mask_correct / mask_count, "masked_tokens": count}


def masking_args(tokenizer: Tokenizer, config: ModernBertConfig) -> dict:
    """mask_tokens' keyword arguments for this tokenizer and model."""
    return dict(mask_id=config.mask_token_id, vocab_size=config.vocab_size,
                special_ids=special_ids(tokenizer))


def validation_slice(cfg: TrainConfig, tokenizer: Tokenizer, config: ModernBertConfig) -> list:
    """The first `eval_tokens` tokens of the validation split, packed and masked once:
    [(PackedBatch, inputs, labels)], the same for every run with these settings."""
    sequences = tokenize_documents(corpus_texts("validation")[:cfg.val_docs], tokenizer, cfg.max_len)
    mask_args = masking_args(tokenizer, config)
    loader = PackedLoader(sequences, shuffle=False)
    out, total = [], 0
    for i, batch in enumerate(loader.batches(cfg.batch_tokens)):
        if total >= cfg.eval_tokens:
            break
        inputs, labels = mask_tokens(batch.input_ids, **mask_args, rate=cfg.mask_rate,
                                     generator=torch.Generator().manual_seed(EVAL_SEED + i))
        out.append((batch, inputs, labels))
        total += batch.num_tokens
    return out


def unigram_baseline(train_tokens: torch.Tensor, eval_batches, vocab_size: int,
                     specials: list[int]) -> dict:
    """Always predict the most frequent training token; and the unigram distribution's loss."""
    counts = torch.bincount(train_tokens.long(), minlength=vocab_size).double()
    counts[specials] = 0
    top = int(counts.argmax())
    log_p = ((counts + 1) / (counts + 1).sum()).log()  # add-one smoothing
    targets = torch.cat([labels[labels != IGNORE_INDEX] for _, _, labels in eval_batches])
    return {"token_id": top, "accuracy": float((targets == top).double().mean()),
            "loss": float(-log_p[targets].mean())}  # the same on [MASK]ed tokens, in expectation


def checkpoints(out_dir: Path) -> list[Path]:
    """checkpoint-<step> directories of out_dir, oldest first."""
    found = [p for p in out_dir.glob("checkpoint-*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def guesses(model, tokenizer: Tokenizer, prompt: str, top_k: int = 3) -> list:
    """fill_mask's top guesses as (token, probability) pairs, for log.json."""
    return [[(p.token, round(p.probability, 4)) for p in row]
            for row in fill_mask(model, tokenizer, prompt, top_k)]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plot_losses(history: dict, baseline: dict | None, path: Path) -> None:
    from .viz import file_figure

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
    d = setup_distributed()
    out_dir = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else corpus_tokenizer()
    config = build_model_config(cfg, tokenizer)
    specials = special_ids(tokenizer)
    mask_args = masking_args(tokenizer, config)

    train_texts = corpus_texts("train")[:cfg.max_docs]
    train_seqs = tokenize_documents(train_texts, tokenizer, cfg.max_len)
    eval_batches = validation_slice(cfg, tokenizer, config)
    loader = PackedLoader(train_seqs, seed=cfg.seed)

    model = ModernBertForMaskedLM(config).to(d.device)
    optimizer = StableAdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                            eps=cfg.eps)
    scheduler = lr_scheduler(optimizer, warmup_steps=cfg.warmup_steps, decay_steps=cfg.decay_steps,
                             total_steps=cfg.max_steps, min_ratio=cfg.min_lr_ratio)
    step, tokens_seen, train_seconds = 0, 0, 0.0
    history = {"train": [], "eval": []}
    log = {"train_config": dataclasses.asdict(cfg), "model_config": config.to_hf_dict(),
           "world_size": d.world, "device": runtime.detect().summary(),
           "parameters": sum(p.numel() for p in model.parameters()),
           "train_tokens": train_seqs.num_tokens, "train_sequences": len(train_seqs),
           "eval_tokens": sum(b.num_tokens for b, _, _ in eval_batches)}

    saved = checkpoints(out_dir) if cfg.resume else []
    if saved:
        ckpt = saved[-1]
        load_hf_state_dict(model, read_state_dict(ckpt))
        state = torch.load(ckpt / STATE_FILE, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])
        step, tokens_seen, train_seconds = state["step"], state["tokens_seen"], state["train_seconds"]
        history = state["history"]
        log["fill_mask_before"] = state["fill_mask_before"]
        set_rng_state(torch.load(ckpt / f"rng-rank{d.rank}.pt", weights_only=True))
        log["resumed_from"] = str(ckpt)
    else:
        if d.main:  # a fresh run: checkpoints of an earlier run in out_dir would mix with ours
            for old in checkpoints(out_dir):
                shutil.rmtree(old)
        log["fill_mask_before"] = {p: guesses(model, tokenizer, p) for p in FILL_MASK_PROMPTS}
        if d.main:
            history["eval"].append({"step": 0, **evaluate(model, eval_batches, d.device)})
    baseline = unigram_baseline(train_seqs.tokens, eval_batches, config.vocab_size, specials)
    log["unigram_baseline"] = baseline

    ddp = (torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
        if d.world > 1 else model)
    model.train()

    def save(at_step: int) -> None:
        ckpt = out_dir / f"checkpoint-{at_step}"
        if d.main:
            model.save_pretrained(ckpt)
            torch.save({"step": at_step, "tokens_seen": tokens_seen, "train_seconds": train_seconds,
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "loader": loader.state_dict(), "history": history,
                        "fill_mask_before": log["fill_mask_before"]}, ckpt / STATE_FILE)
        d.barrier()  # the directory exists before the other ranks write into it
        torch.save(rng_state(), ckpt / f"rng-rank{d.rank}.pt")
        d.barrier()
        if d.main:
            for old in checkpoints(out_dir)[:-cfg.keep_checkpoints]:
                shutil.rmtree(old)

    from tqdm.auto import tqdm

    last = cfg.max_steps if cfg.stop_after is None else cfg.stop_after
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (d.main and cfg.progress),
               desc="pretraining", unit="step", dynamic_ncols=True)
    while step < last:
        started = time.perf_counter()
        budget = cfg.batch_tokens if cfg.batch_warmup_start is None else batch_size_schedule(
            tokens_seen, start=cfg.batch_warmup_start, end=cfg.batch_tokens,
            warmup_tokens=cfg.batch_warmup_tokens)
        batch = loader.next_batch(budget)  # the global batch, the same on every rank
        inputs, labels = mask_tokens(batch.input_ids, **mask_args, rate=cfg.mask_rate,
                                     generator=step_generator(cfg.seed, step))
        lr = optimizer.param_groups[0]["lr"]
        loss, grad_norm = train_step(ddp, optimizer, batch, inputs, labels, d, cfg.grad_clip)
        scheduler.step()
        step += 1
        tokens_seen += batch.num_tokens
        train_seconds += time.perf_counter() - started
        history["train"].append({"step": step, "loss": loss, "lr": lr, "tokens": batch.num_tokens,
                                 "grad_norm": None if grad_norm is None else float(grad_norm)})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_seen / max(train_seconds, 1e-9):.0f}")
        if d.main and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            history["eval"].append({"step": step, **evaluate(model, eval_batches, d.device)})
            bar.write(f"step {step}: validation loss {history['eval'][-1]['loss']:.4f}")
        if step % cfg.save_every == 0 or step == last:
            save(step)
    bar.close()

    log.update(history=history, steps=step, tokens_seen=tokens_seen, train_seconds=train_seconds,
               tokens_per_second=tokens_seen / max(train_seconds, 1e-9))
    log["params_max_diff_across_ranks"] = _param_spread(model, d)
    if step == cfg.max_steps and d.main:
        log["final_eval"] = history["eval"][-1]
        log["fill_mask_after"] = {p: guesses(model, tokenizer, p) for p in FILL_MASK_PROMPTS}
        model.save_pretrained(out_dir)
        save_tokenizer(tokenizer, out_dir)
    if d.main:
        plot_losses(history, baseline, out_dir / PLOT_FILE)
        (out_dir / LOG_FILE).write_text(json.dumps(log, indent=1) + "\n")
    d.barrier()
    return log


def _param_spread(model: torch.nn.Module, d: Dist) -> float:
    """The largest difference between this rank's parameters and rank 0's (0.0 when in sync)."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    if d.world == 1:
        return 0.0
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    spread = (flat - reference).abs().max()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return float(spread)


# ----------------------------------------------------------------------------- the small checkpoint
PRETRAINED_DIR = Path(__file__).parent / "assets" / "mini"  # `make mini-checkpoint` writes it
EXPORTED_LOG = ("train_config", "parameters", "train_tokens", "eval_tokens", "device", "steps",
                "tokens_seen", "train_seconds", "tokens_per_second", "unigram_baseline",
                "fill_mask_before", "fill_mask_after", "history")


def validate(directory: str | Path) -> dict:
    """A checkpoint's validation loss and accuracy, recomputed on the slice its run was scored on
    (the settings in its log.json), in float32 on the CPU."""
    directory = Path(directory)
    cfg = TrainConfig(**json.loads((directory / LOG_FILE).read_text())["train_config"])
    tokenizer = load_tokenizer(directory)
    model = ModernBertForMaskedLM.from_pretrained(directory)
    return evaluate(model, validation_slice(cfg, tokenizer, model.config), torch.device("cpu"))


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
    small = {key: log[key] for key in EXPORTED_LOG}
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
        raise FileNotFoundError(f"{directory} holds no model.safetensors: run `make mini-checkpoint`")
    return (ModernBertForMaskedLM.from_pretrained(directory), load_tokenizer(directory),
            json.loads((directory / LOG_FILE).read_text()))


# ----------------------------------------------------------------------------- the CLI
def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python -m modernbert_mini.train",
                                     description="Pretrain ModernBERT with MLM on the stdlib corpus.")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif f.name == "model_overrides":
            parser.add_argument(flag, type=json.loads, default={},
                                help='ModernBertConfig fields as JSON, e.g. \'{"num_hidden_layers": 4}\'')
        elif f.name == "betas":
            parser.add_argument(flag, type=float, nargs=2, default=default)
        elif f.type in ("int | None", "str | None"):
            kind = int if f.type.startswith("int") else str
            parser.add_argument(flag, type=kind, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)
    return TrainConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    log = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        final = log.get("final_eval")
        summary = {"steps": log["steps"], "tokens_per_second": round(log["tokens_per_second"], 1),
                   "final_train_loss": log["history"]["train"][-1]["loss"],
                   "validation": final, "unigram_baseline": log["unigram_baseline"]}
        print(json.dumps(summary, indent=1))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

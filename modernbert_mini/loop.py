"""The training core that pretraining (`train.py`, chapter 10) and fine-tuning (`finetune.py`,
chapter 11) share.

- `build_optimizer`: StableAdamW (chapter 9) and its warmup-stable-decay learning rate, as an
  `optim.OptimConfig` says (both loops hold one);
- `step`: one update from a loss: backward, optional gradient-norm clipping (`grad_clip` > 0),
  the optimizer, the schedule;
- `Dist`, `setup_distributed`, `shard`, `distribute`: data parallelism under torchrun, gloo on
  the CPU and nccl on a GPU; every rank builds the same global batch and trains on its share;
- `save_state`, `load_state`: a checkpoint directory (`checkpoint-<step>/`) holding the weights as
  transformers writes them and `training_state.pt` (optimizer, scheduler, data position, RNG,
  anything else the loop keeps), saved as tensors and plain containers so that it loads with
  weights_only=True; resuming from it continues bit for bit.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .hub import load_hf_state_dict, read_state_dict
from .optim import OptimConfig, StableAdamW, lr_scheduler, param_groups
from .packing import PackedBatch

STATE_FILE = "training_state.pt"


# ----------------------------------------------------------------------------- optimizer, one step
def build_optimizer(model: nn.Module, optim: OptimConfig, total_steps: int):
    """(StableAdamW, its warmup-stable-decay scheduler) for a run of total_steps updates, as
    `optim` says: lr, betas, eps, weight decay (none on norms and biases), decouple_lr, and the
    schedule (`OptimConfig.schedule`)."""
    optimizer = StableAdamW(param_groups(model, optim.weight_decay), lr=optim.lr,
                            betas=optim.betas, eps=optim.eps, decouple_lr=optim.decouple_lr)
    return optimizer, lr_scheduler(optimizer, **optim.schedule(total_steps))


def step(model: nn.Module, optimizer, scheduler, loss: torch.Tensor,
         grad_clip: float = 0.0) -> torch.Tensor | None:
    """backward, clip the gradient norm at grad_clip (0: no clipping), optimizer and schedule
    steps. Returns the gradient norm before clipping (None when not clipping)."""
    loss.backward()
    grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                 if grad_clip > 0 else None)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return grad_norm


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


def distribute(model: nn.Module, d: Dist) -> nn.Module:
    """The model wrapped in DistributedDataParallel under torchrun, else the model itself."""
    if d.world == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[d.device.index] if d.device.type == "cuda" else None)


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


def param_spread(model: nn.Module, d: Dist) -> float:
    """The largest difference between this rank's parameters and rank 0's (0.0 when in sync)."""
    if d.world == 1:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    spread = (flat - reference).abs().max()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return float(spread)


# ----------------------------------------------------------------------------- training state
def checkpoints(out_dir: Path) -> list[Path]:
    """checkpoint-<step> directories of out_dir, oldest first."""
    found = [p for p in Path(out_dir).glob("checkpoint-*") if (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def remove_checkpoints(out_dir: Path, d: Dist, keep: int = 0) -> None:
    """All but the newest `keep` checkpoints of out_dir go (rank 0 removes them)."""
    if d.main:
        found = checkpoints(out_dir)
        for old in found[:len(found) - keep]:
            shutil.rmtree(old)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(ckpt: Path, d: Dist, model: nn.Module, parts: dict, values: dict) -> None:
    """The model (save_pretrained), parts' state_dicts (optimizer, scheduler, loader ...) and
    plain values into ckpt; each rank's RNG state into rng-rank<r>.pt."""
    if d.main:
        model.save_pretrained(ckpt)
        torch.save({**values, **{name: part.state_dict() for name, part in parts.items()}},
                   ckpt / STATE_FILE)
    d.barrier()  # the directory exists before the other ranks write into it
    torch.save(rng_state(), ckpt / f"rng-rank{d.rank}.pt")
    d.barrier()


def load_state(ckpt: Path, d: Dist, model: nn.Module, parts: dict) -> dict:
    """What save_state wrote, back into model, parts and this rank's RNG; returns the values."""
    load_hf_state_dict(model, read_state_dict(ckpt))
    state = torch.load(ckpt / STATE_FILE, weights_only=True)
    for name, part in parts.items():
        part.load_state_dict(state.pop(name))
    set_rng_state(torch.load(ckpt / f"rng-rank{d.rank}.pt", weights_only=True))
    return state

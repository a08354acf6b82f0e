"""How ModernBERT is optimised: StableAdamW and its schedules. Chapter 9 teaches it.

ModernBERT trains with StableAdamW (Wortsman et al., 2023, "Stable and low-precision training
for large-scale vision-language models", Algorithm 2): AdamW whose step for each parameter
tensor is shrunk when the gradient is out of line with the second moment Adam has seen so far.
For one tensor with gradient g at step t (1-based):

    m_t = beta1 * m_{t-1} + (1 - beta1) * g          v_t = beta2 * v_{t-1} + (1 - beta2) * g^2
    m_hat = m_t / (1 - beta1^t)                      v_hat = v_t / (1 - beta2^t)
    rms = sqrt(mean(g^2 / max(v_hat, eps^2)))        over every element of the tensor
    lr_t = lr / max(1, rms)                          the update clipping of Adafactor
    p <- p * (1 - lr_t * weight_decay)               decoupled weight decay, torch-style (AdamW)
      or p * (1 - lr_t / lr_max * weight_decay)      ... or decoupled from the lr's size too
    p <- p - lr_t * m_hat / (sqrt(v_hat) + eps)

While rms <= 1 this is exactly AdamW (`torch.optim.AdamW` with the same betas, eps and decay).
A gradient spike makes g^2 much larger than v_hat, so rms > 1 and the step is divided by it:
no need for a global gradient-norm clip to keep one bad batch from throwing the weights away.
ModernBERT's settings: betas (0.9, 0.98), eps 1e-6, no weight decay on norms and biases
(`param_groups` builds the two groups from a model), and weight decay 1e-5 decoupled from the
learning rate's size as well (`decouple_lr=True`, optimi's "fully decoupled" decay, which
ModernBERT's configs call decoupled_stableadamw): lr_max is the group's lr when the optimizer is
built, so at the peak of the schedule a weight shrinks by weight_decay itself each step. With
torch's convention (`decouple_lr=False`, the default, as torch.optim.AdamW) the same 1e-5 is
multiplied by lr_t: 1e-5 * 2e-3 is 500 times weaker, weight decay in name only.

The schedules are plain functions of the step (or of the tokens seen), so a reader can plot
them and a test can check their corners:

- `wsd_schedule`: warmup-stable-decay, the "trapezoidal" learning rate of ModernBERT: a linear
  warmup, a long constant phase, then a 1-sqrt decay (Hägele et al., 2024). `lr_scheduler` wraps
  it in a `torch.optim.lr_scheduler.LambdaLR`, whose state_dict holds plain numbers only.
- `batch_size_schedule`: batch-size warmup, as ModernBERT's scheduler runs it. ModernBERT-base
  starts at 768 sequences a batch and reaches 4,608 after its first 50B tokens; every size in
  between is trained on for the same number of steps, so the batch size grows linearly in steps
  (and like the square root of the tokens seen). Here the unit is tokens per packed batch.

`OptimConfig` holds what a run sets of all this (the optimizer's settings, gradient clipping and
the schedule), once for pretraining (`train.TrainConfig.optim`) and fine-tuning
(`finetune.FinetuneConfig.optim`); `OptimConfig.schedule(total_steps)` gives `lr_scheduler` its
arguments, so a schedule is written one way: warmup and decay in updates.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn


def _check(name: str, value, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: {what}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- StableAdamW
class StableAdamW(torch.optim.Optimizer):
    """AdamW with per-tensor update clipping: each tensor's step divided by max(1, RMS(g^2 / v_hat)).

    params: tensors or parameter groups (see `param_groups`); lr: the peak learning rate (a
    scheduler multiplies it); betas, eps: Adam's; weight_decay: decoupled, multiplied by the
    (clipped) learning rate as in torch.optim.AdamW (decouple_lr=False), or by that learning
    rate over the group's lr at construction (decouple_lr=True, as optimi and ModernBERT).

    After each step, `state[p]["rms"]` holds that tensor's RMS (a 0-d tensor, no host sync),
    so a reader can see how often the clipping acts.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-6, weight_decay: float = 0.0, decouple_lr: bool = False):
        _check("lr", lr, isinstance(lr, (int, float)) and lr >= 0, "must be a number >= 0")
        _check("betas", betas, len(betas) == 2 and all(0 <= b < 1 for b in betas),
               "must be two numbers in [0, 1)")
        _check("eps", eps, isinstance(eps, (int, float)) and eps > 0, "must be a number > 0")
        _check("weight_decay", weight_decay,
               isinstance(weight_decay, (int, float)) and weight_decay >= 0, "must be >= 0")
        _check("decouple_lr", decouple_lr, isinstance(decouple_lr, bool), "must be True or False")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, decouple_lr=decouple_lr))
        for group in self.param_groups:  # lr_max, before any scheduler multiplies lr
            group.setdefault("max_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise ValueError("StableAdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - beta1)  # beta1 * m + (1 - beta1) * g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias1, bias2 = 1 - beta1 ** t, 1 - beta2 ** t
                v_hat = v / bias2
                rms = (g * g / v_hat.clamp(min=eps * eps)).mean().sqrt()  # 0-d
                step_lr = lr / rms.clamp(min=1.0)  # 0-d: lr, or less when the gradient spikes
                denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)  # sqrt(v_hat) + eps
                if weight_decay:  # torch-style, or relative to the peak lr
                    scale = step_lr / group["max_lr"] if group["decouple_lr"] else step_lr
                    p.mul_(1 - scale * weight_decay)
                p.sub_(step_lr / bias1 * m / denom)  # lr_t * m_hat / (sqrt(v_hat) + eps)
                state["rms"] = rms
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups for the optimizer: weights decay, norms and biases do not (as ModernBERT).

    A parameter is a norm's if it belongs to a LayerNorm (or any torch normalisation layer), a
    bias if its name ends in "bias". Tied parameters (the MLM decoder and the token embedding)
    appear once.
    """
    norms = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)
    no_decay_ids = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, norms) or name.endswith("bias"):
                no_decay_ids.add(id(param))
    decay, no_decay = [], []
    for param in model.parameters():  # each tensor once, tied ones included
        if param.requires_grad:
            (no_decay if id(param) in no_decay_ids else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------- schedules
def wsd_schedule(step: int, *, warmup_steps: int, decay_steps: int, total_steps: int,
                 min_ratio: float = 0.0) -> float:
    """Warmup-stable-decay: the factor the peak learning rate is multiplied by at `step`.

    Step s (0-based) of `total_steps` updates:
      warmup   s < warmup_steps:              (s + 1) / warmup_steps   (1/W up to 1, never 0)
      stable   up to total_steps - decay_steps: 1
      decay    the last decay_steps updates:   1 - sqrt(k / decay_steps), k = 0 .. decay_steps-1
               (1-sqrt decay), from 1 down towards min_ratio: factor = min_ratio + (1 - min_ratio) * that
    Past the end (s >= total_steps) the factor is min_ratio.
    """
    for name, value in (("warmup_steps", warmup_steps), ("decay_steps", decay_steps)):
        _check(name, value, _is_int(value) and value >= 0, "must be an integer >= 0")
    _check("total_steps", total_steps, _is_int(total_steps) and total_steps >= 1,
           "must be an integer >= 1")
    _check("warmup_steps + decay_steps", warmup_steps + decay_steps,
           warmup_steps + decay_steps <= total_steps, f"must be <= total_steps={total_steps}")
    _check("min_ratio", min_ratio, 0 <= min_ratio <= 1, "must be in [0, 1]")
    _check("step", step, _is_int(step) and step >= 0, "must be an integer >= 0")
    if step >= total_steps:
        return float(min_ratio)
    decay_start = total_steps - decay_steps
    if step >= decay_start:
        progress = (step - decay_start) / decay_steps  # 0 at the first decay update
        return min_ratio + (1.0 - min_ratio) * (1.0 - math.sqrt(progress))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 1.0


def lr_scheduler(optimizer: torch.optim.Optimizer, **schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """`wsd_schedule` as a LambdaLR: the group's lr is its peak lr times the schedule's factor.

    schedule: warmup_steps, decay_steps, total_steps, min_ratio (see `wsd_schedule`).
    """
    wsd_schedule(0, **schedule)  # fail here, with the schedule's own message, not at step k
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(wsd_schedule, **schedule))


def batch_size_schedule(tokens_seen: int, *, start: int, end: int, warmup_tokens: int,
                        multiple: int = 1) -> int:
    """Batch-size warmup: the batch size once `tokens_seen` tokens have been trained on.

    As ModernBERT's scheduler: the sizes s_0 = start, s_1 = start + multiple, ..., up to the last
    below `end` each hold in turn, s_k until

        ceil(warmup_tokens * (s_0 + ... + s_k) / (s_0 + ... + s_n))   tokens,

    so that each size lasts warmup_tokens / (s_0 + ... + s_n) steps, the same number for all;
    then `end`, from warmup_tokens on. With warmup_tokens=0 (or start == end) it is `end`.
    """
    for name, value in (("start", start), ("end", end), ("multiple", multiple)):
        _check(name, value, _is_int(value) and value >= 1, "must be an integer >= 1")
    _check("end", end, end >= start, f"must be >= start={start}")
    _check("warmup_tokens", warmup_tokens, _is_int(warmup_tokens) and warmup_tokens >= 0,
           "must be an integer >= 0")
    _check("tokens_seen", tokens_seen, _is_int(tokens_seen) and tokens_seen >= 0,
           "must be an integer >= 0")
    if tokens_seen >= warmup_tokens or start == end:
        return end
    n = -(-(end - start) // multiple)  # the sizes start + k * multiple below end: k = 0 .. n-1

    def through(k: int) -> int:  # s_0 + ... + s_k
        return (k + 1) * start + multiple * k * (k + 1) // 2

    def threshold(k: int) -> int:  # the tokens at which s_k gives way: a ceiling, in integers
        return -(-warmup_tokens * through(k) // through(n - 1))

    lo, hi = 0, n - 1  # the first k whose threshold is above tokens_seen (k = n-1 always is)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if threshold(mid) <= tokens_seen else (lo, mid)
    return start + lo * multiple


# ----------------------------------------------------------------------------- a run's settings
@dataclass(frozen=True)
class OptimConfig:
    """StableAdamW, gradient clipping and the warmup-stable-decay schedule, as a run sets them.

    The defaults are ModernBERT's pretraining recipe at this book's scale: betas (0.9, 0.98), eps
    1e-6, weight decay 1e-5 decoupled from the lr's size (`decouple_lr`), no gradient-norm clip
    (StableAdamW clips each update). warmup_steps and decay_steps count updates; a value below 1
    is a share of the run's updates, for a run that learns its length only from its data
    (fine-tuning), as transformers' `TrainingArguments.warmup_steps` reads it.
    """

    lr: float = 2e-3  # the peak learning rate
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 1e-5  # on weights; none on norms and biases (`param_groups`)
    decouple_lr: bool = True  # the decay relative to the peak lr (ModernBERT), not times lr_t
    grad_clip: float = 0.0  # max global gradient norm; 0: no clipping
    warmup_steps: float = 0  # linear warmup: updates, or a share of them below 1
    decay_steps: float = 0  # 1-sqrt decay at the end: updates, or a share of them below 1
    min_lr_ratio: float = 0.0  # where the decay ends, as a share of the peak lr

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(self.betas))  # a list from JSON or the CLI
        _check("lr", self.lr, isinstance(self.lr, (int, float)) and self.lr > 0, "must be > 0")
        _check("betas", self.betas, len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
               "must be two numbers in [0, 1)")
        _check("eps", self.eps, self.eps > 0, "must be > 0")
        for name in ("weight_decay", "grad_clip"):
            _check(name, getattr(self, name), getattr(self, name) >= 0, "must be >= 0")
        _check("decouple_lr", self.decouple_lr, isinstance(self.decouple_lr, bool),
               "must be True or False")
        for name in ("warmup_steps", "decay_steps"):
            value = getattr(self, name)
            _check(name, value, value >= 0 and (value < 1 or value == int(value)),
                   "must be a whole number of updates, or a share of them in [0, 1)")
        shares = [v for v in (self.warmup_steps, self.decay_steps) if v < 1]
        _check("warmup_steps + decay_steps", sum(shares), len(shares) < 2 or sum(shares) <= 1,
               "as shares of the run, must be <= 1")
        _check("min_lr_ratio", self.min_lr_ratio, 0 <= self.min_lr_ratio <= 1, "must be in [0, 1]")

    def schedule(self, total_steps: int) -> dict:
        """`lr_scheduler`'s (and `wsd_schedule`'s) arguments for a run of total_steps updates:
        shares rounded to whole updates, a decay share cut to what the warmup leaves."""
        def updates(value: float) -> int:
            return round(value * total_steps) if value < 1 else int(value)
        warmup, decay = updates(self.warmup_steps), updates(self.decay_steps)
        if self.decay_steps < 1:  # a share: rounding may not overrun the run
            decay = min(decay, total_steps - warmup)
        return dict(warmup_steps=warmup, decay_steps=decay, total_steps=total_steps,
                    min_ratio=self.min_lr_ratio)

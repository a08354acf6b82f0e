"""StableAdamW against its update rule written out plainly and against torch.optim.AdamW; the
parameter groups; the schedules at their corners."""

import io
import math

import pytest
import torch

from modernbert_mini import ModernBertConfig, ModernBertForMaskedLM
from modernbert_mini.optim import (OptimConfig, StableAdamW, batch_size_schedule, lr_scheduler,
                                   param_groups, wsd_schedule)


def plain_stable_adamw(p, grads, lr, betas, eps, weight_decay, lrs=None, decouple_lr=False):
    """Wortsman et al. (2023), Algorithm 2, one line per formula, for one tensor.

    lrs: the scheduled learning rate of each step (default: lr every step); decouple_lr: the
    decay is multiplied by lr_t / lr (optimi's fully decoupled decay, as ModernBERT) instead of lr_t.
    Returns the parameter after each step and the RMS of each step.
    """
    beta1, beta2 = betas
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    params, rmss = [], []
    lrs = [lr] * len(grads) if lrs is None else lrs
    for t, (g, lr_sched) in enumerate(zip(grads, lrs), start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g ** 2
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        rms = torch.sqrt(torch.mean(g ** 2 / torch.maximum(v_hat, torch.full_like(v_hat, eps ** 2))))
        lr_t = lr_sched / max(1.0, rms.item())
        p = p - (lr_t / lr if decouple_lr else lr_t) * weight_decay * p
        p = p - lr_t * m_hat / (torch.sqrt(v_hat) + eps)
        params.append(p)
        rmss.append(rms.item())
    return params, rmss


def run_optimizer(optimizer_cls, p0, grads, **kwargs):
    p = torch.nn.Parameter(p0.clone())
    opt = optimizer_cls([p], **kwargs)
    params, rmss = [], []
    for g in grads:
        p.grad = g.clone()
        opt.step()
        params.append(p.detach().clone())
        rmss.append(opt.state[p]["rms"].item() if "rms" in opt.state[p] else None)
    return params, rmss


def spiky_grads(dtype=torch.float64, steps=8, spike_at=5, spike=1e3):
    """Gradients that shrink a little each step (so RMS <= 1: no clipping), and one spike."""
    base = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=dtype) * 1e-2
    grads = [base * 0.9 ** t for t in range(steps)]
    grads[spike_at] = grads[spike_at] * spike
    return grads


SETTINGS = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)


def test_matches_the_plain_rule_through_a_gradient_spike():
    p0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = spiky_grads()
    expected, expected_rms = plain_stable_adamw(p0, grads, **SETTINGS)
    got, got_rms = run_optimizer(StableAdamW, p0, grads, **SETTINGS)
    assert expected_rms[5] > 2  # the spike triggers the clipping
    for step, (e, g) in enumerate(zip(expected, got)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14, msg=f"step {step}")
    assert got_rms == pytest.approx(expected_rms, rel=1e-12)


def test_decouple_lr_scales_the_decay_by_the_schedule_not_by_the_lr():
    """decouple_lr=True: p <- p * (1 - lr_t / lr_max * wd), lr_max the lr at construction, under a
    scheduler; with lr 1e-2 that decay is 100 times the torch-style one."""
    p0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    grads = spiky_grads()
    factors = [wsd_schedule(s, warmup_steps=3, decay_steps=3, total_steps=8) for s in range(8)]
    settings = dict(SETTINGS, weight_decay=1e-3)
    expected, _ = plain_stable_adamw(p0, grads, **settings, decouple_lr=True,
                                     lrs=[settings["lr"] * f for f in factors])
    p = torch.nn.Parameter(p0.clone())
    opt = StableAdamW([p], **settings, decouple_lr=True)
    sched = lr_scheduler(opt, warmup_steps=3, decay_steps=3, total_steps=8)
    for step, (g, e) in enumerate(zip(grads, expected)):
        p.grad = g.clone()
        opt.step()
        sched.step()
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14, msg=f"step {step}")
    # and it is not the torch-style rule: decay alone, a zero gradient's Adam step is zero
    for decouple, shrink in ((True, 1 - 1e-3), (False, 1 - 1e-2 * 1e-3)):
        q = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        opt = StableAdamW([q], **settings, decouple_lr=decouple)
        q.grad = torch.zeros_like(q)
        opt.step()
        torch.testing.assert_close(q.detach(), torch.full_like(q, shrink), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="decouple_lr"):
        StableAdamW([q], decouple_lr="yes")


def test_spike_step_is_adamw_step_divided_by_rms():
    """Without weight decay, the clipped step is AdamW's step divided by the RMS."""
    p0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = spiky_grads()
    settings = dict(SETTINGS, weight_decay=0.0)
    p_adamw, p_stable = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    adamw = torch.optim.AdamW([p_adamw], **settings)
    stable = StableAdamW([p_stable], **settings)

    def step(g):
        for param, opt in ((p_adamw, adamw), (p_stable, stable)):
            param.grad = g.clone()
            opt.step()

    for g in grads[:5]:  # no clipping before the spike: the two agree
        step(g)
        assert stable.state[p_stable]["rms"].item() <= 1.0
    torch.testing.assert_close(p_stable.detach(), p_adamw.detach(), rtol=1e-12, atol=1e-14)
    before = p_adamw.detach().clone()
    step(grads[5])
    spike_rms = stable.state[p_stable]["rms"].item()
    assert spike_rms > 2
    torch.testing.assert_close(p_stable.detach() - before, (p_adamw.detach() - before) / spike_rms,
                               rtol=1e-10, atol=1e-15)


def test_equals_torch_adamw_when_clipping_never_triggers():
    """Shrinking gradients keep g^2 below v_hat, so RMS <= 1 and the update is plain AdamW."""
    torch.manual_seed(0)
    model_a = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    model_b = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    model_b.load_state_dict(model_a.state_dict())
    opt_a = StableAdamW(param_groups(model_a, 0.1), lr=1e-2, betas=(0.9, 0.98), eps=1e-6)
    opt_b = torch.optim.AdamW(param_groups(model_b, 0.1), lr=1e-2, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(3)
    base = {name: torch.randn(p.shape, generator=gen) for name, p in model_a.named_parameters()}
    for step in range(20):
        for model in (model_a, model_b):
            for name, p in model.named_parameters():
                p.grad = base[name] * 0.9 ** step  # each step's gradient a little smaller
        opt_a.step()
        opt_b.step()
        assert all(opt_a.state[p]["rms"].item() <= 1.0 for p in model_a.parameters())
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_state_dict_round_trip_with_weights_only():
    p0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(4))
    grads = spiky_grads(torch.float32, steps=6, spike_at=2)
    full, _ = run_optimizer(StableAdamW, p0, grads, **SETTINGS)

    p = torch.nn.Parameter(p0.clone())
    opt = StableAdamW([p], **SETTINGS)
    for g in grads[:3]:
        p.grad = g.clone()
        opt.step()
    buffer = io.BytesIO()
    torch.save({"param": p.detach(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    q = torch.nn.Parameter(saved["param"].clone())
    resumed = StableAdamW([q], **SETTINGS)
    resumed.load_state_dict(saved["optimizer"])
    for g in grads[3:]:
        q.grad = g.clone()
        resumed.step()
    assert torch.equal(q.detach(), full[-1])


def test_bad_arguments():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="betas"):
        StableAdamW(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="eps"):
        StableAdamW(p, eps=0)
    with pytest.raises(ValueError, match="lr"):
        StableAdamW(p, lr=-1)


def test_param_groups_leave_norms_and_biases_undecayed():
    model = ModernBertForMaskedLM(ModernBertConfig.mini(num_hidden_layers=2, hidden_size=64,
                                                        intermediate_size=96, vocab_size=128))
    decay, no_decay = param_groups(model, 1e-5)
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert no_decay_names == {n for n in names.values() if "norm" in n or n.endswith("bias")}
    assert "decoder.bias" in no_decay_names and "model.final_norm.weight" in no_decay_names
    assert "model.embeddings.tok_embeddings.weight" in decay_names  # also the tied decoder
    assert "model.layers.1.attn.Wqkv.weight" in decay_names
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


# ----------------------------------------------------------------------------- schedules
WSD = dict(warmup_steps=10, decay_steps=20, total_steps=100)


def test_wsd_corners():
    f = lambda s, **kw: wsd_schedule(s, **{**WSD, **kw})  # noqa: E731
    assert f(0) == pytest.approx(0.1)  # the first update already moves
    assert f(4) == pytest.approx(0.5)
    assert f(9) == 1.0 and f(10) == 1.0  # warmup ends at the peak
    assert f(79) == 1.0 and f(80) == 1.0  # last stable step, first decay step
    assert f(85) == pytest.approx(1 - math.sqrt(5 / 20))
    assert f(99) == pytest.approx(1 - math.sqrt(19 / 20))
    assert f(100) == 0.0 and f(1000) == 0.0
    assert f(99, min_ratio=0.1) == pytest.approx(0.1 + 0.9 * (1 - math.sqrt(19 / 20)))
    assert f(100, min_ratio=0.1) == pytest.approx(0.1)
    values = [f(s) for s in range(100)]
    assert all(a <= b for a, b in zip(values[:10], values[1:10]))  # rises, then never rises again
    assert all(a >= b for a, b in zip(values[9:], values[10:]))
    # no warmup / no decay
    assert wsd_schedule(0, warmup_steps=0, decay_steps=0, total_steps=5) == 1.0
    assert wsd_schedule(4, warmup_steps=0, decay_steps=0, total_steps=5) == 1.0


def test_wsd_bad_arguments():
    with pytest.raises(ValueError, match="warmup_steps \\+ decay_steps"):
        wsd_schedule(0, warmup_steps=60, decay_steps=50, total_steps=100)
    with pytest.raises(ValueError, match="step"):
        wsd_schedule(-1, **WSD)
    with pytest.raises(ValueError, match="total_steps"):
        wsd_schedule(0, warmup_steps=0, decay_steps=0, total_steps=0)


def test_lr_scheduler_applies_the_schedule():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = StableAdamW([p], lr=2e-3)
    sched = lr_scheduler(opt, **WSD)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2e-3 * wsd_schedule(s, **WSD) for s in range(100)])
    state = sched.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)  # plain numbers: loads without pickled code
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_scheduler(opt, warmup_steps=-1, decay_steps=0, total_steps=5)


def test_batch_size_schedule_follows_the_official_thresholds():
    """Sizes 2, 3, 4 (sum 9) over 90 tokens: 2 until ceil(90 * 2/9) = 20 tokens, 3 until
    ceil(90 * 5/9) = 50, 4 until 90, then 5. Each size lasts 10 steps."""
    bs = dict(start=2, end=5, warmup_tokens=90)
    expected = {0: 2, 19: 2, 20: 3, 49: 3, 50: 4, 89: 4, 90: 5, 10**6: 5}
    assert {t: batch_size_schedule(t, **bs) for t in expected} == expected
    # multiple=2, sizes 2, 4, 6 (sum 12) over 120 tokens: thresholds 20, 60, 120
    bs2 = dict(start=2, end=7, warmup_tokens=120, multiple=2)
    expected = {0: 2, 19: 2, 20: 4, 59: 4, 60: 6, 119: 6, 120: 7}
    assert {t: batch_size_schedule(t, **bs2) for t in expected} == expected
    # ceilings: 100 tokens, sizes 2, 3, 4: thresholds ceil(22.2) = 23, ceil(55.6) = 56, 100
    expected = {22: 2, 23: 3, 55: 3, 56: 4, 99: 4, 100: 5}
    assert {t: batch_size_schedule(t, start=2, end=5, warmup_tokens=100) for t in expected} == expected


def test_batch_size_schedule_gives_every_size_the_same_steps():
    """Trained step by step, each size from 768 to 4,607 (multiple 64) lasts the same number of
    steps, so the size grows linearly in steps, not in tokens."""
    bs = dict(start=768, end=4608, warmup_tokens=60 * 1000 * (768 + 4608 - 64) // 2, multiple=64)
    tokens, steps_at = 0, {}
    while tokens < bs["warmup_tokens"]:
        size = batch_size_schedule(tokens, **bs)
        steps_at[size] = steps_at.get(size, 0) + 1
        tokens += size
    assert sorted(steps_at) == list(range(768, 4608, 64))
    assert set(steps_at.values()) <= {999, 1000, 1001}  # 1,000 steps each, give or take a ceiling
    assert batch_size_schedule(tokens, **bs) == 4608


def test_batch_size_schedule_corners():
    bs = dict(start=768, end=4608, warmup_tokens=1000)
    assert batch_size_schedule(0, **bs) == 768
    assert batch_size_schedule(999, **bs) < 4608
    assert batch_size_schedule(1000, **bs) == 4608 and batch_size_schedule(10**9, **bs) == 4608
    assert batch_size_schedule(1, start=100, end=1000, warmup_tokens=100, multiple=64) == 100
    sizes = [batch_size_schedule(t, **bs) for t in range(0, 1100, 7)]
    assert sizes == sorted(sizes)
    assert batch_size_schedule(0, start=5, end=5, warmup_tokens=0) == 5
    with pytest.raises(ValueError, match="end"):
        batch_size_schedule(0, start=10, end=5, warmup_tokens=10)


def test_a_run_writes_its_schedule_in_updates_or_shares_of_them():
    """OptimConfig.schedule by hand: whole numbers are updates (pretraining's 50 and 170 of 850),
    numbers below 1 shares of the run (fine-tuning's 10% and 30% of 10 updates: 1 and 3); a
    decay share that rounding would push past the run is cut to what the warmup leaves."""
    assert OptimConfig(warmup_steps=50, decay_steps=170).schedule(850) == dict(
        warmup_steps=50, decay_steps=170, total_steps=850, min_ratio=0.0)
    assert OptimConfig(warmup_steps=0.1, decay_steps=0.3, min_lr_ratio=0.1).schedule(10) == dict(
        warmup_steps=1, decay_steps=3, total_steps=10, min_ratio=0.1)
    assert OptimConfig(warmup_steps=0.5, decay_steps=0.5).schedule(3)["decay_steps"] == 1  # 2 + 2 > 3
    assert OptimConfig(warmup_steps=1, decay_steps=0).schedule(4)["warmup_steps"] == 1  # 1: one update
    for bad, match in [(dict(lr=0), "lr=0"), (dict(betas=(0.9, 1.0)), "betas"), (dict(eps=0), "eps"),
                       (dict(weight_decay=-1), "weight_decay"), (dict(grad_clip=-1), "grad_clip"),
                       (dict(warmup_steps=1.5), "warmup_steps=1.5"), (dict(min_lr_ratio=2), "min_lr_ratio")]:
        with pytest.raises(ValueError, match=match):
            OptimConfig(**bad)

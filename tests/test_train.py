"""The pretraining loop on a tiny model: exact resume, two gloo processes against one, the output
directory in transformers, the loss normalisation against sequences run one at a time."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from modernbert_mini import ModernBertConfig, ModernBertForMaskedLM
from modernbert_mini.data import corpus_texts
from modernbert_mini.inference import fill_mask
from modernbert_mini.mlm import mask_tokens, masking_args, step_generator, tokenize_documents
from modernbert_mini.packing import PackedLoader
from modernbert_mini.model import IGNORE_INDEX
from modernbert_mini.optim import OptimConfig
from modernbert_mini.tokenizer import MASK_ID, load_tokenizer, save_tokenizer, train_tokenizer
from modernbert_mini.loop import shard
from modernbert_mini.mlm import masked_loss_sum
from modernbert_mini.train import LOG_FILE, PLOT_FILE, TrainConfig, parse_args, train, validation_batches

TINY = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
            local_attention=16)  # layer 0 global, 1 and 2 local with a window the sequences exceed


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(train_tokenizer(corpus_texts("train")[:8], vocab_size=320), directory)
    return directory


def tiny_config(tokenizer_dir, out_dir, **changes) -> TrainConfig:
    settings = dict(out_dir=str(out_dir), tokenizer=str(tokenizer_dir), model_overrides=TINY,
                    max_len=64, max_docs=8, val_docs=2, batch_tokens=384, batch_warmup_start=192,
                    batch_warmup_tokens=1500, lr=3e-3, max_steps=8, warmup_steps=2, decay_steps=3,
                    eval_every=4, eval_tokens=512, save_every=4, progress=False, seed=5,
                    position_eval_len=128)
    return TrainConfig.from_dict({**settings, **changes})  # optim's fields among the others


@pytest.fixture(scope="module")
def uninterrupted(tokenizer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    return out, train(tiny_config(tokenizer_dir, out))


def test_run_writes_model_tokenizer_curve_and_log(uninterrupted):
    out, log = uninterrupted
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 PLOT_FILE, LOG_FILE, "checkpoint-4", "checkpoint-8"):
        assert (out / name).exists(), name
    assert json.loads((out / LOG_FILE).read_text())["steps"] == 8
    evals = log["history"]["eval"]
    assert [e["step"] for e in evals] == [0, 4, 8]
    assert evals[-1]["loss"] < evals[0]["loss"]  # it learns
    assert 0 <= evals[-1]["mask_accuracy"] <= 1 and evals[0]["masked_tokens"] > 50
    tokens = [row["tokens"] for row in log["history"]["train"]]
    assert tokens[0] <= 192 and max(tokens) > 192  # batch-size warmup: the budget grows
    lrs = [row["lr"] for row in log["history"]["train"]]
    assert lrs[0] == pytest.approx(1.5e-3) and lrs[2] == pytest.approx(3e-3)  # warmup of 2 steps
    assert all(row["grad_norm"] is None for row in log["history"]["train"])  # no global clip
    assert all(e["loss_15"] != e["loss"] and e["loss_15"] > 0 for e in evals)  # 15% masking too
    for key in ("position_loss_before", "position_loss"):
        assert log[key]["length"] == 128
        assert [(b["start"], b["stop"]) for b in log[key]["buckets"]] == [(0, 64), (64, 128)]
    assert log["position_loss"]["buckets"][0]["loss"] < log["position_loss_before"]["buckets"][0]["loss"]


def test_init_from_continues_the_run_with_the_changes_asked(uninterrupted, tokenizer_dir, tmp_path):
    """Context extension: the same weights and the same slices give the same loss by position
    before training; a higher global RoPE theta changes it, and the new config keeps it."""
    out, log = uninterrupted
    same = train(tiny_config(None, tmp_path / "same", tokenizer=None, init_from=str(out),
                             model_overrides={}, max_steps=1, warmup_steps=0, decay_steps=1))
    assert same["position_loss_before"] == log["position_loss"]
    assert same["history"]["eval"][0]["loss"] == log["history"]["eval"][-1]["loss"]
    wider = train(tiny_config(None, tmp_path / "wider", tokenizer=None, init_from=str(out),
                              model_overrides={"global_rope_theta": 1e6}, max_len=128,
                              batch_tokens=512, batch_warmup_start=None, max_steps=2,
                              warmup_steps=1, decay_steps=1))
    assert wider["position_loss_before"] != log["position_loss"]
    assert json.loads((tmp_path / "wider" / "config.json").read_text())["global_rope_theta"] == 1e6
    assert wider["train_config"]["init_from"] == str(out)
    assert wider["init_from_run"]["position_loss"] == log["position_loss"]  # for the comparison
    assert wider["init_from_run"]["final_eval"] == log["final_eval"]


def test_validation_accuracy_counts_the_argmax_hits(uninterrupted, tokenizer_dir):
    """The last evaluation's accuracies, counted again here from the saved model's logits."""
    out, log = uninterrupted
    cfg = tiny_config(tokenizer_dir, out)
    model = ModernBertForMaskedLM.from_pretrained(out).eval()
    hits, count, mask_hits, mask_count = 0, 0, 0, 0
    for batch, inputs, labels in validation_batches(cfg, load_tokenizer(out), model.config):
        with torch.no_grad():  # no labels: logits at every token, (T, V)
            logits = model(inputs, cu_seqlens=batch.cu_seqlens, max_seqlen=batch.max_seqlen).logits
        chosen = labels != IGNORE_INDEX
        right = logits.argmax(-1)[chosen] == labels[chosen]  # (n,)
        as_mask = inputs[chosen] == MASK_ID
        hits, count = hits + int(right.sum()), count + int(chosen.sum())
        mask_hits, mask_count = mask_hits + int(right[as_mask].sum()), mask_count + int(as_mask.sum())
    final = log["history"]["eval"][-1]
    assert final["masked_tokens"] == count
    assert final["accuracy"] == pytest.approx(hits / count, abs=1.5 / count)  # a near tie at most
    assert final["mask_accuracy"] == pytest.approx(mask_hits / mask_count, abs=1.5 / mask_count)
    assert 0 < mask_hits < mask_count  # 8 steps: some right, not all


def test_resume_gives_the_same_losses_bit_for_bit(uninterrupted, tokenizer_dir, tmp_path):
    out, full = uninterrupted
    first = train(tiny_config(tokenizer_dir, tmp_path, stop_after=3, save_every=100))
    assert first["steps"] == 3 and (tmp_path / "checkpoint-3").is_dir()
    assert not (tmp_path / "model.safetensors").exists()  # not finished: no final export
    state = torch.load(tmp_path / "checkpoint-3" / "training_state.pt", weights_only=True)
    assert state["step"] == 3 and state["loader"]["position"] > 0
    resumed = train(tiny_config(tokenizer_dir, tmp_path, resume=True, save_every=100))
    assert resumed["resumed_from"].endswith("checkpoint-3")
    losses = [row["loss"] for row in resumed["history"]["train"]]
    assert losses == [row["loss"] for row in full["history"]["train"]]  # exactly equal floats
    assert [e["loss"] for e in resumed["history"]["eval"]] == [e["loss"] for e in full["history"]["eval"]]
    a, b = load_file(out / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_gloo_processes_stay_in_sync_and_match_one(uninterrupted, tokenizer_dir, tmp_path):
    out, single = uninterrupted
    cfg = tiny_config(tokenizer_dir, tmp_path)
    args = [f"--out-dir={tmp_path}", f"--tokenizer={tokenizer_dir}",
            f"--model-overrides={json.dumps(TINY)}"]
    for name in ("max_len", "max_docs", "val_docs", "batch_tokens", "batch_warmup_start",
                 "batch_warmup_tokens", "max_steps", "eval_every", "eval_tokens", "save_every",
                 "seed"):
        args.append(f"--{name.replace('_', '-')}={getattr(cfg, name)}")
    for name in ("lr", "warmup_steps", "decay_steps"):
        args.append(f"--{name.replace('_', '-')}={getattr(cfg.optim, name)}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", "-m", "modernbert_mini.train", *args,
                             "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((tmp_path / LOG_FILE).read_text())
    assert log["world_size"] == 2
    assert log["params_max_diff_across_ranks"] == 0.0  # the two ranks hold the same weights
    ddp_losses = [row["loss"] for row in log["history"]["train"]]
    one_losses = [row["loss"] for row in single["history"]["train"]]
    assert ddp_losses == pytest.approx(one_losses, rel=1e-5)  # same global batch, same steps
    a, b = load_file(out / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


def test_output_loads_in_transformers_with_the_same_predictions(uninterrupted):
    transformers = pytest.importorskip("transformers")
    out, _ = uninterrupted
    hf_model = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert isinstance(hf_tokenizer, transformers.PreTrainedTokenizerFast)
    ours = ModernBertForMaskedLM.from_pretrained(out)
    tokenizer = load_tokenizer(out)
    text = "def f(x):\n    return [MASK] + 1"
    ids = tokenizer.encode(text).ids
    assert hf_tokenizer(text)["input_ids"] == ids
    with torch.no_grad():
        expected = hf_model(torch.tensor([ids])).logits
        got = ours(torch.tensor([ids])).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    pipe = transformers.pipeline("fill-mask", model=hf_model, tokenizer=hf_tokenizer, device="cpu")
    hf_guesses = [(g["token_str"], g["score"]) for g in pipe(text, top_k=3)]
    our_guesses = [(p.token, p.probability) for p in fill_mask(ours, tokenizer, text, top_k=3)[0]]
    assert [t for t, _ in our_guesses] == [t for t, _ in hf_guesses]
    assert [p for _, p in our_guesses] == pytest.approx([p for _, p in hf_guesses], abs=1e-3)


def test_packed_loss_is_the_loss_of_the_sequences_one_by_one(tokenizer_dir):
    """Packing changes nothing: no document sees another, and the loss sums match."""
    tokenizer = load_tokenizer(tokenizer_dir)
    config = ModernBertConfig.mini(vocab_size=320, sparse_prediction=True, **TINY)
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(config).eval()
    seqs = tokenize_documents(corpus_texts("train")[:3], tokenizer, max_len=64)
    batch = PackedLoader(seqs, shuffle=False).next_batch(300)
    inputs, labels = mask_tokens(batch.input_ids, mask_id=MASK_ID, vocab_size=320,
                                 special_ids=range(5), generator=torch.Generator().manual_seed(0))
    n = int((labels != IGNORE_INDEX).sum())
    with torch.no_grad():
        packed, _ = masked_loss_sum(model, inputs, labels, batch, n, torch.device("cpu"))
        alone = 0.0
        for a, b in zip(batch.cu_seqlens[:-1].tolist(), batch.cu_seqlens[1:].tolist()):
            out = model(inputs[a:b][None], labels=labels[a:b][None])  # (1, L): one document
            alone += out.loss * int((labels[a:b] != IGNORE_INDEX).sum())
    assert batch.num_sequences >= 3
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-4)


def test_shard_splits_sequences_by_tokens(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    seqs = tokenize_documents(corpus_texts("train")[:4], tokenizer, max_len=64)
    batch = PackedLoader(seqs, seed=0).next_batch(1000)
    for world in (1, 2, 3):
        parts = [shard(batch, r, world) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == batch.num_sequences
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(parts, parts[1:]))
        sizes = [int(batch.cu_seqlens[b] - batch.cu_seqlens[a]) for a, b in parts]
        assert max(sizes) - min(sizes) <= 2 * 64  # balanced to within a sequence or two
    with pytest.raises(ValueError, match="cannot be shared"):
        shard(batch.select(0, 1), 0, 2)


def test_cli_and_bad_settings():
    cfg = parse_args(["--max-steps=7", "--no-sparse-prediction", "--betas", "0.8", "0.9",
                      '--model-overrides={"num_hidden_layers": 2}', "--max-docs=3"])
    assert cfg.max_steps == 7 and cfg.sparse_prediction is False and cfg.optim.betas == (0.8, 0.9)
    assert cfg.optim == OptimConfig(betas=(0.8, 0.9), warmup_steps=50, decay_steps=100)  # the rest: defaults
    assert cfg.model_overrides == {"num_hidden_layers": 2} and cfg.max_docs == 3
    with pytest.raises(ValueError, match="batch_tokens"):
        TrainConfig(batch_tokens=100, max_len=512)
    with pytest.raises(ValueError, match="model_size"):
        TrainConfig(model_size="huge")
    with pytest.raises(ValueError, match="stop_after"):
        TrainConfig(max_steps=5, stop_after=6)


class OptimizerSteps:
    """Reads every optimizer step back from the optimizer itself, as it is about to step (a
    global step pre-hook of torch.optim): its parameter groups' settings, its learning rate and
    the norm of the gradients it is handed (after any clipping)."""

    def __enter__(self):
        self.steps = []
        self.handle = register_optimizer_step_pre_hook(self.record)
        return self

    def record(self, optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.steps.append({"groups": [{k: v for k, v in g.items() if k != "params"}
                                      for g in optimizer.param_groups],
                           "grad_norm": float(torch.linalg.vector_norm(
                               torch.stack([torch.linalg.vector_norm(g) for g in grads])))})

    def __exit__(self, *exc):
        self.handle.remove()


def test_the_configs_optimizer_settings_reach_the_optimizer(tokenizer_dir, tmp_path):
    """Settings that differ from every default, read back from the optimizer at each step:
    betas, eps, weight decay (on weights, none on norms and biases), decouple_lr, the peak lr and
    the warmup-stable-decay factors worked out by hand (warmup 2 of 5 steps: 1/2, 1; stable: 1;
    decay 2: 1, 1 - sqrt(1/2)); with grad_clip > 0 the gradients the optimizer gets have at most
    that norm, and the log has the norms before clipping. Fails if build_optimizer drops any of
    the settings, if the schedule is not the config's, or if clipping is skipped."""
    cfg = tiny_config(tokenizer_dir, tmp_path, max_steps=5, warmup_steps=2, decay_steps=2,
                      lr=4e-3, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.05, decouple_lr=False,
                      grad_clip=0.05, eval_every=5, save_every=5, position_eval_len=64)
    with OptimizerSteps() as seen:
        log = train(cfg)
    factors = [0.5, 1.0, 1.0, 1.0, 1 - math.sqrt(0.5)]
    assert len(seen.steps) == 5
    for step, factor in zip(seen.steps, factors):
        decay, no_decay = step["groups"]
        for group in (decay, no_decay):
            assert group["betas"] == (0.8, 0.95) and group["eps"] == 1e-7
            assert group["decouple_lr"] is False and group["max_lr"] == 4e-3
            assert group["lr"] == pytest.approx(4e-3 * factor, rel=1e-12)
        assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    before = [row["grad_norm"] for row in log["history"]["train"]]
    assert all(norm > 0.05 for norm in before)  # so every step was clipped ...
    assert all(s["grad_norm"] == pytest.approx(0.05, rel=1e-4) for s in seen.steps)  # ... to 0.05
    assert [row["lr"] for row in log["history"]["train"]] == pytest.approx([4e-3 * f for f in factors])


def test_the_first_loss_recomputed_from_the_seed(uninterrupted, tokenizer_dir):
    """Step 1's training loss, rebuilt here from the run's seed: the model initialised from
    torch.manual_seed(seed), the loader's first batch (batch-size warmup: 192 tokens), masked
    with the generator of (seed, step 0). Fails if masking (or anything else) ignores the run's
    seed, e.g. `step_generator(0, step)` in the loop."""
    out, log = uninterrupted
    cfg = tiny_config(tokenizer_dir, out)
    tokenizer = load_tokenizer(tokenizer_dir)
    torch.manual_seed(cfg.seed)
    config = ModernBertConfig.mini(vocab_size=320, sparse_prediction=True, **TINY)
    model = ModernBertForMaskedLM(config).train()
    seqs = tokenize_documents(corpus_texts("train")[:cfg.max_docs], tokenizer, cfg.max_len)
    batch = PackedLoader(seqs, seed=cfg.seed).next_batch(cfg.batch_warmup_start)
    inputs, labels = mask_tokens(batch.input_ids, **masking_args(tokenizer, config),
                                 rate=cfg.mask_rate, generator=step_generator(cfg.seed, 0))
    with torch.no_grad():
        loss = model(inputs, labels=labels, cu_seqlens=batch.cu_seqlens,
                     max_seqlen=batch.max_seqlen).loss
    assert log["history"]["train"][0]["tokens"] == batch.num_tokens
    assert log["history"]["train"][0]["loss"] == pytest.approx(float(loss), rel=1e-5)


DROPOUT = dict(embedding_dropout=0.1, attention_dropout=0.1, mlp_dropout=0.1)


def test_resume_with_dropout_on_gives_the_same_losses(tokenizer_dir, tmp_path):
    """With dropout on, every step draws from the global RNG: a run stopped after step 2 and
    resumed gives the losses of a run that never stopped only if the RNG state is saved and put
    back (evaluating after every step, which must leave the model in train mode). Fails if
    `load_state` skips `set_rng_state`."""
    settings = dict(model_overrides={**TINY, **DROPOUT}, max_steps=4, warmup_steps=1,
                    decay_steps=2, eval_every=1, save_every=100, position_eval_len=64)
    full = train(tiny_config(tokenizer_dir, tmp_path / "full", **settings))
    train(tiny_config(tokenizer_dir, tmp_path / "part", stop_after=2, **settings))
    resumed = train(tiny_config(tokenizer_dir, tmp_path / "part", resume=True, **settings))
    losses = [row["loss"] for row in full["history"]["train"]]
    assert [row["loss"] for row in resumed["history"]["train"]] == losses


def test_a_logged_config_reads_back_the_same(tmp_path):
    """log.json's train_config (dataclasses.asdict, through JSON) reads back as the config it
    was; so does one written before OptimConfig, with its fields among the others (the shipped
    checkpoint's log)."""
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=9,
                      optim=OptimConfig(lr=1e-3, betas=(0.8, 0.9), warmup_steps=2, decay_steps=3))
    logged = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert TrainConfig.from_dict(logged) == cfg
    flat = {**{k: v for k, v in logged.items() if k != "optim"}, **logged["optim"]}
    assert TrainConfig.from_dict(flat) == cfg


def test_logged_guesses_are_fill_masks(uninterrupted):
    """What the run logs as its guesses after training is what a reader's `fill_mask` says of
    the saved model, rounded (the loop computes them itself, without the user helpers)."""
    out, log = uninterrupted
    model, tokenizer = ModernBertForMaskedLM.from_pretrained(out), load_tokenizer(out)
    for prompt, logged in log["fill_mask_after"].items():
        again = [[(p.token, round(p.probability, 4)) for p in row]
                 for row in fill_mask(model, tokenizer, prompt, top_k=3)]
        assert [[tuple(pair) for pair in row] for row in logged] == again, prompt

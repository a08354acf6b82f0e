"""Our ModernBERT against transformers' on random weights: the same numbers, for many configs.

Each config's reference weights are copied into ours by name, one to one (strict), which also
proves the parameter names and shapes are the reference's. Batches hold padded rows of lengths
from 1 to more than three windows (one row left-padded). Hidden states, MLM logits, classifier
logits and losses must agree at non-pad positions to 1e-5 in float32, for our eager path against
the reference's eager one and our SDPA path against its SDPA one.

The largest difference seen is printed by the last test (run pytest with -s to see it).
"""

import math

import pytest
import torch
import transformers as tf

import modernbert_mini as mm
from test_model_reference import TOL, make_batch, max_abs_diff, ours_like, reference, tiny_config

# Odd ones included: global every 1, 2, 3 or 4 layers; windows from 4 to 128; thetas swapped and
# tiny; one head and twelve; head dims 8 to 64; cls and mean pooling.
CONFIGS = {
    "base-like": dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=4, local_attention=8),
    "all-global-1-head": dict(num_hidden_layers=3, num_attention_heads=1, global_attn_every_n_layers=1,
                              local_attention=4),
    "every-2-window-4": dict(hidden_size=64, num_attention_heads=8, num_hidden_layers=4,
                             global_attn_every_n_layers=2, local_attention=4),
    "every-4-window-16-mean": dict(hidden_size=48, num_attention_heads=3, num_hidden_layers=5,
                                   global_attn_every_n_layers=4, local_attention=16,
                                   global_rope_theta=1000.0, local_rope_theta=500.0,
                                   classifier_pooling="mean"),
    "head-dim-64-window-64-mean": dict(hidden_size=128, num_attention_heads=2, num_hidden_layers=2,
                                       global_attn_every_n_layers=2, local_attention=64,
                                       intermediate_size=96, classifier_pooling="mean"),
    "swapped-thetas": dict(num_hidden_layers=6, local_attention=16, global_rope_theta=10_000.0,
                           local_rope_theta=160_000.0),
    "twelve-heads-window-6-mean": dict(hidden_size=96, num_attention_heads=12, global_attn_every_n_layers=2,
                                       local_attention=6, classifier_pooling="mean"),
    "one-layer": dict(num_hidden_layers=1, local_attention=4),
    "one-head-every-4-big-theta": dict(hidden_size=64, num_attention_heads=1, num_hidden_layers=4,
                                       global_attn_every_n_layers=4, local_attention=16,
                                       global_rope_theta=1e6),
    "odd-sizes-window-64": dict(hidden_size=40, num_attention_heads=5, intermediate_size=37,
                                vocab_size=70, global_attn_every_n_layers=2, local_attention=64,
                                norm_eps=1e-6),
    "window-128-every-3": dict(hidden_size=64, num_attention_heads=2, num_hidden_layers=4,
                               local_attention=128, max_position_embeddings=1024),
}

LARGEST = {}  # (config, backend) -> the largest difference from the reference seen there
CROSS_BACKEND = {}  # config -> the largest difference between our eager and SDPA paths


def lengths_for(window: int) -> list[int]:
    """1 token, under half a window, two windows, more than three windows (left-padded)."""
    return [1, window // 2 + 1, 2 * window + 3, 3 * window + window // 2 + 1]


def record(key, *diffs):
    LARGEST[key] = max(LARGEST.get(key, 0.0), *diffs)
    return max(diffs)


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_with_transformers(name, backend):
    config = tiny_config(**CONFIGS[name])
    ids, mask = make_batch(config, lengths_for(config.local_attention), seed=len(name))
    real = mask.bool()  # (B, S): what the contract covers
    g = torch.Generator().manual_seed(1)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, -100)
    labels[~real] = -100
    labels[0, 0] = ids[0, 0]  # the 1-token row has a target too
    key = (name, backend)

    # the encoder and the MLM head, dense logits and all hidden states
    ref = reference("ModernBertForMaskedLM", config, backend)
    ours = ours_like(mm.ModernBertForMaskedLM, ref, config, backend)
    with torch.no_grad():
        r = ref(ids, attention_mask=mask, labels=labels, output_hidden_states=True)
        o = ours(ids, mask, labels=labels, output_hidden_states=True)
    assert len(o.hidden_states) == len(r.hidden_states) == config.num_hidden_layers + 1
    assert record(key, *(max_abs_diff(a, b, real) for a, b in zip(o.hidden_states, r.hidden_states))) < TOL
    assert record(key, max_abs_diff(o.logits, r.logits, real)) < TOL
    assert record(key, abs(o.loss.item() - r.loss.item())) < TOL

    # our other backend: the same maths, other kernels, so only rounding may differ
    other = ours_like(mm.ModernBertForMaskedLM, ref, config, "sdpa" if backend == "eager" else "eager")
    with torch.no_grad():
        cross = max_abs_diff(other(ids, mask).logits, o.logits, real)
    CROSS_BACKEND[name] = max(CROSS_BACKEND.get(name, 0.0), cross)
    assert cross < TOL * o.logits.abs().max().item()  # float32 rounding, relative to the logits

    # the bare encoder: the reference's inner ModernBertModel, its names without "model."
    bare = ours_like(mm.ModernBertModel, ref.model, config, backend)
    with torch.no_grad():
        assert record(key, max_abs_diff(bare(ids, mask).last_hidden_state,
                                         ref.model(ids, attention_mask=mask).last_hidden_state, real)) < TOL

    # sparse prediction: the head only at labelled positions
    sparse_config = tiny_config(**CONFIGS[name], sparse_prediction=True)
    ref_sparse = reference("ModernBertForMaskedLM", sparse_config, backend)
    ours_sparse = ours_like(mm.ModernBertForMaskedLM, ref_sparse, sparse_config, backend)
    with torch.no_grad():
        r, o = ref_sparse(ids, attention_mask=mask, labels=labels), ours_sparse(ids, mask, labels=labels)
    assert o.logits.shape == r.logits.shape == (int((labels != -100).sum()), config.vocab_size)
    assert record(key, max_abs_diff(o.logits, r.logits), abs(o.loss.item() - r.loss.item())) < TOL

    # sequence classification with the config's pooling, 3 classes
    ref_clf = reference("ModernBertForSequenceClassification", config, backend, num_labels=3)
    ours_clf = ours_like(mm.ModernBertForSequenceClassification, ref_clf, config, backend, num_labels=3)
    targets = torch.arange(ids.shape[0]) % 3
    with torch.no_grad():
        r = ref_clf(ids, attention_mask=mask, labels=targets)
        o = ours_clf(ids, mask, labels=targets)
    assert record(key, max_abs_diff(o.logits, r.logits), abs(o.loss.item() - r.loss.item())) < TOL


@pytest.mark.parametrize("num_labels,pooling", [(1, "cls"), (1, "mean"), (4, "mean")])
def test_classifier_regression_and_multi_label_losses(num_labels, pooling):
    """num_labels == 1 is regression (MSE); float labels with several classes are multi-label (BCE)."""
    config = tiny_config(classifier_pooling=pooling)
    ids, mask = make_batch(config, lengths_for(config.local_attention))
    ref = reference("ModernBertForSequenceClassification", config, "sdpa", num_labels=num_labels)
    ours = ours_like(mm.ModernBertForSequenceClassification, ref, config, "sdpa", num_labels=num_labels)
    labels = torch.rand(ids.shape[0], num_labels).round()
    labels = labels if num_labels > 1 else labels[:, 0] * 2.5
    with torch.no_grad():
        r, o = ref(ids, attention_mask=mask, labels=labels), ours(ids, mask, labels=labels)
    assert record(("losses", "sdpa"), max_abs_diff(o.logits, r.logits), abs(o.loss.item() - r.loss.item())) < TOL


def test_no_mask_and_full_mask_give_the_same():
    config = tiny_config()
    ids, _ = make_batch(config, [20, 20])
    ref = reference("ModernBertModel", config, "sdpa")
    ours = ours_like(mm.ModernBertModel, ref, config, "sdpa")
    with torch.no_grad():
        a = ours(ids).last_hidden_state
        b = ours(ids, torch.ones_like(ids)).last_hidden_state
        r = ref(ids).last_hidden_state
    assert record(("no-mask", "sdpa"), max_abs_diff(a, b), max_abs_diff(a, r)) < TOL


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_gradients_equal_reference(backend):
    """One training step's gradients, so training ours is training ModernBERT."""
    config = tiny_config(num_hidden_layers=4, global_attn_every_n_layers=2)
    ids, mask = make_batch(config, lengths_for(config.local_attention))
    labels = torch.where(mask.bool(), ids, -100)
    ref = reference("ModernBertForMaskedLM", config, backend).train()
    ours = ours_like(mm.ModernBertForMaskedLM, ref, config, backend).train()
    ref(ids, attention_mask=mask, labels=labels).loss.backward()
    ours(ids, mask, labels=labels).loss.backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        assert record(("gradients", backend), max_abs_diff(p.grad, ref_grads[name].grad)) < TOL, name


# ----------------------------------------------------------------------------- sizes and init
def count(model) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied weight is counted once


@pytest.mark.parametrize("size,encoder,with_mlm_head", [("base", 149_014_272, 149_655_232),
                                                         ("large", 394_781_696, 395_881_664)])
def test_parameter_counts(size, encoder, with_mlm_head):
    config = getattr(mm.ModernBertConfig, size)()
    with torch.device("meta"):  # no memory: shapes only
        ours = (mm.ModernBertModel(config), mm.ModernBertForMaskedLM(config))
        hf = tf.ModernBertConfig(**config.to_hf_dict())
        refs = (tf.ModernBertModel(hf), tf.ModernBertForMaskedLM(hf))
    assert [count(m) for m in ours] == [encoder, with_mlm_head]
    assert [count(m) for m in refs] == [encoder, with_mlm_head]
    for mine, theirs in zip(ours, refs):  # names and shapes, one to one
        assert {k: v.shape for k, v in mine.state_dict().items()} == \
               {k: v.shape for k, v in theirs.state_dict().items()}


def test_mini_is_small():
    with torch.device("meta"):
        model = mm.ModernBertForMaskedLM(mm.ModernBertConfig.mini())
    assert 4_000_000 < count(model) < 8_000_000


@pytest.mark.parametrize("class_name", ["ModernBertForMaskedLM", "ModernBertForSequenceClassification"])
def test_initialisation_matches_reference(class_name):
    """Same distribution per parameter: std, and the +-2 std cut of the truncated normal."""
    config = tiny_config(vocab_size=2048, hidden_size=256, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4)
    torch.manual_seed(0)
    hf = tf.ModernBertConfig(**config.to_hf_dict(), num_labels=3)
    ref = dict(getattr(tf, class_name)(hf).named_parameters())
    kwargs = {"num_labels": 3} if "Classification" in class_name else {}
    ours = getattr(mm, class_name)(config, **kwargs)
    if "MaskedLM" in class_name:
        assert ours.decoder.weight is ours.model.embeddings.tok_embeddings.weight
    for name, p in ours.named_parameters():
        r = ref[name].detach()
        if r.std() == 0:  # LayerNorm weights (1) and biases (0)
            assert torch.equal(p.detach(), r), name
            continue
        slack = 5 / math.sqrt(p.numel()) + 0.01
        assert abs(p.std().item() / r.std().item() - 1) < slack, name
        assert abs(p.abs().max().item() / r.abs().max().item() - 1) < slack, name


def test_report_largest_difference():
    """Runs last: the largest difference against the reference over every config above (run
    alone, over one config)."""
    if not LARGEST:
        test_parity_with_transformers("base-like", "sdpa")
    (where, worst) = max(LARGEST.items(), key=lambda item: item[1])
    print(f"\nlargest |ours - transformers| over {len(LARGEST)} (config, backend) pairs: "
          f"{worst:.3g} at {where}; largest |our eager - our SDPA| (MLM logits): "
          f"{max(CROSS_BACKEND.values()):.3g}")
    assert worst < TOL

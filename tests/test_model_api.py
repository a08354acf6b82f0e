"""What a user of the models relies on beyond the numbers: token classification (against the
reference), outputs by index, return_dict, gradient checkpointing, dropout in train vs eval."""

from dataclasses import replace

import pytest
import torch

import modernbert_mini as mm
from test_model_reference import TOL, gradients, make_batch, max_abs_diff, ours_like, reference, tiny_config

CONFIG = tiny_config(num_hidden_layers=4, global_attn_every_n_layers=2)


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_token_classification_equals_reference(backend):
    ref = reference("ModernBertForTokenClassification", CONFIG, backend, num_labels=5)
    ours = ours_like(mm.ModernBertForTokenClassification, ref, CONFIG, backend, num_labels=5)
    ids, mask = make_batch(CONFIG, [3, 11, 20])
    labels = torch.where(mask.bool(), ids % 5, -100)
    with torch.no_grad():
        r, o = ref(ids, attention_mask=mask, labels=labels), ours(ids, mask, labels=labels)
    assert max_abs_diff(o.logits, r.logits, mask) < TOL
    assert abs(o.loss.item() - r.loss.item()) < TOL


def test_outputs_index_like_transformers():
    torch.manual_seed(0)
    model = mm.ModernBertForMaskedLM(CONFIG).eval()
    ids, mask = make_batch(CONFIG, [5, 9])
    labels = torch.where(mask.bool(), ids, -100)
    with torch.no_grad():
        out = model(ids, mask, labels=labels)
        as_tuple = model(ids, mask, labels=labels, return_dict=False)
        no_labels = model(ids, mask)
    assert out[0] is out.loss and out[1] is out.logits and len(out.to_tuple()) == 2
    assert torch.equal(as_tuple[1], out.logits) and len(as_tuple) == 2
    assert no_labels[0] is no_labels.logits  # unset fields are skipped, as in transformers
    loss, logits = out
    assert loss is out.loss


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients():
    """With checkpointing, backward runs every layer's forward again (and the gradients agree)."""
    torch.manual_seed(0)
    model = mm.ModernBertForMaskedLM(CONFIG).train()
    ids, mask = make_batch(CONFIG, [7, 16])
    labels = torch.where(mask.bool(), ids, -100)
    calls = []
    for layer in model.model.layers:
        layer.register_forward_pre_hook(lambda module, args: calls.append(module))

    def layer_forwards(fn):  # how many layer forwards one forward + backward starts
        calls.clear()
        grads = gradients(model, fn)
        return grads, len(calls)

    expected, plain = layer_forwards(lambda m: m(ids, mask, labels=labels))
    model.model.gradient_checkpointing_enable()
    got, recomputed = layer_forwards(lambda m: m(ids, mask, labels=labels))
    layers = CONFIG.num_hidden_layers
    assert (plain, recomputed) == (layers, 2 * layers)  # each layer once more, in backward
    for name in expected:
        assert max_abs_diff(got[name], expected[name]) < 1e-6, name


# config field -> the nn.Dropout modules it sets, in a ModernBertModel
DROPOUT_SITES = {
    "embedding_dropout": lambda m: [m.embeddings.drop],
    "attention_dropout": lambda m: [layer.attn.out_drop for layer in m.layers],  # after Wo
    "mlp_dropout": lambda m: [layer.mlp.drop for layer in m.layers],  # inside GeGLU, before Wo
}


def watch(modules) -> list:
    """(input, output) of every call of these modules, as they happen."""
    seen = []
    for module in modules:
        module.register_forward_hook(lambda module, args, out: seen.append((args[0], out)))
    return seen


def dropped_in_train_only(model, run, sites) -> None:
    """Every dropout site zeroes about half its inputs (p=0.5) in train mode, none in eval."""
    seen = watch(sites)
    with torch.no_grad():
        run(model.eval())
        assert seen and all(torch.equal(x, y) for x, y in seen)
        seen.clear()
        torch.manual_seed(1)
        run(model.train())
    assert len(seen) >= len(sites)  # every site ran in the forward
    for x, y in seen:
        zeroed = ((y == 0) & (x != 0)).float().mean().item()
        assert 0.3 < zeroed < 0.7, zeroed


@pytest.mark.parametrize("field", list(DROPOUT_SITES))
def test_dropout_acts_in_train_mode_only(field):
    """Each dropout of the config acts where it belongs in the training forward (about half its
    inputs zeroed), changes the output, and leaves eval alone."""
    torch.manual_seed(0)
    config = replace(CONFIG, **{field: 0.5})
    model = mm.ModernBertModel(config)
    plain = mm.ModernBertModel(CONFIG)
    plain.load_state_dict(model.state_dict())
    ids, mask = make_batch(CONFIG, [12, 20])
    dropped_in_train_only(model, lambda m: m(ids, mask), DROPOUT_SITES[field](model))
    with torch.no_grad():
        expected = plain.eval()(ids, mask).last_hidden_state
        assert max_abs_diff(model.eval()(ids, mask).last_hidden_state, expected, mask) == 0
        torch.manual_seed(1)
        assert max_abs_diff(model.train()(ids, mask).last_hidden_state, expected, mask) > 1e-3


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_attention_dropout_also_drops_attention_probabilities(backend):
    """attention_dropout's other site, inside the backend: with the dropout after Wo taken out,
    the training forward still differs from eval."""
    torch.manual_seed(0)
    model = mm.ModernBertModel(replace(CONFIG, attention_dropout=0.5, attention_backend=backend))
    for layer in model.layers:
        layer.attn.out_drop = torch.nn.Identity()
    ids, mask = make_batch(CONFIG, [12, 20])
    with torch.no_grad():
        expected = model.eval()(ids, mask).last_hidden_state
        torch.manual_seed(1)
        assert max_abs_diff(model.train()(ids, mask).last_hidden_state, expected, mask) > 1e-3


def test_classifier_dropout_acts_in_the_classifier_forward():
    torch.manual_seed(0)
    model = mm.ModernBertForSequenceClassification(replace(CONFIG, classifier_dropout=0.5),
                                                   num_labels=3)
    ids, mask = make_batch(CONFIG, [12, 20])
    dropped_in_train_only(model, lambda m: m(ids, mask), [model.drop])
    with torch.no_grad():
        expected = model.eval()(ids, mask).logits
        torch.manual_seed(1)
        assert max_abs_diff(model.train()(ids, mask).logits, expected) > 1e-3


def test_device_and_dtype():
    model = mm.ModernBertForMaskedLM(CONFIG)
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert model.to(torch.float64).dtype == torch.float64


def test_problem_type_picks_the_loss():
    """Float labels over 3 classes are multi-label unless the config says otherwise."""
    torch.manual_seed(0)
    ids, mask = make_batch(CONFIG, [5, 9])
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    model = mm.ModernBertForSequenceClassification(CONFIG, num_labels=3).eval()
    regression = mm.ModernBertForSequenceClassification(
        replace(CONFIG, problem_type="regression"), num_labels=3).eval()
    regression.load_state_dict(model.state_dict())
    with torch.no_grad():
        logits = model(ids, mask).logits
        multi, mse = model(ids, mask, labels=labels).loss, regression(ids, mask, labels=labels).loss
    torch.testing.assert_close(multi, torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))
    torch.testing.assert_close(mse, torch.nn.functional.mse_loss(logits, labels))


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_autocast_bf16_equals_the_reference(backend):
    """Under CPU autocast both models run the same bf16 kernels: the same logits."""
    ref = reference("ModernBertForMaskedLM", CONFIG, backend)
    ours = ours_like(mm.ModernBertForMaskedLM, ref, CONFIG, backend)
    ids, mask = make_batch(CONFIG, [3, 11, 20])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        r, o = ref(ids, attention_mask=mask).logits, ours(ids, mask).logits
    assert o.dtype == torch.bfloat16 and max_abs_diff(o, r, mask) < 1e-3


# Measured on random weights with logits up to ~3.2: bf16 0.047 and fp16 0.006 from the
# reference in the same dtype. The tolerances below leave about 2x room.
LOW_PRECISION_TOL = {torch.bfloat16: 0.1, torch.float16: 0.015}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_stay_close_to_the_reference(dtype):
    ref = reference("ModernBertForMaskedLM", CONFIG, "sdpa")
    ours = ours_like(mm.ModernBertForMaskedLM, ref, CONFIG, "sdpa")
    ids, mask = make_batch(CONFIG, [3, 11, 20])
    with torch.no_grad():
        r, o = ref.to(dtype)(ids, attention_mask=mask).logits, ours.to(dtype)(ids, mask).logits
    assert o.dtype == dtype and max_abs_diff(o, r, mask) < LOW_PRECISION_TOL[dtype]


@pytest.mark.parametrize("class_name", ["ModernBertModel", "ModernBertForMaskedLM",
                                        "ModernBertForSequenceClassification",
                                        "ModernBertForTokenClassification"])
def test_num_parameters_equals_the_reference(class_name):
    """model.num_parameters(only_trainable, exclude_embeddings) as transformers counts them (the
    MLM decoder tied to the embedding counted once), with part of each model frozen alike."""
    extra = {"num_labels": 3} if "Classification" in class_name else {}
    ref = reference(class_name, CONFIG, **extra)
    ours = ours_like(getattr(mm, class_name), ref, CONFIG, **extra)
    for model in (ref, ours):
        for name, p in model.named_parameters():
            p.requires_grad_(".layers.1." not in f".{name}" and "final_norm" not in name)
    assert ours.num_parameters() > ours.num_parameters(only_trainable=True)  # something frozen
    for only_trainable in (False, True):
        for exclude_embeddings in (False, True):
            assert ours.num_parameters(only_trainable, exclude_embeddings) == \
                   ref.num_parameters(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)
    assert mm.num_parameters(ours, exclude_embeddings=True) == ours.num_parameters(exclude_embeddings=True)

"""Checkpoints both ways through disk: transformers -> ours, ours -> transformers.

Tiny random models in temporary directories; huggingface_hub's download is replaced by a fake
so nothing ever leaves the machine.
"""

import json

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file, save_file

import modernbert_mini as mm
from modernbert_mini import hub
from test_model_reference import TOL, make_batch, max_abs_diff, reference, tiny_config

CLASSES = ["ModernBertModel", "ModernBertForMaskedLM", "ModernBertForSequenceClassification"]
CONFIG = tiny_config(num_hidden_layers=4, global_attn_every_n_layers=2, classifier_pooling="mean")
IDS, MASK = make_batch(CONFIG, [1, 5, 19, 30])


def first_output(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


def compare(ours, theirs) -> float:
    with torch.no_grad():
        a = first_output(ours(IDS, MASK))
        b = first_output(theirs(IDS, attention_mask=MASK))
    where = MASK.bool() if a.dim() == 3 else None
    return max_abs_diff(a, b, where)


def saved_reference(class_name, directory, **save_kwargs):
    extra = {"num_labels": 3} if "Classification" in class_name else {}
    ref = reference(class_name, CONFIG, "sdpa", **extra)
    ref.save_pretrained(directory, **save_kwargs)
    return ref


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Any attempt to reach the hub fails the test."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download: {args} {kwargs}")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


# ----------------------------------------------------------------------------- both directions
@pytest.mark.parametrize("class_name", CLASSES)
def test_transformers_checkpoint_loads_into_ours(class_name, tmp_path):
    ref = saved_reference(class_name, tmp_path)
    ours = getattr(mm, class_name).from_pretrained(tmp_path)
    assert not ours.training
    assert ours.config == mm.ModernBertConfig.from_hf_dict(ref.config.to_dict())
    assert compare(ours, ref) < TOL


@pytest.mark.parametrize("class_name", CLASSES)
def test_our_checkpoint_loads_into_transformers(class_name, tmp_path):
    kwargs = {"num_labels": 3} if "Classification" in class_name else {}
    torch.manual_seed(0)
    ours = getattr(mm, class_name)(CONFIG, **kwargs).eval()
    ours.save_pretrained(tmp_path)
    auto = {"ModernBertModel": tf.AutoModel, "ModernBertForMaskedLM": tf.AutoModelForMaskedLM,
            "ModernBertForSequenceClassification": tf.AutoModelForSequenceClassification}[class_name]
    theirs, info = auto.from_pretrained(tmp_path, output_loading_info=True)
    assert type(theirs).__name__ == class_name
    assert all(not keys for keys in info.values()), info  # nothing missing, unexpected, mismatched
    assert compare(ours, theirs.eval()) < TOL
    assert list(theirs.config.layer_types) == list(tf.ModernBertConfig(**CONFIG.to_hf_dict()).layer_types)
    if class_name == "ModernBertForMaskedLM":
        assert "decoder.weight" not in load_file(tmp_path / "model.safetensors")  # tied, as transformers saves
        assert theirs.decoder.weight.data_ptr() == theirs.model.embeddings.tok_embeddings.weight.data_ptr()
    # and back again
    again = getattr(mm, class_name).from_pretrained(tmp_path)
    assert compare(again, theirs) < TOL


def test_sharded_checkpoint(tmp_path):
    ref = saved_reference("ModernBertForMaskedLM", tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert compare(mm.ModernBertForMaskedLM.from_pretrained(tmp_path), ref) < TOL


def test_hub_id_goes_through_snapshot_download(tmp_path, monkeypatch):
    import huggingface_hub

    ref = saved_reference("ModernBertForMaskedLM", tmp_path)
    calls = []

    def fake_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision))
        assert "config.json" in allow_patterns and "*.safetensors" in allow_patterns
        return str(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    ours = mm.ModernBertForMaskedLM.from_pretrained("someone/tiny-modernbert", revision="v1")
    assert calls == [("someone/tiny-modernbert", "v1")]
    assert compare(ours, ref) < TOL


def test_a_path_that_is_not_there_is_not_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        mm.ModernBertModel.from_pretrained(tmp_path / "nothing" / "here")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        mm.ModernBertModel.from_pretrained(tmp_path)


def test_no_pickle(tmp_path, monkeypatch):
    CONFIG_JSON = json.dumps(CONFIG.to_hf_dict("ModernBertModel"))
    (tmp_path / "config.json").write_text(CONFIG_JSON)
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.bin.*pickle"):
        mm.ModernBertModel.from_pretrained(tmp_path)
    # and a normal load never unpickles anything
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    saved_reference("ModernBertModel", tmp_path / "ok")
    mm.ModernBertModel.from_pretrained(tmp_path / "ok")


def test_overrides(tmp_path):
    saved_reference("ModernBertForSequenceClassification", tmp_path)
    model = mm.ModernBertForSequenceClassification.from_pretrained(tmp_path, attention_backend="eager")
    assert model.num_labels == 3 and model.config.attention_backend == "eager"
    assert all(layer.attn.backend == "eager" for layer in model.model.layers)


# ----------------------------------------------------------------------------- changing heads
def test_mlm_checkpoint_into_bare_encoder(tmp_path):
    ref = saved_reference("ModernBertForMaskedLM", tmp_path)
    with pytest.raises(ValueError, match=r"(?s)unexpected \(3\): decoder\.bias, head\.dense\.weight, "
                                         r"head\.norm\.weight.*strict=False"):
        mm.ModernBertModel.from_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"dropped \(3\): decoder\.bias"):
        ours = mm.ModernBertModel.from_pretrained(tmp_path, strict=False)
    assert compare(ours, ref.model) < TOL


def test_mlm_checkpoint_into_classifier(tmp_path):
    """Fine-tuning's start: the MLM head's dense/norm are reused, the classifier starts fresh."""
    ref = saved_reference("ModernBertForMaskedLM", tmp_path)
    with pytest.raises(ValueError, match=r"missing \(2\): classifier\.bias, classifier\.weight"):
        mm.ModernBertForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    with pytest.warns(UserWarning, match=r"initialised, not loaded \(2\): classifier\.bias"):
        ours = mm.ModernBertForSequenceClassification.from_pretrained(tmp_path, num_labels=4, strict=False)
    assert ours.num_labels == 4
    assert torch.equal(ours.head.dense.weight, ref.head.dense.weight)
    assert torch.equal(ours.model.layers[1].attn.Wqkv.weight, ref.model.layers[1].attn.Wqkv.weight)


def test_bare_checkpoint_into_mlm(tmp_path):
    ref = saved_reference("ModernBertModel", tmp_path)
    with pytest.raises(ValueError, match=r"missing \(3\): decoder\.bias, head\.dense\.weight, head\.norm\.weight"):
        mm.ModernBertForMaskedLM.from_pretrained(tmp_path)
    with pytest.warns(UserWarning):
        ours = mm.ModernBertForMaskedLM.from_pretrained(tmp_path, strict=False)
    with torch.no_grad():
        assert max_abs_diff(ours.model(IDS, MASK).last_hidden_state,
                            ref(IDS, attention_mask=MASK).last_hidden_state, MASK.bool()) < TOL


# ----------------------------------------------------------------------------- bad checkpoints
def rewrite_weights(directory, change):
    path = directory / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_encoder_key_is_an_error_even_when_not_strict(tmp_path):
    saved_reference("ModernBertForMaskedLM", tmp_path)
    rewrite_weights(tmp_path, lambda t: t.pop("model.layers.2.mlp.Wi.weight"))
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"missing \(1\): model\.layers\.2\.mlp\.Wi\.weight"):
            mm.ModernBertForMaskedLM.from_pretrained(tmp_path, strict=strict)


def test_unexpected_key_is_an_error(tmp_path):
    saved_reference("ModernBertModel", tmp_path)
    rewrite_weights(tmp_path, lambda t: t.update({"layers.0.attn.rotary.inv_freq": torch.zeros(4)}))
    with pytest.raises(ValueError, match=r"unexpected \(1\): layers\.0\.attn\.rotary\.inv_freq"):
        mm.ModernBertModel.from_pretrained(tmp_path)


def test_misshapen_keys_are_an_error_even_when_not_strict(tmp_path):
    saved_reference("ModernBertForSequenceClassification", tmp_path)  # 3 labels
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"misshapen.*classifier\.weight \(3, 32\) != \(2, 32\)"):
            mm.ModernBertForSequenceClassification.from_pretrained(tmp_path, num_labels=2, strict=strict)


def test_stored_decoder_weight_must_be_the_embedding(tmp_path):
    ref = saved_reference("ModernBertForMaskedLM", tmp_path)
    embedding = ref.model.embeddings.tok_embeddings.weight.detach()
    rewrite_weights(tmp_path, lambda t: t.update({"decoder.weight": embedding.clone()}))
    assert compare(mm.ModernBertForMaskedLM.from_pretrained(tmp_path), ref) < TOL
    rewrite_weights(tmp_path, lambda t: t.update({"decoder.weight": embedding + 1}))
    with pytest.raises(ValueError, match="decoder.weight different from model.embeddings.tok_embeddings.weight"):
        mm.ModernBertForMaskedLM.from_pretrained(tmp_path)


def test_config_json_that_is_another_model(tmp_path):
    saved_reference("ModernBertModel", tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**hf, "norm_bias": True}))
    with pytest.raises(ValueError, match="norm_bias=True is not supported"):
        mm.ModernBertModel.from_pretrained(tmp_path)

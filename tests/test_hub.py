"""Checkpoints both ways through disk: transformers -> ours, ours -> transformers.

Tiny random models in temporary directories; huggingface_hub's download is replaced by a fake
so nothing ever leaves the machine.
"""

import json
from dataclasses import FrozenInstanceError, replace

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
    expected = mm.ModernBertConfig.from_hf_dict(ref.config.to_dict())
    if "Classification" in class_name:  # a classifier's config names its labels: transformers' defaults
        expected = replace(expected, id2label=ref.config.id2label)
    assert ours.config == expected
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
        mm.ModernBertModel.from_pretrained(tmp_path, strict=True)
    with pytest.warns(UserWarning, match=r"not used \(3\): decoder\.bias"):
        ours = mm.ModernBertModel.from_pretrained(tmp_path)
    assert compare(ours, ref.model) < TOL


def test_mlm_checkpoint_into_classifier(tmp_path):
    """Fine-tuning's start, as in transformers: the MLM head's dense/norm are reused, the
    classifier starts fresh, and a warning names the same new weights as transformers does."""
    ref = saved_reference("ModernBertForMaskedLM", tmp_path)
    with pytest.raises(ValueError, match=r"missing \(2\): classifier\.bias, classifier\.weight"):
        mm.ModernBertForSequenceClassification.from_pretrained(tmp_path, num_labels=4, strict=True)
    with pytest.warns(UserWarning, match=r"(?s)newly initialised \(2\): classifier\.bias, "
                                         r"classifier\.weight.*not used \(1\): decoder\.bias.*train"):
        ours = mm.ModernBertForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    _, info = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=4,
                                                                    output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    assert ours.num_labels == 4
    assert torch.equal(ours.head.dense.weight, ref.head.dense.weight)
    assert torch.equal(ours.model.layers[1].attn.Wqkv.weight, ref.model.layers[1].attn.Wqkv.weight)


def test_bare_checkpoint_into_mlm(tmp_path):
    ref = saved_reference("ModernBertModel", tmp_path)
    with pytest.raises(ValueError, match=r"missing \(3\): decoder\.bias, head\.dense\.weight, head\.norm\.weight"):
        mm.ModernBertForMaskedLM.from_pretrained(tmp_path, strict=True)
    with pytest.warns(UserWarning, match=r"newly initialised \(3\)"):
        ours = mm.ModernBertForMaskedLM.from_pretrained(tmp_path)
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


def test_unexpected_key_is_an_error_when_strict(tmp_path):
    saved_reference("ModernBertModel", tmp_path)
    rewrite_weights(tmp_path, lambda t: t.update({"layers.0.attn.rotary.inv_freq": torch.zeros(4)}))
    with pytest.raises(ValueError, match=r"unexpected \(1\): layers\.0\.attn\.rotary\.inv_freq"):
        mm.ModernBertModel.from_pretrained(tmp_path, strict=True)
    with pytest.warns(UserWarning, match=r"not used \(1\): layers\.0\.attn\.rotary\.inv_freq"):
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


# ----------------------------------------------------------------------------- loading on meta
def saved_ours(class_name, directory, seed=0, config=CONFIG, **kwargs):
    torch.manual_seed(seed)
    model = getattr(mm, class_name)(config, **kwargs).eval()
    model.save_pretrained(directory)
    return model


@pytest.mark.parametrize("class_name", CLASSES + ["ModernBertForTokenClassification"])
def test_loaded_model_is_the_saved_one(class_name, tmp_path):
    saved = saved_ours(class_name, tmp_path)
    loaded = getattr(mm, class_name).from_pretrained(tmp_path)
    assert loaded.config == saved.config
    assert loaded.state_dict().keys() == saved.state_dict().keys()
    for key, tensor in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    assert all(p.requires_grad for p in loaded.parameters())  # trainable, as a built model
    assert compare(loaded, saved) == 0.0


def test_the_decoder_stays_tied_to_the_embedding(tmp_path):
    saved_ours("ModernBertForMaskedLM", tmp_path)
    for dtype in (None, torch.bfloat16):
        model = mm.ModernBertForMaskedLM.from_pretrained(tmp_path, dtype=dtype)
        assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
        assert len(list(model.parameters())) == len(model.state_dict()) - 1  # one tensor, two names


def test_loading_initialises_nothing(tmp_path, monkeypatch):
    """No random init is computed and thrown away: an init runs only for what the checkpoint
    lacks (here the new MLM head's dense, the only weight with an init of its own)."""
    saved_ours("ModernBertModel", tmp_path / "encoder")
    saved_ours("ModernBertForMaskedLM", tmp_path / "mlm")
    initialised = []
    for name in ("trunc_normal_", "normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_"):
        def spy(tensor, *args, real=getattr(torch.nn.init, name), name=name, **kwargs):
            initialised.append((name, tuple(tensor.shape), tensor.is_meta))
            return real(tensor, *args, **kwargs)
        monkeypatch.setattr(torch.nn.init, name, spy)
    mm.ModernBertForMaskedLM.from_pretrained(tmp_path / "mlm")
    assert initialised == []
    with pytest.warns(UserWarning):
        mm.ModernBertForMaskedLM.from_pretrained(tmp_path / "encoder", strict=False)
    H = CONFIG.hidden_size
    assert sorted(initialised) == sorted([("kaiming_uniform_", (H, H), False),  # head.dense: PyTorch's,
                                          ("trunc_normal_", (H, H), False),  # then the package's
                                          ("ones_", (H,), False),  # head.norm
                                          ("uniform_", (CONFIG.vocab_size,), False),  # decoder.bias:
                                          ("zeros_", (CONFIG.vocab_size,), False)])  # then 0, as built


def test_missing_head_gets_a_real_initialisation(tmp_path):
    saved_ours("ModernBertModel", tmp_path)
    with pytest.warns(UserWarning, match=r"newly initialised \(3\)"):
        model = mm.ModernBertForMaskedLM.from_pretrained(tmp_path, strict=False)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
    dense = model.head.dense.weight  # the package's init: truncated normal, std 0.02 / sqrt(2 L)
    std = CONFIG.initializer_range / (2 * CONFIG.num_hidden_layers) ** 0.5
    assert dense.abs().max() <= CONFIG.initializer_cutoff_factor * std
    assert 0.6 * std < dense.std() < 1.1 * std
    assert torch.equal(model.head.norm.weight, torch.ones(CONFIG.hidden_size))
    assert torch.isfinite(model.decoder.bias).all()
    with torch.no_grad():
        assert torch.isfinite(model(IDS, MASK).logits).all()


def test_missing_classifier_gets_the_constructors_initialisation(tmp_path):
    saved_ours("ModernBertForMaskedLM", tmp_path)
    with pytest.warns(UserWarning):
        model = mm.ModernBertForSequenceClassification.from_pretrained(tmp_path, num_labels=64,
                                                                       strict=False)
    weight, std = model.classifier.weight, CONFIG.hidden_size ** -0.5
    assert torch.equal(model.classifier.bias, torch.zeros(64))
    assert weight.abs().max() <= CONFIG.initializer_cutoff_factor * std
    assert 0.8 * std < weight.std() < 0.95 * std  # a normal cut at 2 sigma has std 0.88 sigma


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, "bfloat16"])
def test_dtype(dtype, tmp_path):
    saved = saved_ours("ModernBertForMaskedLM", tmp_path)
    model = mm.ModernBertForMaskedLM.from_pretrained(tmp_path, dtype=dtype)
    want = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    assert {p.dtype for p in model.parameters()} == {want}
    assert torch.equal(model.model.layers[1].attn.Wqkv.weight,
                       saved.model.layers[1].attn.Wqkv.weight.to(want))


def test_dtype_auto_is_what_the_checkpoint_says(tmp_path):
    saved_ours("ModernBertModel", tmp_path)
    bf16 = mm.ModernBertModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    bf16.save_pretrained(tmp_path / "bf16")
    hf = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert hf["dtype"] == hf["torch_dtype"] == "bfloat16"  # transformers 5 reads one, 4.x the other
    assert next(mm.ModernBertModel.from_pretrained(tmp_path / "bf16", dtype="auto").parameters()).dtype \
           == torch.bfloat16
    assert next(mm.ModernBertModel.from_pretrained(tmp_path / "bf16").parameters()).dtype == torch.float32
    theirs = tf.AutoModel.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert theirs.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype,message", [(torch.int64, "floating"), ("float33", "float33"), (3, "3")])
def test_bad_dtype(dtype, message, tmp_path):
    saved_ours("ModernBertModel", tmp_path)
    with pytest.raises(ValueError, match=rf"dtype=.*{message}"):
        mm.ModernBertModel.from_pretrained(tmp_path, dtype=dtype)


def devices():
    return ["cpu", torch.device("cpu")] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", devices(), ids=str)
def test_device(device, tmp_path):
    saved = saved_ours("ModernBertForMaskedLM", tmp_path)
    model = mm.ModernBertForMaskedLM.from_pretrained(tmp_path, device=device)
    assert {p.device for p in model.parameters()} == {torch.device(device) if str(device) != "cuda"
                                                      else torch.device("cuda", 0)}
    with torch.no_grad():
        logits = model(IDS.to(device), MASK.to(device)).logits.cpu()
        assert max_abs_diff(logits, saved(IDS, MASK).logits, MASK.bool()) < TOL


def test_missing_and_extra_keys_name_themselves(tmp_path):
    saved_ours("ModernBertForMaskedLM", tmp_path)
    rewrite_weights(tmp_path, lambda t: (t.pop("head.norm.weight"), t.update({"head.extra": torch.zeros(2)})))
    with pytest.raises(ValueError, match=r"(?s)missing \(1\): head\.norm\.weight.*"
                                         r"unexpected \(1\): head\.extra.*strict=False"):
        mm.ModernBertForMaskedLM.from_pretrained(tmp_path, strict=True)


# ----------------------------------------------------------------------------- nothing lost
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def test_labels_and_problem_type_ours_to_transformers_and_back(tmp_path):
    config = replace(CONFIG, id2label=LABELS, problem_type="multi_label_classification")
    ours = saved_ours("ModernBertForSequenceClassification", tmp_path, config=config, num_labels=3)
    theirs = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path, dtype="auto")
    assert theirs.config.id2label == LABELS and theirs.config.label2id == {v: k for k, v in LABELS.items()}
    assert theirs.config.problem_type == "multi_label_classification" and theirs.num_labels == 3
    assert theirs.dtype == torch.float32
    theirs.save_pretrained(tmp_path / "theirs")
    again = mm.ModernBertForSequenceClassification.from_pretrained(tmp_path / "theirs")
    assert again.config == ours.config and again.num_labels == 3
    assert compare(again, ours) < TOL


def test_labels_and_problem_type_transformers_to_ours_and_back(tmp_path):
    ref = saved_reference("ModernBertForSequenceClassification", tmp_path)  # 3 labels, LABEL_i
    ref.config.id2label, ref.config.label2id = LABELS, {v: k for k, v in LABELS.items()}
    ref.config.problem_type = "single_label_classification"
    ref.to(torch.bfloat16).save_pretrained(tmp_path / "named")
    ours = mm.ModernBertForSequenceClassification.from_pretrained(tmp_path / "named", dtype="auto")
    assert ours.config.id2label == LABELS and ours.config.label2id == {v: k for k, v in LABELS.items()}
    assert ours.config.problem_type == "single_label_classification"
    assert ours.num_labels == 3 and next(ours.parameters()).dtype == torch.bfloat16
    ours.save_pretrained(tmp_path / "ours")
    theirs = tf.AutoModelForSequenceClassification.from_pretrained(tmp_path / "ours", dtype="auto")
    assert theirs.config.id2label == LABELS and theirs.config.problem_type == "single_label_classification"
    assert theirs.dtype == torch.bfloat16
    for key, tensor in ref.state_dict().items():
        assert torch.equal(theirs.state_dict()[key], tensor), key
    # everything transformers wrote comes back as it was, but for what describes the writer
    written = json.loads((tmp_path / "named" / "config.json").read_text())
    rewritten = json.loads((tmp_path / "ours" / "config.json").read_text())
    for key, value in written.items():
        assert rewritten.get(key) == value, key


def test_default_label_names_come_back_as_the_defaults(tmp_path):
    saved_reference("ModernBertForSequenceClassification", tmp_path)  # LABEL_0 .. LABEL_2
    ours = mm.ModernBertForSequenceClassification.from_pretrained(tmp_path)
    assert ours.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"} and ours.num_labels == 3
    ours.save_pretrained(tmp_path / "ours")
    hf = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert hf["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}


def test_labels_that_disagree_with_the_head(tmp_path):
    config = replace(CONFIG, id2label=LABELS)
    saved_ours("ModernBertForSequenceClassification", tmp_path, config=config, num_labels=3)
    with pytest.raises(ValueError, match=r"num_labels=2, but its config's id2label names 3 labels"):
        mm.ModernBertForSequenceClassification.from_pretrained(tmp_path, num_labels=2, strict=False)
    two = {0: "no", 1: "yes"}  # fine-tuning's start: an MLM, a new head named by id2label=
    saved_ours("ModernBertForMaskedLM", tmp_path / "mlm")
    with pytest.warns(UserWarning, match=r"newly initialised \(2\): classifier"):
        model = mm.ModernBertForSequenceClassification.from_pretrained(tmp_path / "mlm", id2label=two,
                                                                       strict=False)
    assert model.num_labels == 2 and model.config.id2label == two
    with pytest.raises(ValueError, match="num_labels=2, but its config's id2label names 3"):
        mm.ModernBertForSequenceClassification(config, num_labels=2)  # one source: the config
    named = mm.ModernBertForSequenceClassification(config)
    assert named.num_labels == 3  # derived from it


@pytest.mark.parametrize("class_name", ["ModernBertForSequenceClassification",
                                        "ModernBertForTokenClassification"])
def test_num_labels_is_what_the_config_names(class_name, tmp_path):
    """One source of truth: however a classifier is made, its config names exactly as many labels
    as its classifier has rows, and config.json carries them to transformers."""
    cls = getattr(mm, class_name)
    named = replace(CONFIG, id2label=LABELS)
    made = [cls(CONFIG), cls(CONFIG, num_labels=4), cls(named), cls(named, num_labels=3)]
    assert made[0].config.id2label == tf.ModernBertConfig().id2label  # transformers' two defaults
    assert made[1].config.id2label == {i: f"LABEL_{i}" for i in range(4)}
    assert made[2].config.id2label == made[3].config.id2label == LABELS
    for model in made:
        assert model.num_labels == model.config.num_labels == model.classifier.out_features
    with pytest.raises(ValueError, match=r"num_labels=4, but its config's id2label names 3 labels"):
        cls(named, num_labels=4)
    with pytest.raises(AttributeError):
        made[1].num_labels = 3  # read from the config, never set apart from it
    made[1].save_pretrained(tmp_path)
    theirs = getattr(tf, class_name).from_pretrained(tmp_path)
    assert theirs.num_labels == 4 and theirs.config.id2label == made[1].config.id2label
    assert mm.ModernBertConfig.from_pretrained(tmp_path).id2label is None  # the defaults, unnamed
    assert getattr(mm, class_name).from_pretrained(tmp_path).config == made[1].config


def test_unknown_config_keys_are_kept_and_written_back(tmp_path):
    saved_reference("ModernBertModel", tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    extra = {"my_experiment": {"lr": 3e-4, "notes": ["a", "b"]}, "reference_compile": False,
             "position_embedding_type": "absolute"}
    (tmp_path / "config.json").write_text(json.dumps({**hf, **extra}))
    ours = mm.ModernBertModel.from_pretrained(tmp_path)
    assert all(ours.config.hf_extras[k] == v for k, v in extra.items())
    ours.save_pretrained(tmp_path / "ours")
    rewritten = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert all(rewritten[k] == v for k, v in extra.items())
    assert rewritten["transformers_version"] == hf["transformers_version"]
    theirs = tf.AutoModel.from_pretrained(tmp_path / "ours")  # and transformers still reads it
    assert theirs.config.my_experiment == extra["my_experiment"]


def test_a_changed_config_cannot_be_saved_for_a_model_it_does_not_describe(tmp_path):
    model = saved_ours("ModernBertModel", tmp_path)
    with pytest.raises(FrozenInstanceError, match="ModernBertConfig is frozen: cannot set local_attention=32"):
        model.config.local_attention = 32
    model.save_pretrained(tmp_path / "again")
    assert mm.ModernBertConfig.from_pretrained(tmp_path / "again").local_attention == CONFIG.local_attention


def test_config_from_pretrained(tmp_path, monkeypatch):
    import huggingface_hub

    saved_ours("ModernBertForMaskedLM", tmp_path)
    assert mm.ModernBertConfig.from_pretrained(tmp_path) == CONFIG
    assert mm.ModernBertConfig.from_pretrained(tmp_path, attention_backend="eager") == \
           replace(CONFIG, attention_backend="eager")
    asked = []

    def fake_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        asked.append((repo_id, revision, allow_patterns))
        return str(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert mm.ModernBertConfig.from_pretrained("someone/tiny", revision="main") == CONFIG
    assert asked == [("someone/tiny", "main", ["config.json"])]  # the config, not the weights

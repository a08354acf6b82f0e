"""ModernBertConfig: the three sizes, validation of every field, and the round trip through
transformers' ModernBertConfig (config.json)."""

import copy
import math
import pickle
from dataclasses import FrozenInstanceError, replace

import pytest
import transformers as tf

from modernbert_mini import ModernBertConfig


def test_base_and_large_are_the_published_sizes():
    base, large = ModernBertConfig.base(), ModernBertConfig.large()
    assert (base.num_hidden_layers, base.hidden_size, base.num_attention_heads, base.intermediate_size) == \
           (22, 768, 12, 1152)
    assert (large.num_hidden_layers, large.hidden_size, large.num_attention_heads, large.intermediate_size) == \
           (28, 1024, 16, 2624)
    for config in (base, large):
        assert config.head_dim == 64 and config.vocab_size == 50368 and config.vocab_size % 64 == 0
        assert (config.cls_token_id, config.sep_token_id, config.pad_token_id, config.mask_token_id) == \
               (50281, 50282, 50283, 50284)
        assert (config.local_attention, config.global_attn_every_n_layers) == (128, 3)
        assert (config.global_rope_theta, config.local_rope_theta) == (160_000.0, 10_000.0)
        assert config.max_position_embeddings == 8192 and config.norm_eps == 1e-5
    assert [base.is_global_layer(i) for i in range(7)] == [True, False, False, True, False, False, True]


def test_base_equals_transformers_defaults():
    ours = ModernBertConfig.from_hf_dict(tf.ModernBertConfig().to_dict())
    assert ours == ModernBertConfig.base(mask_token_id=None)  # transformers has no mask id field


def test_mini():
    mini = ModernBertConfig.mini()
    assert (mini.num_hidden_layers, mini.hidden_size, mini.head_dim) == (6, 256, 64)
    assert mini.vocab_size % 64 == 0 and mini.vocab_size <= 8192
    # the book's tokenizer adds its special tokens first: [UNK] [CLS] [SEP] [PAD] [MASK]
    assert (mini.cls_token_id, mini.sep_token_id, mini.pad_token_id, mini.mask_token_id) == (1, 2, 3, 4)
    assert ModernBertConfig.mini(vocab_size=8192).vocab_size == 8192


BAD = [  # (field, value, what the message must say)
    ("vocab_size", 0, "positive integer"),
    ("vocab_size", 1.5, "positive integer"),
    ("vocab_size", True, "positive integer"),
    ("hidden_size", -768, "positive integer"),
    ("intermediate_size", 0, "positive integer"),
    ("num_hidden_layers", 0, "positive integer"),
    ("num_attention_heads", 0, "positive integer"),
    ("max_position_embeddings", 0, "positive integer"),
    ("global_attn_every_n_layers", 0, "positive integer"),
    ("local_attention", 0, "positive integer"),
    ("local_attention", -128, "positive integer"),
    ("local_attention", 127, "must be even"),
    ("global_rope_theta", 0.0, "> 0"),
    ("global_rope_theta", "160000", "> 0"),
    ("local_rope_theta", -1.0, "> 0"),
    ("local_rope_theta", math.inf, "> 0"),
    ("local_rope_theta", math.nan, "> 0"),
    ("norm_eps", 0.0, "> 0"),
    ("initializer_range", 0.0, "> 0"),
    ("initializer_cutoff_factor", -2.0, "> 0"),
    ("pad_token_id", -1, "inside the vocab"),
    ("pad_token_id", 50368, "inside the vocab"),
    ("cls_token_id", 1.0, "inside the vocab"),
    ("sep_token_id", 99999, "inside the vocab"),
    ("mask_token_id", 50368, "inside the vocab"),
    ("embedding_dropout", -0.1, "probability"),
    ("attention_dropout", 1.0, "probability"),
    ("mlp_dropout", "0.1", "probability"),
    ("classifier_dropout", 2, "probability"),
    ("classifier_pooling", "max", '"cls" or "mean"'),
    ("sparse_prediction", "yes", "True or False"),
    ("attention_backend", "flash", "one of"),
]


@pytest.mark.parametrize("field,value,what", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_every_bad_value_is_a_clear_error(field, value, what):
    with pytest.raises(ValueError, match=rf"ModernBertConfig\.{field}={value!r:.6}.*{what}"):
        ModernBertConfig(**{field: value})


def test_cross_field_rules():
    with pytest.raises(ValueError, match=r"hidden_size=100 .*divisible by num_attention_heads=3"):
        ModernBertConfig(hidden_size=100, num_attention_heads=3)
    with pytest.raises(ValueError, match=r"hidden_size=36 .*odd head_dim=9"):
        ModernBertConfig(hidden_size=36, num_attention_heads=4)
    with pytest.raises(ValueError, match=r"pad_token_id=50283 .*vocab_size=1000"):
        ModernBertConfig(vocab_size=1000)
    ModernBertConfig(vocab_size=1000, pad_token_id=None, cls_token_id=None, sep_token_id=None,
                     mask_token_id=None)  # None: the checkpoint does not say


def test_numbers_are_stored_as_floats():
    config = ModernBertConfig(global_rope_theta=10_000, embedding_dropout=0)
    assert isinstance(config.global_rope_theta, float) and isinstance(config.embedding_dropout, float)


# ----------------------------------------------------------------------------- transformers
ODD = ModernBertConfig(vocab_size=1000, hidden_size=96, intermediate_size=100, num_hidden_layers=7,
                       num_attention_heads=6, max_position_embeddings=333, global_attn_every_n_layers=2,
                       local_attention=16, global_rope_theta=5e5, local_rope_theta=321.0, norm_eps=1e-6,
                       pad_token_id=0, cls_token_id=7, sep_token_id=8, mask_token_id=9,
                       embedding_dropout=0.1, attention_dropout=0.2, mlp_dropout=0.3,
                       classifier_dropout=0.4, initializer_range=0.03, initializer_cutoff_factor=3.0,
                       classifier_pooling="mean", sparse_prediction=True)


@pytest.mark.parametrize("config", [ModernBertConfig.base(), ModernBertConfig.large(),
                                    ModernBertConfig.mini(), ODD], ids=["base", "large", "mini", "odd"])
def test_round_trip_through_transformers(config):
    hf = tf.ModernBertConfig(**config.to_hf_dict("ModernBertForMaskedLM"))
    n = config.num_hidden_layers
    assert hf.layer_types == ["full_attention" if i % config.global_attn_every_n_layers == 0
                              else "sliding_attention" for i in range(n)]
    assert hf.sliding_window == config.local_attention // 2  # the reference's half window
    assert hf.rope_parameters["full_attention"]["rope_theta"] == config.global_rope_theta
    assert hf.rope_parameters["sliding_attention"]["rope_theta"] == config.local_rope_theta
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "max_position_embeddings", "local_attention", "norm_eps", "pad_token_id", "cls_token_id",
                 "sep_token_id", "embedding_dropout", "attention_dropout", "mlp_dropout", "classifier_dropout",
                 "initializer_range", "initializer_cutoff_factor", "classifier_pooling", "sparse_prediction"):
        assert getattr(hf, name) == getattr(config, name), name
    assert ModernBertConfig.from_hf_dict(hf.to_dict()) == config


def test_older_spelling_reads_the_same():
    """transformers 4.x (and the published checkpoints) write global_attn_every_n_layers and the
    two thetas as plain fields, with no layer_types or rope_parameters."""
    old = {k: v for k, v in ODD.to_hf_dict().items() if k not in ("layer_types", "rope_parameters")}
    assert ModernBertConfig.from_hf_dict(old) == ODD
    hf = tf.ModernBertConfig(**old)  # and today's transformers reads it as we do
    assert ModernBertConfig.from_hf_dict(hf.to_dict()) == ODD


@pytest.mark.parametrize("change,message", [
    ({"model_type": "bert"}, "model_type='bert'"),
    ({"hidden_activation": "silu"}, "hidden_activation='silu' is not supported"),
    ({"norm_bias": True}, "norm_bias=True is not supported"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings=False is not supported"),
    ({"layer_types": ["full_attention", "sliding_attention", "full_attention"]}, "3 entries"),
    ({"layer_types": ["full_attention", "sliding_attention"] * 3 + ["sliding_attention"]},
     "layer_types=.* is not supported"),
    ({"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 2.0}}}, "rope_type='linear'"),
    ({"local_attention": 7}, r"local_attention=7 .*even"),
])
def test_a_config_json_of_another_model_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        ModernBertConfig.from_hf_dict({**ODD.to_hf_dict(), **change})


def test_overrides_when_reading():
    config = ModernBertConfig.from_hf_dict(ODD.to_hf_dict(), attention_backend="eager")
    assert config.attention_backend == "eager" and config.hidden_size == 96


# ----------------------------------------------------------------------------- frozen
def test_a_config_cannot_change_after_it_is_made():
    config = ModernBertConfig.mini()
    with pytest.raises(FrozenInstanceError, match=r"cannot set local_attention=32\. The model's layers "
                                                  r"were built from it.*dataclasses\.replace"):
        config.local_attention = 32
    with pytest.raises(FrozenInstanceError, match="cannot delete hidden_size"):
        del config.hidden_size
    assert config.local_attention == 128
    changed = replace(config, local_attention=32)  # the way to change one: a new config
    assert changed.local_attention == 32 and config.local_attention == 128
    with pytest.raises(ValueError, match="local_attention=31"):
        replace(config, local_attention=31)  # validated again
    assert hash(config) == hash(ModernBertConfig.mini())  # frozen, so usable as a key
    assert copy.deepcopy(config) == config and pickle.loads(pickle.dumps(config)) == config


# ----------------------------------------------------------------------------- labels
def test_label_names():
    config = ModernBertConfig(id2label={"1": "pos", "0": "neg"}, problem_type="regression")
    assert config.id2label == {0: "neg", 1: "pos"} and list(config.id2label) == [0, 1]
    assert config.label2id == {"neg": 0, "pos": 1} and config.num_labels == 2
    assert ModernBertConfig().id2label is None and ModernBertConfig().num_labels is None
    names = {0: "a"}
    config = ModernBertConfig(id2label=names)
    names[1] = "b"  # the config keeps its own copy
    assert config.id2label == {0: "a"}


@pytest.mark.parametrize("id2label,what", [
    ({}, "non-empty dict"),
    (["a", "b"], "non-empty dict"),
    ({0: "a", 2: "b"}, "ids 0 .. 1"),
    ({"x": "a"}, "label ids 0, 1"),
    ({0: "a", 1: 7}, "must be strings"),
    ({0: "a", 1: "a"}, "different from each other"),
])
def test_bad_label_names(id2label, what):
    with pytest.raises(ValueError, match=rf"ModernBertConfig\.id2label=.*{what}"):
        ModernBertConfig(id2label=id2label)


def test_bad_problem_type_and_extras():
    with pytest.raises(ValueError, match=r"problem_type='multi'.*single_label_classification"):
        ModernBertConfig(problem_type="multi")
    with pytest.raises(ValueError, match=r"hf_extras=.*\['hidden_size', 'sliding_window'\].*set the field"):
        ModernBertConfig(hf_extras={"hidden_size": 3, "sliding_window": 4})
    with pytest.raises(ValueError, match=r"hf_extras=.*what config.json can"):
        ModernBertConfig(hf_extras={"when": object()})


# ----------------------------------------------------------------------------- nothing lost
def everything_set_hf_config() -> tf.ModernBertConfig:
    """A transformers config with every field away from its default where the model allows it."""
    return tf.ModernBertConfig(**ODD.to_hf_dict("ModernBertForSequenceClassification"),
                               id2label={0: "no", 1: "maybe", 2: "yes"},
                               problem_type="single_label_classification",
                               deterministic_flash_attn=True, output_hidden_states=True,
                               return_dict=False, chunk_size_feed_forward=8, dtype="bfloat16")


def test_transformers_to_ours_to_transformers_loses_nothing():
    theirs = everything_set_hf_config().to_dict()
    ours = ModernBertConfig.from_hf_dict(theirs)
    assert ours.id2label == {0: "no", 1: "maybe", 2: "yes"}
    assert ours.problem_type == "single_label_classification"
    assert ours.hf_extras["deterministic_flash_attn"] is True
    back = tf.ModernBertConfig(**ours.to_hf_dict("ModernBertForSequenceClassification")).to_dict()
    written_by_save = {"dtype"}  # save_pretrained writes it from the weights (test_hub)
    lost = {k: (v, back.get(k)) for k, v in theirs.items() if k not in written_by_save and back.get(k) != v}
    # transformers 5 writes label2id null and inverts id2label when read; we write the inverse
    assert lost == {"label2id": (None, {"no": 0, "maybe": 1, "yes": 2})}
    assert ModernBertConfig.from_hf_dict(back) == ours


def test_ours_to_transformers_to_ours_loses_nothing():
    ours = replace(ODD, id2label={0: "a", 1: "b"}, problem_type="regression",
                   hf_extras={"my_note": "kept", "reference_compile": False})
    theirs = tf.ModernBertConfig(**ours.to_hf_dict())
    assert theirs.id2label == {0: "a", 1: "b"} and theirs.problem_type == "regression"
    assert theirs.my_note == "kept"
    again = ModernBertConfig.from_hf_dict(theirs.to_dict())
    assert again == ours and again.hf_extras["my_note"] == "kept"


def test_every_key_of_a_transformers_config_is_read_refused_or_kept():
    """Each key transformers writes: changing it changes our config, is refused, or is written back."""
    base = tf.ModernBertConfig(num_hidden_layers=6).to_dict()
    ours = ModernBertConfig.from_hf_dict(base)
    for key, value in base.items():
        if key in ours.hf_extras:
            assert ours.to_hf_dict()[key] == value, key
            continue
        changed = {**base, key: _another_value(key, value)}
        try:
            other = ModernBertConfig.from_hf_dict(changed)
        except ValueError as error:
            assert key in str(error) or key in ("layer_types", "rope_parameters"), (key, error)
            continue
        assert other != ours or key in ("architectures", "dtype"), key  # save_pretrained writes them


def _another_value(key, value):
    if key == "layer_types":
        return ["full_attention", "sliding_attention"] * 3
    if key == "rope_parameters":
        return {kind: {**params, "rope_theta": 77.0} for kind, params in value.items()}
    if key == "id2label":
        return {"0": "x", "1": "y"}
    if key == "label2id":
        return {name: 1 - i for name, i in value.items()}
    if key == "problem_type":
        return "regression"
    if key in ("architectures",):
        return ["ModernBertModel"]
    if key == "dtype":
        return "bfloat16"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 2 if key != "local_attention" else value // 2
    if isinstance(value, float):
        return value / 2 if value else 0.25
    if isinstance(value, str):
        return {"classifier_pooling": "mean", "model_type": "bert"}.get(key, value + "x")
    return value


# ----------------------------------------------------------------------------- sliding_window, rope_scaling
def test_sliding_window_is_half_of_local_attention():
    """transformers: `sliding_window` is a property, local_attention // 2, never written by
    to_dict; a config.json that has one sets local_attention = 2 * sliding_window."""
    hf = {k: v for k, v in ODD.to_hf_dict().items() if k != "local_attention"}
    for half in (4, 32):
        assert ModernBertConfig.from_hf_dict({**hf, "sliding_window": half}).local_attention == \
               tf.ModernBertConfig(**hf, sliding_window=half).local_attention == 2 * half
    agreeing = {**ODD.to_hf_dict(), "sliding_window": ODD.local_attention // 2}
    assert ModernBertConfig.from_hf_dict(agreeing) == ODD
    with pytest.raises(ValueError, match=r"sliding_window=16 disagrees with local_attention=16.*"
                                         r"must be local_attention // 2 = 8"):
        ModernBertConfig.from_hf_dict({**ODD.to_hf_dict(), "sliding_window": 16})
    with pytest.raises(ValueError, match="sliding_window=0 is invalid"):
        ModernBertConfig.from_hf_dict({**hf, "sliding_window": 0})


@pytest.mark.parametrize("rope_scaling", [None, {"rope_type": "default"}, {"type": "default"}])
def test_unscaled_rope_scaling_is_accepted(rope_scaling):
    assert ModernBertConfig.from_hf_dict({**ODD.to_hf_dict(), "rope_scaling": rope_scaling}) == ODD


@pytest.mark.parametrize("rope_scaling", [
    {"rope_type": "linear", "factor": 2.0}, {"type": "yarn", "factor": 4.0},
    {"rope_type": "default", "rope_theta": 5.0}, "linear"])
def test_scaled_rope_is_refused(rope_scaling):
    with pytest.raises(ValueError, match=r"rope_scaling=.* is not supported"):
        ModernBertConfig.from_hf_dict({**ODD.to_hf_dict(), "rope_scaling": rope_scaling})


@pytest.mark.parametrize("rope_parameters,message", [
    ({"rope_type": "default", "rope_theta": 5.0}, "must map"),
    ({"full_attention": {"rope_type": "default", "rope_theta": 5.0, "factor": 2.0}}, r"has \['factor'\]"),
])
def test_rope_parameters_of_another_shape_are_refused(rope_parameters, message):
    with pytest.raises(ValueError, match=message):
        ModernBertConfig.from_hf_dict({**ODD.to_hf_dict(), "rope_parameters": rope_parameters})


def test_label_keys_of_a_config_json():
    hf = ODD.to_hf_dict()
    named = ModernBertConfig.from_hf_dict({**hf, "id2label": {"0": "a", "1": "b"}, "label2id": None})
    assert named.id2label == {0: "a", 1: "b"}  # transformers 5 writes label2id null
    assert ModernBertConfig.from_hf_dict({**hf, "label2id": {"a": 0, "b": 1}}).id2label == {0: "a", 1: "b"}
    assert ModernBertConfig.from_hf_dict({**hf, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}}).id2label is None
    with pytest.raises(ValueError, match="label2id=.* is not the inverse of id2label"):
        ModernBertConfig.from_hf_dict({**hf, "id2label": {"0": "a", "1": "b"}, "label2id": {"a": 1, "b": 0}})
    with pytest.raises(ValueError, match="num_labels=3 disagrees with id2label"):
        ModernBertConfig.from_hf_dict({**hf, "id2label": {"0": "a", "1": "b"}, "num_labels": 3})


def test_a_published_transformers_4_config_reads_and_keeps_its_extra_keys():
    """answerdotai/ModernBERT-base's config.json as published (written by transformers 4.47)."""
    published = {
        "architectures": ["ModernBertForMaskedLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 50281, "classifier_activation": "gelu", "classifier_bias": False,
        "classifier_dropout": 0.0, "classifier_pooling": "mean", "cls_token_id": 50281,
        "decoder_bias": True, "deterministic_flash_attn": False, "embedding_dropout": 0.0,
        "eos_token_id": 50282, "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0,
        "gradient_checkpointing": False, "hidden_activation": "gelu", "hidden_size": 768,
        "initializer_cutoff_factor": 2.0, "initializer_range": 0.02, "intermediate_size": 1152,
        "layer_norm_eps": 1e-05, "local_attention": 128, "local_rope_theta": 10000.0,
        "max_position_embeddings": 8192, "mlp_bias": False, "mlp_dropout": 0.0,
        "model_type": "modernbert", "norm_bias": False, "norm_eps": 1e-05, "num_attention_heads": 12,
        "num_hidden_layers": 22, "pad_token_id": 50283, "position_embedding_type": "absolute",
        "sep_token_id": 50282, "tie_word_embeddings": True, "torch_dtype": "float32",
        "transformers_version": "4.47.0.dev0", "vocab_size": 50368}
    config = ModernBertConfig.from_hf_dict(published)
    assert config == ModernBertConfig.base(classifier_pooling="mean", mask_token_id=None)
    written = config.to_hf_dict("ModernBertForMaskedLM")
    for key, value in published.items():
        if key != "torch_dtype":  # save_pretrained writes it from the weights
            assert written[key] == value, key


def test_a_damaged_config_json_is_an_error_that_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 256, ')  # cut short
    with pytest.raises(ValueError, match=r"config\.json cannot be read .*damaged or cut short"):
        ModernBertConfig.from_pretrained(tmp_path)

"""ModernBertConfig: the three sizes, validation of every field, and the round trip through
transformers' ModernBertConfig (config.json)."""

import math

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

"""The ModernBERT configuration: one dataclass that says how big the model is.

Chapter 8 (the whole model) walks through it; every other chapter reads its fields. The defaults
are ModernBERT-base; `base()`, `large()` and `mini()` give the three sizes this book uses. A
config is validated when it is made: a bad value raises a ValueError naming the field, the value
and what would be valid.

`to_hf_dict()` / `from_hf_dict()` convert to and from the `config.json` of a Hugging Face
`transformers` ModernBertConfig, so a checkpoint moves between the two implementations as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

# The attention backends by name (backends.py implements them; the config only holds names):
# "auto" picks one at forward time for the device, dtype and input.
ATTENTION_BACKENDS = ("auto", "eager", "sdpa", "local", "varlen", "tiled", "triton", "flash_attn")

# What transformers writes for ModernBERT and this package builds: anything else is another model.
_FIXED_HF_FIELDS = {
    "hidden_activation": "gelu",  # exact (erf) GELU in the GeGLU
    "classifier_activation": "gelu",  # and in the prediction head
    "norm_bias": False,  # LayerNorm without bias
    "attention_bias": False,  # no bias in Wqkv / Wo
    "mlp_bias": False,  # no bias in Wi / Wo
    "classifier_bias": False,  # no bias in the head's dense layer
    "decoder_bias": True,  # the MLM decoder has one
    "tie_word_embeddings": True,  # the MLM decoder shares the token embedding
    "sparse_pred_ignore_index": -100,  # the label of positions without a target
}


@dataclass
class ModernBertConfig:
    # sizes
    vocab_size: int = 50368  # a multiple of 64, so the embedding and decoder matmuls tile well
    hidden_size: int = 768
    intermediate_size: int = 1152  # GeGLU width: Wi maps hidden -> 2 * intermediate
    num_hidden_layers: int = 22
    num_attention_heads: int = 12  # head_dim = hidden_size // num_attention_heads
    max_position_embeddings: int = 8192
    # alternating attention: layer i is global when i % global_attn_every_n_layers == 0
    global_attn_every_n_layers: int = 3
    local_attention: int = 128  # sliding window, total tokens: a token sees keys within +-64
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    # special tokens (None: this checkpoint does not say)
    pad_token_id: int | None = 50283
    cls_token_id: int | None = 50281
    sep_token_id: int | None = 50282
    mask_token_id: int | None = 50284
    # regularisation
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    mlp_dropout: float = 0.0
    classifier_dropout: float = 0.0
    # initialisation: truncated normal, cut at cutoff * std
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    # heads
    classifier_pooling: str = "cls"  # "cls" (first token) or "mean" (over non-pad tokens)
    sparse_prediction: bool = False  # MLM head only on positions with a label
    # how attention is computed (see backends.py): one of ATTENTION_BACKENDS
    attention_backend: str = "auto"

    # ------------------------------------------------------------------ sizes
    @classmethod
    def base(cls, **overrides) -> ModernBertConfig:
        """ModernBERT-base: 22 layers, hidden 768, 12 heads, 149,014,272 parameters."""
        return cls(**overrides)

    @classmethod
    def large(cls, **overrides) -> ModernBertConfig:
        """ModernBERT-large: 28 layers, hidden 1024, 16 heads, 394,781,696 parameters."""
        sizes = dict(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28,
                     num_attention_heads=16)
        return cls(**{**sizes, **overrides})

    @classmethod
    def mini(cls, **overrides) -> ModernBertConfig:
        """A ModernBERT that pretrains on a 2-core CPU in minutes: 6 layers, hidden 256, 4 heads.

        Same shape rules as base (GeGLU width 1.5 x hidden, global every 3rd layer, a 128-token
        window, the same thetas). The vocab is the book's own tokenizer's (chapter 1), whose
        special tokens come first: [UNK]=0, [CLS]=1, [SEP]=2, [PAD]=3, [MASK]=4.
        """
        sizes = dict(vocab_size=8192, hidden_size=256, intermediate_size=384, num_hidden_layers=6,
                     num_attention_heads=4, max_position_embeddings=1024,
                     cls_token_id=1, sep_token_id=2, pad_token_id=3, mask_token_id=4)
        return cls(**{**sizes, **overrides})

    # ------------------------------------------------------------------ derived
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def is_global_layer(self, layer: int) -> bool:
        """Layer 0 is global, then every `global_attn_every_n_layers`-th; the others are local."""
        return layer % self.global_attn_every_n_layers == 0

    # ------------------------------------------------------------------ validation
    def __post_init__(self):
        def bad(name, what):
            value = getattr(self, name)
            raise ValueError(f"ModernBertConfig.{name}={value!r} is invalid: {what}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "max_position_embeddings", "global_attn_every_n_layers",
                     "local_attention"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "must be a positive integer")
        if self.hidden_size % self.num_attention_heads:
            bad("hidden_size", f"must be divisible by num_attention_heads={self.num_attention_heads}")
        if self.head_dim % 2:
            bad("hidden_size", f"gives an odd head_dim={self.head_dim} (hidden_size // "
                "num_attention_heads); RoPE rotates pairs, so head_dim must be even")
        if self.local_attention % 2:
            bad("local_attention", "must be even: it is the total window, the same number of "
                "keys on each side of a token (128 means +-64)")

        for name in ("global_rope_theta", "local_rope_theta", "norm_eps", "initializer_range",
                     "initializer_cutoff_factor"):
            value = getattr(self, name)
            if not (is_number(value) and math.isfinite(value) and value > 0):
                bad(name, "must be a finite number > 0")
            setattr(self, name, float(value))

        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
            value = getattr(self, name)
            if value is not None and not (is_int(value) and 0 <= value < self.vocab_size):
                bad(name, "must be None or an id inside the vocab, "
                          f"0 <= id < vocab_size={self.vocab_size}")

        for name in ("embedding_dropout", "attention_dropout", "mlp_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if not (is_number(value) and 0 <= value < 1):
                bad(name, "must be a probability, 0 <= p < 1")
            setattr(self, name, float(value))

        if self.classifier_pooling not in ("cls", "mean"):
            bad("classifier_pooling", 'must be "cls" or "mean"')
        if not isinstance(self.sparse_prediction, bool):
            bad("sparse_prediction", "must be True or False")
        if self.attention_backend not in ATTENTION_BACKENDS:
            bad("attention_backend", f"must be one of {list(ATTENTION_BACKENDS)}")

    # ------------------------------------------------------------------ transformers config.json
    def to_hf_dict(self, architecture: str | None = None) -> dict:
        """The `config.json` dict of the equivalent transformers ModernBertConfig.

        Written in transformers 5's spelling (`layer_types`, `rope_parameters`) and in the older
        one (`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`) too, so that
        transformers 4.48+ reads the same model.
        """
        layer_types = ["full_attention" if self.is_global_layer(i) else "sliding_attention"
                       for i in range(self.num_hidden_layers)]
        hf = {
            "model_type": "modernbert",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "layer_types": layer_types,
            "global_attn_every_n_layers": self.global_attn_every_n_layers,
            "local_attention": self.local_attention,
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": self.global_rope_theta},
                "sliding_attention": {"rope_type": "default", "rope_theta": self.local_rope_theta},
            },
            "global_rope_theta": self.global_rope_theta,
            "local_rope_theta": self.local_rope_theta,
            "norm_eps": self.norm_eps,
            "pad_token_id": self.pad_token_id,
            "cls_token_id": self.cls_token_id,
            "sep_token_id": self.sep_token_id,
            "bos_token_id": self.cls_token_id,  # ModernBERT's [CLS] / [SEP] double as bos / eos
            "eos_token_id": self.sep_token_id,
            "embedding_dropout": self.embedding_dropout,
            "attention_dropout": self.attention_dropout,
            "mlp_dropout": self.mlp_dropout,
            "classifier_dropout": self.classifier_dropout,
            "initializer_range": self.initializer_range,
            "initializer_cutoff_factor": self.initializer_cutoff_factor,
            "classifier_pooling": self.classifier_pooling,
            "sparse_prediction": self.sparse_prediction,
            **_FIXED_HF_FIELDS,
        }
        if self.mask_token_id is not None:  # not a transformers field; kept as an extra attribute
            hf["mask_token_id"] = self.mask_token_id
        if architecture is not None:
            hf["architectures"] = [architecture]
        return hf

    @classmethod
    def from_hf_dict(cls, hf: dict, **overrides) -> ModernBertConfig:
        """Read a transformers ModernBERT `config.json` dict (old or new spelling).

        Fields the dict leaves out take transformers' defaults (which are ModernBERT-base's).
        A field that would make a different model (a bias, another activation, untied decoder,
        a layer pattern that is not "global every n") raises a ValueError.
        """
        if hf.get("model_type", "modernbert") != "modernbert":
            raise ValueError(f"config.json model_type={hf['model_type']!r} is not 'modernbert'")
        for name, expected in _FIXED_HF_FIELDS.items():
            if name in hf and hf[name] != expected:
                raise ValueError(f"config.json {name}={hf[name]!r} is not supported: ModernBERT "
                                 f"(and this package) uses {name}={expected!r}")

        ours = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in hf.items() if k in ours}
        num_layers = hf.get("num_hidden_layers", cls.num_hidden_layers)
        if hf.get("layer_types") is not None:
            kwargs["global_attn_every_n_layers"] = _every_n_from_layer_types(hf["layer_types"], num_layers)
        if hf.get("rope_parameters") is not None:
            for kind, field in (("full_attention", "global_rope_theta"),
                                ("sliding_attention", "local_rope_theta")):
                params = hf["rope_parameters"].get(kind) or {}
                if params.get("rope_type", "default") != "default":
                    raise ValueError(f"config.json rope_parameters[{kind!r}].rope_type="
                                     f"{params['rope_type']!r} is not supported: only 'default' RoPE")
                if "rope_theta" in params:
                    kwargs[field] = params["rope_theta"]
        if "mask_token_id" not in hf:
            kwargs["mask_token_id"] = None  # the published configs do not say; the tokenizer does
        return cls(**{**kwargs, **overrides})


def _every_n_from_layer_types(layer_types: list[str], num_layers: int) -> int:
    """The n of "global every n layers" that gives `layer_types`, or a ValueError."""
    if len(layer_types) != num_layers:
        raise ValueError(f"config.json layer_types has {len(layer_types)} entries for "
                         f"num_hidden_layers={num_layers}")
    global_layers = [i for i, kind in enumerate(layer_types) if kind == "full_attention"]
    every_n = global_layers[1] if len(global_layers) > 1 else num_layers
    expected = ["sliding_attention" if i % every_n else "full_attention" for i in range(num_layers)]
    if layer_types != expected:
        raise ValueError(f"config.json layer_types={layer_types} is not supported: ModernBERT "
                         "makes layer i global when i % n == 0 and local otherwise")
    return every_n

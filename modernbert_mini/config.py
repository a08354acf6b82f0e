"""The ModernBERT configuration: one dataclass that says how big the model is.

Chapter 8 (the whole model) walks through it; every other chapter reads its fields. The defaults
are ModernBERT-base; `base()`, `large()` and `mini()` give the three sizes this book uses. A
config is validated when it is made: a bad value raises a ValueError naming the field, the value
and what would be valid.

A config is frozen: the model reads it once, when its layers are built, so a config that could
change afterwards would describe a model that is not the one running. Make a changed copy with
`dataclasses.replace(config, local_attention=64)` and build a new model from it.

`to_hf_dict()` / `from_hf_dict()` convert to and from the `config.json` of a Hugging Face
`transformers` ModernBertConfig, so a checkpoint moves between the two implementations as is and
nothing is lost on the way: every key of a config.json is read into a field, refused with a
ValueError that names it (it would make another model), or kept in `hf_extras` and written back.
`ModernBertConfig.from_pretrained(path_or_id)` reads the config.json of a checkpoint: finding a
checkpoint (a local directory or a hub id) and reading its config.json live here, at the ground
floor, so that hub.py (the weights) builds on this module and never the other way round.
"""

from __future__ import annotations

import json
import math
from dataclasses import FrozenInstanceError, dataclass, field, fields
from pathlib import Path
from typing import Any

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

# config.json keys read (or checked) besides those named like a field: not kept in hf_extras,
# because to_hf_dict (or save_pretrained, for the class and dtype) writes them anew.
_READ_HF_KEYS = {"model_type", "layer_types", "rope_parameters", "rope_scaling", "sliding_window",
                 "label2id", "num_labels", "architectures", "dtype", "torch_dtype",
                 *_FIXED_HF_FIELDS}

# A checkpoint in the Hugging Face layout: config.json and the weights in safetensors
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"  # the shards of a large checkpoint

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


@dataclass(frozen=True)
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
    # a classifier's label names, {0: "negative", 1: "positive"}: the one source of its num_labels.
    # None: no names (a classifier built from it names its labels "LABEL_0", ..., transformers'
    # defaults). hash=False: a dict is not hashable.
    id2label: dict[int, str] | None = field(default=None, hash=False)
    problem_type: str | None = None  # None (from the labels' dtype) or one of PROBLEM_TYPES
    # keys of a transformers config.json this package does not use (transformers_version,
    # output_hidden_states, ...): kept as read and written back. They do not change the model,
    # so they take no part in ==.
    hf_extras: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

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

    @property
    def num_labels(self) -> int | None:
        """How many labels id2label names (None when it names none)."""
        return None if self.id2label is None else len(self.id2label)

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.id2label is None else {name: i for i, name in self.id2label.items()}

    # ------------------------------------------------------------------ validation
    def __post_init__(self):
        def store(name, value):  # the dataclass is frozen; __post_init__ may still normalise
            object.__setattr__(self, name, value)

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
            store(name, float(value))

        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
            value = getattr(self, name)
            if value is not None and not (is_int(value) and 0 <= value < self.vocab_size):
                bad(name, "must be None or an id inside the vocab, "
                          f"0 <= id < vocab_size={self.vocab_size}")

        for name in ("embedding_dropout", "attention_dropout", "mlp_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if not (is_number(value) and 0 <= value < 1):
                bad(name, "must be a probability, 0 <= p < 1")
            store(name, float(value))

        if self.classifier_pooling not in ("cls", "mean"):
            bad("classifier_pooling", 'must be "cls" or "mean"')
        if not isinstance(self.sparse_prediction, bool):
            bad("sparse_prediction", "must be True or False")
        if self.attention_backend not in ATTENTION_BACKENDS:
            bad("attention_backend", f"must be one of {list(ATTENTION_BACKENDS)}")

        if self.id2label is not None:
            store("id2label", _label_names(self.id2label))
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            bad("problem_type", f"must be None or one of {list(PROBLEM_TYPES)}")
        if not isinstance(self.hf_extras, dict):
            bad("hf_extras", "must be a dict of config.json keys to values")
        taken = sorted(self.hf_extras.keys() & ({f.name for f in fields(self)} | _READ_HF_KEYS))
        if taken:
            bad("hf_extras", f"holds {taken}, which the config reads itself; set the field instead")
        try:
            store("hf_extras", json.loads(json.dumps(self.hf_extras)))  # a copy, as written
        except (TypeError, ValueError) as error:
            bad("hf_extras", f"must hold only what config.json can: {error}")

    # ------------------------------------------------------------------ transformers config.json
    def to_hf_dict(self, architecture: str | None = None) -> dict:
        """The `config.json` dict of the equivalent transformers ModernBertConfig.

        Written in transformers 5's spelling (`layer_types`, `rope_parameters`) and in the older
        one (`global_attn_every_n_layers`, `global_rope_theta`, `local_rope_theta`) too, so that
        transformers 4.48+ reads the same model. The label names (id2label and label2id) and
        problem_type when set, and the kept `hf_extras`, are written too; the weights' dtype is
        save_pretrained's to write.
        """
        layer_types = ["full_attention" if self.is_global_layer(i) else "sliding_attention"
                       for i in range(self.num_hidden_layers)]
        hf = {
            "bos_token_id": self.cls_token_id,  # ModernBERT's [CLS] / [SEP] double as bos / eos,
            "eos_token_id": self.sep_token_id,  # unless the checkpoint said otherwise (hf_extras)
            **self.hf_extras,
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
        if self.id2label is not None:  # transformers' spelling: string keys in id2label
            hf["id2label"] = {str(i): name for i, name in self.id2label.items()}
            hf["label2id"] = self.label2id
        if self.problem_type is not None:
            hf["problem_type"] = self.problem_type
        if architecture is not None:
            hf["architectures"] = [architecture]
        return hf

    @classmethod
    def from_hf_dict(cls, hf: dict, **overrides) -> ModernBertConfig:
        """Read a transformers ModernBERT `config.json` dict (old or new spelling).

        Fields the dict leaves out take transformers' defaults (which are ModernBERT-base's).
        A key that would make a different model (a bias, another activation, untied decoder,
        a layer pattern that is not "global every n", scaled RoPE, a sliding_window that is not
        half of local_attention) raises a ValueError that names it. Keys this package does not
        use are kept in `hf_extras`, and `to_hf_dict` writes them back.
        """
        if hf.get("model_type", "modernbert") != "modernbert":
            raise ValueError(f"config.json model_type={hf['model_type']!r} is not 'modernbert'")
        for name, expected in _FIXED_HF_FIELDS.items():
            if name in hf and hf[name] != expected:
                raise ValueError(f"config.json {name}={hf[name]!r} is not supported: ModernBERT "
                                 f"(and this package) uses {name}={expected!r}")

        ours = {f.name for f in fields(cls)} - {"hf_extras", "id2label"}
        kwargs = {k: v for k, v in hf.items() if k in ours}
        num_layers = hf.get("num_hidden_layers", cls.num_hidden_layers)
        if hf.get("layer_types") is not None:
            kwargs["global_attn_every_n_layers"] = _every_n_from_layer_types(hf["layer_types"], num_layers)
        kwargs.update(_thetas_from_rope(hf.get("rope_parameters"), hf.get("rope_scaling")))
        if hf.get("sliding_window") is not None:
            kwargs["local_attention"] = _local_attention_from_sliding_window(hf)
        kwargs["id2label"] = _id2label_from_hf(hf)
        if "mask_token_id" not in hf:
            kwargs["mask_token_id"] = None  # the published configs do not say; the tokenizer does
        kwargs["hf_extras"] = {k: v for k, v in hf.items() if k not in ours | _READ_HF_KEYS
                               and k != "id2label"}
        return cls(**{**kwargs, **overrides})

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, *, revision: str | None = None,
                        **overrides) -> ModernBertConfig:
        """The config of a checkpoint: a local directory, or a hub id (only config.json is fetched).

        overrides: fields to set differently, e.g. attention_backend="eager".
        """
        directory = resolve_checkpoint(path_or_id, revision, config_only=True)
        return cls.from_hf_dict(read_hf_config(directory), **overrides)


# ----------------------------------------------------------------------------- finding a checkpoint
def resolve_checkpoint(name_or_dir: str | Path, revision: str | None = None, *,
                       config_only: bool = False) -> Path:
    """A local directory as is; anything else is a hub id, downloaded with huggingface_hub
    (config.json alone with config_only=True, else with the weights)."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_dir)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise FileNotFoundError(f"{text} is not a checkpoint directory")
    from huggingface_hub import snapshot_download  # only here: loading a local dir never needs it

    patterns = [CONFIG_NAME] if config_only else [CONFIG_NAME, WEIGHTS_INDEX_NAME, "*.safetensors"]
    return Path(snapshot_download(repo_id=text, revision=revision, allow_patterns=patterns))


def read_hf_config(directory: Path) -> dict:
    config_file = directory / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as error:  # say which file, as the weights' errors do (hub.naming)
        raise ValueError(f"{config_file} cannot be read (JSONDecodeError: {error}): the file is "
                         "damaged or cut short; save or download it again") from error


def _refuse_assignment(self, name: str, value: Any) -> None:
    raise FrozenInstanceError(
        f"ModernBertConfig is frozen: cannot set {name}={value!r}. The model's layers were built "
        f"from it, so changing it would change only what save_pretrained writes, not what runs. "
        f"Make a new config with dataclasses.replace(config, {name}=...) and a new model from it.")


def _refuse_deletion(self, name: str) -> None:
    raise FrozenInstanceError(f"ModernBertConfig is frozen: cannot delete {name}")


ModernBertConfig.__setattr__ = _refuse_assignment  # the dataclass's own message says less
ModernBertConfig.__delattr__ = _refuse_deletion


def _label_names(id2label: dict) -> dict[int, str]:
    """id2label as {0: name, 1: name, ...}; config.json writes the ids as strings."""
    def bad(what):
        raise ValueError(f"ModernBertConfig.id2label={id2label!r} is invalid: {what}")

    if not isinstance(id2label, dict) or not id2label:
        bad("must be None or a non-empty dict {id: label name}")
    try:
        names = {int(i): name for i, name in id2label.items() if not isinstance(i, bool)}
    except (TypeError, ValueError):
        bad("its keys must be the label ids 0, 1, ..., as ints or strings")
    if sorted(names) != list(range(len(id2label))):
        bad(f"its keys must be the label ids 0 .. {len(id2label) - 1}, each once")
    if not all(isinstance(name, str) for name in names.values()):
        bad("the label names must be strings")
    if len(set(names.values())) != len(names):
        bad("the label names must be different from each other (label2id inverts it)")
    return dict(sorted(names.items()))


def _id2label_from_hf(hf: dict) -> dict[int, str] | None:
    """The label names of a config.json: None when they are transformers' LABEL_0, LABEL_1, ..."""
    id2label, label2id, num_labels = hf.get("id2label"), hf.get("label2id"), hf.get("num_labels")
    if id2label is None and label2id is not None:  # only the other direction was written
        if not isinstance(label2id, dict):
            raise ValueError(f"config.json label2id={label2id!r} is not a dict {{name: id}}")
        id2label = {i: name for name, i in label2id.items()}
    if id2label is None:
        return None
    names = _label_names(id2label)
    if label2id is not None and label2id != {name: i for i, name in names.items()}:
        raise ValueError(f"config.json label2id={label2id!r} is not the inverse of "
                         f"id2label={id2label!r}: the two must name the same labels")
    if num_labels is not None and num_labels != len(names):
        raise ValueError(f"config.json num_labels={num_labels!r} disagrees with id2label, "
                         f"which names {len(names)} labels")
    defaults = {i: f"LABEL_{i}" for i in range(len(names))}
    return None if names == defaults else names


def _thetas_from_rope(rope_parameters: dict | None, rope_scaling: dict | None) -> dict:
    """global/local_rope_theta from transformers 5's rope_parameters; only unscaled RoPE."""
    if rope_scaling is not None:  # the older key: transformers merges it into both layer kinds
        kind = rope_scaling.get("rope_type", rope_scaling.get("type")) if isinstance(rope_scaling, dict) else None
        if not isinstance(rope_scaling, dict) or kind != "default" or set(rope_scaling) - {"rope_type", "type"}:
            raise ValueError(f"config.json rope_scaling={rope_scaling!r} is not supported: only "
                             "unscaled RoPE (None, or rope_type 'default' with nothing else)")
    if rope_parameters is None:
        return {}
    kinds = {"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"}
    if not isinstance(rope_parameters, dict) or set(rope_parameters) - kinds.keys():
        raise ValueError(f"config.json rope_parameters={rope_parameters!r} is not supported: "
                         f"it must map {list(kinds)} to {{'rope_type': 'default', 'rope_theta': ...}}")
    thetas = {}
    for kind, name in kinds.items():
        params = rope_parameters.get(kind) or {}
        if params.get("rope_type", "default") != "default":
            raise ValueError(f"config.json rope_parameters[{kind!r}].rope_type="
                             f"{params['rope_type']!r} is not supported: only 'default' RoPE")
        other = sorted(set(params) - {"rope_type", "rope_theta"})
        if other:
            raise ValueError(f"config.json rope_parameters[{kind!r}] has {other}, which "
                             "unscaled RoPE does not have: only 'rope_type' and 'rope_theta'")
        if "rope_theta" in params:
            thetas[name] = params["rope_theta"]
    return thetas


def _local_attention_from_sliding_window(hf: dict) -> int:
    """transformers' sliding_window is half the window (local_attention // 2); it sets
    local_attention = 2 * sliding_window when read. Both given: they must agree."""
    half = hf["sliding_window"]
    if not isinstance(half, int) or isinstance(half, bool) or half < 1:
        raise ValueError(f"config.json sliding_window={half!r} is invalid: must be a positive "
                         "integer, half of local_attention")
    if "local_attention" in hf and hf["local_attention"] != 2 * half:
        raise ValueError(f"config.json sliding_window={half} disagrees with local_attention="
                         f"{hf['local_attention']}: sliding_window is the half window, so it "
                         f"must be local_attention // 2 = {hf['local_attention'] // 2}")
    return 2 * half


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

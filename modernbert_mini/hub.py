"""Checkpoints in the Hugging Face layout: load the published ModernBERT, save ours. Chapter 8.

A checkpoint is a directory with `config.json` (a transformers ModernBertConfig) and the weights
in safetensors: `model.safetensors`, or shards listed in `model.safetensors.index.json`. Our
parameter names are the reference's, so a state dict maps one to one; the only twists are

- the encoder's names start with "model." inside a model with a head
  ("model.layers.0.attn.Wqkv.weight"), and not in a bare encoder ("layers.0.attn.Wqkv.weight");
- the MLM decoder's weight is the token embedding, so it is not stored (transformers leaves it
  out too) and, if a file has it anyway, it must equal the embedding.

Loading builds the model on PyTorch's "meta" device (shapes, no memory, no random init) and then
puts the checkpoint's tensors in as the parameters themselves (`load_state_dict(assign=True)`),
converted to the asked dtype and device once: no weight is initialised only to be overwritten.
The tie between the MLM decoder and the token embedding is made again after that.

Heads change as in transformers: the published MLM checkpoint loads into a classifier (its
`head.*` is reused, `decoder.*` is dropped, the classifier starts fresh, and a warning lists the
new weights and the dropped ones) or into a bare encoder. The encoder itself must be complete,
and a misshapen key is always a ValueError that lists them; `strict=True` makes a missing or
unexpected key one too. The keys a checkpoint lacks get the model's own initialisation (its
`init_package_weights`, which model.py implements with `init_weights`: loading knows the layout,
not the model's code), and nothing else is initialised. Only safetensors are read: a pickle file
can run code when loaded. A file that cannot be read is an error that names it.

Saving writes the tokenizer beside the weights when there is one, so that the folder is a whole
model for transformers (`AutoTokenizer`, `AutoModel*`, `pipeline`); every file goes to a
temporary folder first and is renamed into place, so an error leaves the folder as it was.
`save_sentence_transformers` writes the folder that sentence-transformers loads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

# Finding a checkpoint and reading its config.json is the config's (the ground floor); the names
# stay importable from here.
from .config import (ATTENTION_BACKENDS, CONFIG_NAME, WEIGHTS_INDEX_NAME,  # noqa: F401
                     WEIGHTS_NAME, ModernBertConfig, read_hf_config, resolve_checkpoint)
from .tokenizer import TOKENIZER_FILE, as_tokenizer, load_tokenizer, save_tokenizer

ENCODER_PREFIX = "model."  # where the encoder sits inside a model with a head
SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")  # transformers' shard names
# transformers' attn_implementation -> the package's attention_backend
ATTN_IMPLEMENTATIONS = {"eager": "eager", "sdpa": "sdpa", "flash_attention_2": "flash_attn"}
POOLINGS = ("mean", "cls")  # one vector per text: the mean over real tokens, or the [CLS] state


# ----------------------------------------------------------------------------- reading files
@contextmanager
def naming(path: Path) -> Iterator[None]:
    """A file that does not parse (cut short, or not what its name says) is an error naming it."""
    try:
        yield
    except (json.JSONDecodeError, SafetensorError) as error:
        raise ValueError(f"{path} cannot be read ({type(error).__name__}: {error}): the file is "
                         "damaged or cut short; save or download it again") from error


def read_state_dict(directory: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint, from model.safetensors or from its shards, read onto `device`."""
    device = str(torch.device(device))
    if (directory / WEIGHTS_NAME).is_file():
        with naming(directory / WEIGHTS_NAME):
            return load_file(directory / WEIGHTS_NAME, device=device)
    if (directory / WEIGHTS_INDEX_NAME).is_file():
        with naming(directory / WEIGHTS_INDEX_NAME):
            weight_map = json.loads((directory / WEIGHTS_INDEX_NAME).read_text())["weight_map"]
        state_dict = {}
        for shard in sorted(set(weight_map.values())):
            with naming(directory / shard):
                state_dict.update(load_file(directory / shard, device=device))
        return state_dict
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    hint = (f"; it has {pickles}, but pickle files are not loaded (they can run code): "
            "convert them to safetensors first") if pickles else ""
    raise FileNotFoundError(f"{directory} has no {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME}{hint}")


# ----------------------------------------------------------------------------- matching names
def align_prefix(state_dict: dict, encoder_prefix: str) -> dict:
    """Add or strip the encoder's "model." so a checkpoint's names follow the model's."""
    has_prefix = any(key.startswith(ENCODER_PREFIX) for key in state_dict)
    if encoder_prefix and not has_prefix:  # a bare encoder's checkpoint, into a model with a head
        return {encoder_prefix + key: value for key, value in state_dict.items()}
    if not encoder_prefix and has_prefix:  # a model with a head, into a bare encoder
        return {key.removeprefix(ENCODER_PREFIX): value for key, value in state_dict.items()}
    return state_dict


def _listing(title: str, keys: list[str], limit: int = 40) -> str:
    shown = ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
    return f"\n  {title} ({len(keys)}): {shown}"


def load_hf_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor],
                       strict: bool = True, assign: bool = False) -> dict[str, list[str]]:
    """Put a state dict named as transformers names it into `model` (any of the model classes).

    Misshapen keys and missing encoder keys are always a ValueError; with strict=True missing
    head keys and unexpected keys are too, and with strict=False a warning lists them, as
    transformers' does. Returns {"missing": [...], "unexpected": [...]}: what was left at its
    initialisation and what was dropped (both empty when strict).

    assign=False copies into the model's parameters (their dtype and device stay). assign=True
    is for a model built on the meta device: the tensors become its parameters as they are, the
    missing ones are initialised (`initialise_missing`) and the tied weights are tied again.
    """
    state_dict = dict(align_prefix(state_dict, model.encoder_prefix))  # ours to change
    expected = {key: tensor.shape for key, tensor in model.state_dict().items()}
    for tied, source in model.tied_weights.items():  # stored once, under `source`
        del expected[tied]
        if tied in state_dict:
            duplicate = state_dict.pop(tied)
            if source in state_dict and not torch.equal(duplicate, state_dict[source]):
                raise ValueError(f"checkpoint has {tied} different from {source}, but the model "
                                 f"ties them (tie_word_embeddings): it is not a ModernBERT checkpoint")
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    misshapen = [f"{key} {tuple(state_dict[key].shape)} != {tuple(expected[key])}"
                 for key in sorted(expected.keys() & state_dict.keys())
                 if state_dict[key].shape != expected[key]]
    missing_encoder = [key for key in missing if key.startswith(model.encoder_prefix)]

    if misshapen or missing_encoder or (strict and (missing or unexpected)):
        name = type(model).__name__
        message = f"checkpoint does not match {name}:"
        message += _listing("misshapen (checkpoint != model)", misshapen) if misshapen else ""
        message += _listing("missing", missing) if missing else ""
        message += _listing("unexpected", unexpected) if unexpected else ""
        if not (misshapen or missing_encoder):
            message += ("\n  the encoder matches: pass strict=False to keep the new head's "
                        "initialisation for the missing keys and drop the unexpected ones")
        raise ValueError(message)
    if missing or unexpected:
        warnings.warn(f"some weights of {type(model).__name__} are not the checkpoint's:"
                      + (_listing("newly initialised", missing) if missing else "")
                      + (_listing("in the checkpoint, not used", unexpected) if unexpected else "")
                      + ("\n  train the model (fine-tune it) before you use its predictions"
                         if missing else ""), stacklevel=3)
    if assign:
        initialise_missing(model, missing)
    model.load_state_dict({key: state_dict[key] for key in expected.keys() & state_dict.keys()},
                          strict=False, assign=assign)
    if assign:
        tie_weights(model)
    return {"missing": missing, "unexpected": unexpected}


def tie_weights(model: nn.Module) -> None:
    """Make each tied parameter (the MLM decoder's weight) the very tensor it is tied to again:
    load_state_dict(assign=True) puts a new tensor in at the source and leaves the tie behind."""
    for tied, source in model.tied_weights.items():
        owner, _, name = tied.rpartition(".")
        setattr(model.get_submodule(owner), name, model.get_parameter(source))


def initialise_missing(model: nn.Module, missing: list[str]) -> None:
    """Give the tensors a checkpoint lacks (a new head's) real values, on a model on the meta
    device: only they get memory, then the init runs over the whole model and skips what is
    still on meta. Called before the checkpoint's tensors go in."""
    if not missing:
        return
    owners = set()
    for key in missing:
        owner, _, name = key.rpartition(".")
        module = model.get_submodule(owner)
        meta = getattr(module, name)  # (torch.empty_like of a meta tensor imports sympy)
        empty = torch.empty(meta.shape, dtype=meta.dtype, device="cpu")  # no values yet
        if name in module._parameters:
            setattr(module, name, nn.Parameter(empty))
        else:
            module.register_buffer(name, empty)
        owners.add(module)
    with init_skips_meta():  # only the new tensors are initialised
        for module in owners:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()  # PyTorch's init (LayerNorm 1, Linear ...)
        model.init_package_weights()  # then the package's, for the modules it initialises


@contextmanager
def init_skips_meta() -> Iterator[None]:
    """For a moment, torch.nn.init's functions leave tensors on the meta device alone.

    A model built on meta has no values to fill (transformers' `no_init_weights` does the same),
    and on meta some of them (normal_) cost a one-off import of torch._dynamo: seconds, in a
    fresh process. Tensors with memory are initialised as always.
    """
    names = [name for name in dir(nn.init) if name.endswith("_") and not name.startswith("_")]
    saved = {name: getattr(nn.init, name) for name in names}

    def unless_meta(function):
        def init(tensor, *args, **kwargs):
            return tensor if tensor.is_meta else function(tensor, *args, **kwargs)
        return init

    try:
        for name, function in saved.items():
            setattr(nn.init, name, unless_meta(function))
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of parameters and buffers still on the meta device (i.e. without values)."""
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return [name for name, tensor in tensors if tensor.is_meta]


def resolve_device(device: torch.device | str | None) -> torch.device:
    """None: the CPU; a CUDA device only where torch can reach it (else a ValueError that says why)."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "torch finds no CUDA GPU or driver on this machine")
            raise ValueError(f"device={str(device)!r} asks for a CUDA GPU, but {why}: load with "
                             "device='cpu', or run on a machine with an NVIDIA GPU and a CUDA build "
                             "of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ValueError(f"device={str(device)!r} is not here: this machine has {count} CUDA "
                             f"device(s), cuda:0 to cuda:{count - 1}")
    return device


def resolve_attention(attn_implementation: str | None, overrides: dict) -> dict:
    """transformers' attn_implementation= as the package's attention_backend= override."""
    if attn_implementation is None:
        return overrides
    backend = ATTN_IMPLEMENTATIONS.get(attn_implementation)
    if backend is None:
        raise ValueError(f"attn_implementation={attn_implementation!r} has no backend here: "
                         f"transformers' names this package maps are {list(ATTN_IMPLEMENTATIONS)}; "
                         f"or choose the package's own with attention_backend= (one of "
                         f"{list(ATTENTION_BACKENDS)})")
    if overrides.get("attention_backend", backend) != backend:
        raise ValueError(f"attn_implementation={attn_implementation!r} (attention_backend="
                         f"{backend!r}) and attention_backend={overrides['attention_backend']!r} "
                         "disagree: pass one of them")
    return {**overrides, "attention_backend": backend}


def resolve_dtype(dtype: torch.dtype | str | None, hf: dict) -> torch.dtype:
    """None: PyTorch's default (float32); "auto": what config.json says the weights are; a
    torch.dtype or its name ("bfloat16"): that one."""
    if dtype is None:
        return torch.get_default_dtype()
    asked = dtype
    if dtype == "auto":
        dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype={asked!r} is invalid: must be None, 'auto', or a floating "
                         "torch.dtype such as torch.float32, torch.bfloat16 or 'float16'")
    return dtype


# ----------------------------------------------------------------------------- the mixin
class HubMixin:
    """from_pretrained / save_pretrained, for the encoder and every model with a head."""

    hf_architecture: str  # the transformers class name written into config.json
    encoder_prefix: str  # "" for the bare encoder, "model." inside a model with a head
    tied_weights: dict[str, str] = {}  # parameter name -> the name it shares storage with
    tokenizer = None  # the checkpoint's tokenizer (from_pretrained), saved with the model

    def init_package_weights(self) -> None:
        """Initialise the model as the package does (model.py); loading calls it for the tensors a
        checkpoint lacks, with everything else still on the meta device."""
        raise NotImplementedError(f"{type(self).__name__} must say how it is initialised")

    @classmethod
    def init_kwargs_from_hf(cls, hf: dict) -> dict:
        """Constructor arguments besides the config, read from config.json (e.g. num_labels)."""
        return {}

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, *, dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None, strict: bool = False,
                        revision: str | None = None, attn_implementation: str | None = None,
                        **overrides) -> nn.Module:
        """Load a checkpoint in the Hugging Face layout: a local directory, or a hub id.

        dtype: None (float32, PyTorch's default), "auto" (as config.json says the weights were
        saved) or a floating torch.dtype; device: where the weights go ("cpu" by default), read
        there straight from the file. strict=True: a head the checkpoint lacks, or weights it has
        that the model does not use, are an error rather than a warning. attn_implementation:
        transformers' name ("eager", "sdpa", "flash_attention_2") for an attention_backend.
        overrides: ModernBertConfig fields (e.g. attention_backend="eager", id2label={...}) and
        constructor arguments (num_labels=3). The folder's tokenizer.json, if it has one, becomes
        `model.tokenizer`. Returns the model in eval mode, like transformers.
        """
        overrides = resolve_attention(attn_implementation, overrides)
        device = resolve_device(device)
        directory = resolve_checkpoint(path_or_id, revision)
        with naming(directory / CONFIG_NAME):
            hf = read_hf_config(directory)
        dtype = resolve_dtype(dtype, hf)
        config_fields = {f.name for f in fields(ModernBertConfig)}
        config = ModernBertConfig.from_hf_dict(
            hf, **{k: v for k, v in overrides.items() if k in config_fields})
        # num_labels from the label names: the checkpoint's, or those passed as id2label=
        init_kwargs = {**cls.init_kwargs_from_hf({**hf, **config.to_hf_dict()}),
                       **{k: v for k, v in overrides.items() if k not in config_fields}}
        with torch.device("meta"), init_skips_meta():  # shapes only: no memory, no random init
            model = cls(config, **init_kwargs)
        state_dict = {key: tensor.to(dtype) if tensor.is_floating_point() else tensor
                      for key, tensor in read_state_dict(directory, device).items()}
        load_hf_state_dict(model, state_dict, strict=strict, assign=True)
        model.to(device=device, dtype=dtype)  # a new head's modules; the loaded tensors are there
        left = meta_tensors(model)
        if left:
            raise RuntimeError(f"{cls.__name__}.from_pretrained left {left} without values: "
                               "neither the checkpoint nor initialise_missing gave them any")
        if (directory / TOKENIZER_FILE).is_file():
            model.tokenizer = load_tokenizer(directory)
        return model.eval()

    def save_pretrained(self, directory: str | Path, tokenizer=None) -> Path:
        """Write config.json and model.safetensors, as transformers' save_pretrained does, and
        the tokenizer (`tokenizer`, else the model's own `self.tokenizer`; none if neither), so
        that transformers' AutoTokenizer, AutoModel* and pipeline load the folder.

        A model with tensors still on the meta device is a ValueError before anything is
        written; the files are written to a temporary folder and renamed into place, and the
        shards of a sharded checkpoint saved there before are removed (as transformers does).
        """
        left = meta_tensors(self)
        if left:
            raise ValueError(f"{type(self).__name__} cannot be saved: {len(left)} tensors are on the "
                             f"meta device, without values ({', '.join(left[:3])}, ...): load or "
                             "initialise them first, e.g. with from_pretrained or model.to_empty()"
                             " and an init")
        tokenizer = self.tokenizer if tokenizer is None else tokenizer
        with staged(Path(directory)) as stage:
            dtype = str(next(self.parameters()).dtype).removeprefix("torch.")
            hf = {**self.config.to_hf_dict(self.hf_architecture),  # a classifier's labels included
                  "dtype": dtype, "torch_dtype": dtype}  # transformers 5 reads dtype, 4.x torch_dtype
            (stage / CONFIG_NAME).write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
            tensors = {key: tensor.detach().cpu().contiguous()
                       for key, tensor in self.state_dict().items() if key not in self.tied_weights}
            save_file(tensors, stage / WEIGHTS_NAME, metadata={"format": "pt"})
            if tokenizer is not None:
                save_tokenizer(tokenizer, stage)
        return Path(directory)


# ----------------------------------------------------------------------------- writing files
@contextmanager
def staged(directory: Path) -> Iterator[Path]:
    """A temporary folder inside `directory` to write files into. When the block ends without an
    error, each file is renamed into `directory` (os.replace: a reader sees the old file or the
    new one, never half of one), and the shards of an earlier sharded checkpoint that the new
    files replace are removed; after an error `directory` holds what it held before."""
    directory.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".saving-", dir=directory))
    try:
        yield stage
        written = sorted(path.relative_to(stage) for path in stage.rglob("*") if path.is_file())
        for name in written:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, directory / name)
        if Path(WEIGHTS_NAME) in written:  # transformers' rule: its shards go, and their index
            for path in directory.iterdir():
                if SHARD.fullmatch(path.name) or path.name == WEIGHTS_INDEX_NAME:
                    path.unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def save_sentence_transformers(model: nn.Module, directory: str | Path, tokenizer=None, *,
                               pooling: str = "mean", normalize: bool = False,
                               max_seq_length: int | None = None) -> Path:
    """Save a model's encoder as a folder that sentence-transformers loads,
    `SentenceTransformer(directory)`, and that embeds as `embed(model, tokenizer, texts,
    pooling=pooling, normalize=normalize)` does.

    The folder is the encoder's transformers checkpoint with its tokenizer (`save_pretrained`),
    plus the modules sentence-transformers runs after it, in the layout it has read since v2:
    modules.json (Transformer -> Pooling [-> Normalize]), sentence_bert_config.json (texts are
    cut at max_seq_length tokens, the model's max_position_embeddings by default) and
    1_Pooling/config.json ("mean" over the real tokens or the "cls" token's state).
    `model`: a ModernBertModel, or a model with one as `.model` (its head is not saved).
    """
    encoder = getattr(model, "model", model)
    for owner in (model, encoder):  # the tokenizer the model (or its encoder) came with
        tokenizer = owner.tokenizer if tokenizer is None else tokenizer
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is invalid: choose one of {POOLINGS}")
    if tokenizer is None:
        raise ValueError("sentence-transformers reads the tokenizer from the folder: pass "
                         "tokenizer= (the model has none of its own)")
    as_tokenizer(tokenizer)  # a ValueError, before anything is written, if it is no tokenizer
    hidden = encoder.config.hidden_size
    modules = [("Transformer", ""), ("Pooling", "1_Pooling")]
    modules += [("Normalize", "2_Normalize")] if normalize else []
    with staged(Path(directory)) as stage:
        encoder.save_pretrained(stage, tokenizer)
        (stage / "modules.json").write_text(json.dumps(
            [{"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
             for i, (kind, path) in enumerate(modules)], indent=2) + "\n")
        (stage / "sentence_bert_config.json").write_text(json.dumps(
            {"max_seq_length": max_seq_length or encoder.config.max_position_embeddings,
             "do_lower_case": False}, indent=2) + "\n")
        (stage / "1_Pooling").mkdir()
        (stage / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": hidden, "pooling_mode_cls_token": pooling == "cls",
             "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
             "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
             "pooling_mode_lasttoken": False, "include_prompt": True}, indent=2) + "\n")
        (stage / "config_sentence_transformers.json").write_text(json.dumps(
            {"similarity_fn_name": "cosine", "prompts": {}, "default_prompt_name": None},
            indent=2) + "\n")
    return Path(directory)

"""How attention scores are computed: every backend, and the choice between them. Chapters 4-7.

Every backend computes the same thing, softmax(q k^T / sqrt(d)) v over the keys a query may see:
keys of its own sequence (never padding, never another packed document) and, in a local layer,
only keys at distance <= window // 2. They differ in how much work and memory that takes:

| name       | layout   | how                                                        | chapter |
|------------|----------|------------------------------------------------------------|---------|
| eager      | padded   | the formula written out, with a dense (S, S) mask           | 4       |
| sdpa       | padded   | PyTorch's fused kernel, the same dense mask                 | 4       |
| local      | any      | blocks of queries against their neighbouring keys: O(T x w) | 4       |
| varlen     | unpadded | one sequence at a time, through sdpa                        | 6       |
| tiled      | unpadded | online-softmax FlashAttention in plain PyTorch              | 7       |
| triton     | unpadded | a Triton FlashAttention kernel, forward and backward        | 7       |
| flash_attn | unpadded | the flash-attn package (CUDA, capability >= 8.0)            | 7       |

Each backend declares what it supports (layouts, devices, dtypes, global/local layers, dropout,
and on CUDA the compute capability). `attend` picks one at forward time for the device, dtype,
GPU and input ("auto"), or runs the one named; a backend handed the other layout gets the batch
converted (unpadded <-> padded), so any backend runs on any input ("local" takes both as they
are: it works on the stream of tokens). Dense masks are built only by the backends that need
them, once per forward and window (cached on the Batch).

q, k, v arrive as (B, S, nh, hd) for a padded batch and (T, nh, hd) for an unpadded one, already
rotated by RoPE; the output has the same shape.

On a GPU the capability decides (runtime.py holds the thresholds):

| capability              | "auto" picks                    | forcing triton / flash_attn            |
|-------------------------|---------------------------------|----------------------------------------|
| >= 8.0 (A100, L4, H100) | flash_attn (fp16/bf16, where    | both run, bf16 included                |
|                         | installed), else sdpa           |                                        |
| 7.x (V100, T4)          | sdpa                            | triton in fp32/fp16, no tensor cores;  |
|                         |                                 | its bf16, and flash_attn: ValueError   |
| < 7.0 (P100)            | sdpa                            | ValueError: Triton does not run there  |

The rule on a GPU is "never slower than PyTorch until a GPU says otherwise": flash-attn is
FlashAttention-2 itself, and PyTorch's SDPA runs its own flash or memory-efficient kernels. The
Triton kernel of chapter 7 runs only by name (`attention_backend="triton"`): no GPU has yet
measured it against SDPA (its launch options per capability, `flash.LAUNCH`, are a first guess). What
would change the rule: `tools/gpu_check.sh` times every backend against SDPA at the bench's shapes
on a real GPU; where the Triton kernel wins there, it earns a place in `AUTO`. On the CPU, "auto"
runs local layers blocked from 256 tokens (`BLOCKED_FROM`), `varlen` or SDPA otherwise.

bf16 counts only where the GPU has bf16 units (>= 8.0): a T4 emulates it, so a model moved to
bf16 there runs PyTorch's kernels (slowly) rather than a compiled kernel that would refuse it.

While torch.compile traces, "auto" keeps a padded batch padded (unpadding it would have shapes
that depend on the data), and the hardware is read once, as constants (runtime.py).

`attention_backend="local"` names the blocked kernel for the sliding-window layers; it has no
global form, so global layers run what "auto" picks for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import runtime
from .config import ATTENTION_BACKENDS
from .padding import Batch, pad, unpad


# ----------------------------------------------------------------------------- masks
def sliding_window_mask(seq_len: int, window: int, device=None) -> torch.Tensor:
    """Which keys each query may see in a local layer: |query - key| <= window // 2.

    window is the total width (ModernBERT: 128, so 64 tokens each side, and the token itself).
    Returns a boolean (S, S) tensor, True where attention is allowed.
    """
    positions = torch.arange(seq_len, device=device)
    distance = (positions[:, None] - positions[None, :]).abs()  # (S, S)
    return distance <= window // 2


def make_attention_mask(padding_mask: torch.Tensor | None, seq_len: int, window: int | None,
                        device=None) -> torch.Tensor | None:
    """The boolean mask one layer attends with: True where a query may look at a key.

    padding_mask: (B, S) bool, True at real tokens, or None when nothing is padded.
    window: the local window (total tokens), or None for a global layer.
    Returns (B or 1, 1, S, S) bool, broadcast over heads, or None if everything is allowed.
    """
    allowed = None
    if window is not None:
        allowed = sliding_window_mask(seq_len, window, device)[None, None]  # (1, 1, S, S)
    if padding_mask is not None:
        keys = padding_mask[:, None, None, :]  # (B, 1, 1, S): pad tokens are never keys
        allowed = keys if allowed is None else allowed & keys  # (B, 1, S, S)
    return allowed


# ----------------------------------------------------------------------------- the formula
def eager_attention(q, k, v, mask=None, dropout_p=0.0):
    """softmax(Q K^T / sqrt(d) + mask) V, step by step.

    q, k, v: (B, nh, S, hd); mask: bool, broadcastable to (B, nh, S, S), or None.
    The softmax runs in float32 (float64 for float64 inputs). A query that may see no key at
    all (a pad token far from any real one) gets an average of the values, never a NaN.
    """
    softmax_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    scores = (q @ k.transpose(-2, -1)).to(softmax_dtype) * q.shape[-1] ** -0.5  # (B, nh, S, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(softmax_dtype).min)
    weights = F.softmax(scores, dim=-1).to(q.dtype)  # rows sum to 1
    weights = F.dropout(weights, p=dropout_p)
    return weights @ v  # (B, nh, S, hd)


def sdpa_attention(q, k, v, mask=None, dropout_p=0.0):
    """The same as eager_attention, in PyTorch's fused kernel (no S x S matrix on flash paths)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                          scale=q.shape[-1] ** -0.5)


def blocked_local_attention(q, k, v, window: int, key_mask: torch.Tensor | None = None,
                            dropout_p: float = 0.0) -> torch.Tensor:
    """Sliding-window attention that costs O(T x window), not O(T^2).

    q, k, v: (T, nh, hd), a stream of tokens: one sequence, or several back to back (the rows of
    a padded batch, or the documents of an unpadded one); key_mask says which keys each query
    may see (`local_key_mask`; None: one sequence, no padding).

    Cut the stream into blocks of b = window // 4 queries. The keys a query in a block may see
    lie within h = window // 2 positions of the block: one span of b + 2h (160) keys, the same
    for all b queries. The spans overlap, so `unfold` takes them as views of the keys, not
    copies, and one call to PyTorch's fused SDPA scores every block against its span, masked:
    about window + b keys per query instead of T.
    """
    T, nh, hd = q.shape
    b, h = local_blocks(window)
    n = math.ceil(T / b)
    if key_mask is None:
        key_mask = local_key_mask(torch.zeros(T, dtype=torch.long, device=q.device), window)
    if n * b != T:  # a last, partial block of queries
        q = F.pad(q, (0, 0, 0, 0, 0, n * b - T))
    q = q.view(n, b, nh, hd).transpose(1, 2)  # (n, nh, b, hd), a view
    k, v = (_spans(x, b, h, n).transpose(-1, -2) for x in (k, v))  # (n, nh, b + 2h, hd), views
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p,
                                         scale=hd ** -0.5)  # (n, nh, b, hd)
    return out.transpose(1, 2).reshape(n * b, nh, hd)[:T]  # (T, nh, hd)


def local_blocks(window: int) -> tuple[int, int]:
    """(b, h): queries per block, and how far its keys reach beyond the block on each side."""
    b = max(window // 4, 1)
    return b, math.ceil((window // 2) / b) * b


def _spans(x: torch.Tensor, b: int, h: int, n: int, fill: float = 0.0) -> torch.Tensor:
    """(T, ...) -> (n, ..., b + 2h): for block i, positions i * b - h to i * b + b + h - 1."""
    x = F.pad(x, (0,) * (2 * x.dim() - 2) + (h, n * b - x.shape[0] + h), value=fill)
    return x.unfold(0, b + 2 * h, b)  # overlapping windows of the padded x, a view


def local_key_mask(document: torch.Tensor, window: int,
                   real: torch.Tensor | None = None) -> torch.Tensor:
    """Which of its block's b + 2h keys each query of `blocked_local_attention` may see.

    document: (T,) which sequence each token of the stream belongs to (its row, or its
    document); real: (T,) bool, False at pad tokens, or None. A key is seen when it is in the
    query's sequence, within window // 2 and not padding; a query always sees itself, so no row
    is empty. Returns (n, 1, b, b + 2h) bool, broadcast over heads.
    """
    T = document.shape[0]
    b, h = local_blocks(window)
    n = math.ceil(T / b)
    position = torch.arange(T, device=document.device)
    query = F.pad(position, (0, n * b - T), value=-1).view(n, b, 1)  # (n, b, 1); -1: past the end
    query_doc = F.pad(document, (0, n * b - T), value=-1).view(n, b, 1)
    key = _spans(position, b, h, n, fill=-1)[:, None, :]  # (n, 1, b + 2h); -1: outside
    key_doc = _spans(document, b, h, n, fill=-2)[:, None, :]
    allowed = (key_doc == query_doc) & ((query - key).abs() <= window // 2)  # (n, b, b + 2h)
    if real is not None:  # pad tokens are never keys
        allowed = allowed & _spans(real, b, h, n, fill=False)[:, None, :]
    allowed[:, :, h:h + b] |= torch.eye(b, dtype=torch.bool, device=document.device)  # itself
    return allowed[:, None]


# ----------------------------------------------------------------------------- the backends
def _heads_first(x):  # (B, S, nh, hd) -> (B, nh, S, hd), a view
    return x.transpose(1, 2)


def _dense_mask(batch: Batch, window: int | None, device) -> torch.Tensor | None:
    """The dense mask of this batch and window, built once per forward."""
    def build():
        mask = make_attention_mask(batch.padding_mask, batch.seq_len, window, device)
        if mask is not None and window is not None:  # every query sees itself: no empty row
            mask = mask | torch.eye(batch.seq_len, dtype=torch.bool, device=device)
        return mask
    return batch.cached(("dense_mask", window, batch.seq_len), build)


def _eager(q, k, v, batch, window, dropout_p):
    mask = _dense_mask(batch, window, q.device)
    return eager_attention(*map(_heads_first, (q, k, v)), mask, dropout_p).transpose(1, 2)


def _sdpa(q, k, v, batch, window, dropout_p):
    mask = _dense_mask(batch, window, q.device)
    return sdpa_attention(*map(_heads_first, (q, k, v)), mask, dropout_p).transpose(1, 2)


def _local(q, k, v, batch, window, dropout_p):
    """Blocked over the batch's token stream: the rows of a padded batch, or its documents."""
    if batch.is_unpadded:  # (T, nh, hd): the documents of cu_seqlens, back to back
        stream = (q, k, v)
        key_mask = batch.cached(("local_mask", window), lambda: local_key_mask(
            batch.document_ids(), window))
    else:  # (B, S, nh, hd) -> (B * S, nh, hd): the rows back to back
        stream = [x.flatten(0, 1) for x in (q, k, v)]
        real = None if batch.padding_mask is None else batch.padding_mask.flatten()
        key_mask = batch.cached(("local_mask", window, q.shape[0]), lambda: local_key_mask(
            torch.arange(q.shape[0] * q.shape[1], device=q.device) // q.shape[1], window, real))
    return blocked_local_attention(*stream, window, key_mask, dropout_p).view(q.shape)


def _varlen(q, k, v, batch, window, dropout_p):
    """One sequence at a time: no work on padding, and no sequence sees another."""
    outputs = []
    # split, not a slice per sequence: split's backward is one cat, where every slice's would fill a
    # (T, nh, hd) tensor of zeros (make bench's train case, 64 short documents, 2 CPU cores: 1.42x
    # the reference's tokens/s with slices, 1.55-1.63x with split and unpad's own gradient)
    for length, *one in zip(batch.seqlens, *(x.split(batch.seqlens) for x in (q, k, v))):
        one = [x[None] for x in one]  # (1, L, nh, hd)
        sequence = Batch.padded(length, device=q.device)
        sequence.cache = batch.cache  # masks are shared between sequences of one length
        if window is not None and length - 1 <= window // 2:
            window_here = None  # the window covers the whole sequence
        else:
            window_here = window
        outputs.append(_sdpa(*one, sequence, window_here, dropout_p)[0])
    return torch.cat(outputs)  # (T, nh, hd)


# Blocked local attention costs about the same per token at any length; dense + mask grows with
# the length. Measured on 2 CPU cores (fp32, 12 heads of 64, window 128, 6,144 tokens per call):
# one layer alone, blocked took 1.4x the time of dense + mask at 128 tokens a sequence and 0.5-0.8x
# from 256 to 512 (noisy); in a 6-layer base model, the forward ties from 192 to 320 tokens and
# is 0.96x at 384, 0.94x at 512.
BLOCKED_FROM = 2  # windows: "auto" runs local layers blocked from 2 x 128 = 256 tokens on


def blocked_pays(seq_len: float, window: int | None) -> bool:
    """seq_len: the batch's sequence length, or for an unpadded batch `typical_length`."""
    return window is not None and seq_len >= BLOCKED_FROM * window


def typical_length(batch: Batch) -> float:
    """The length of the sequence an average token sits in: what a dense layer's work per token
    grows with (sum of L^2 over sum of L; S for a padded batch)."""
    if not batch.is_unpadded:
        return batch.seq_len
    return sum(n * n for n in batch.seqlens) / sum(batch.seqlens)


def _tiled(q, k, v, batch, window, dropout_p):
    from .flash import tiled_attention
    return tiled_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen, window,
                           seqlens=batch.seqlens)  # the host lengths: no sync per layer


def _triton(q, k, v, batch, window, dropout_p):
    from .flash import triton_attention
    return triton_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen, window,
                            seqlens=batch.seqlens)  # the host lengths: no sync per layer


def _flash_attn(q, k, v, batch, window, dropout_p):
    from flash_attn import flash_attn_varlen_func
    half = (-1, -1) if window is None else (window // 2, window // 2)
    cu, longest = batch.cu_seqlens, batch.max_seqlen
    return flash_attn_varlen_func(q, k, v, cu, cu, longest, longest, dropout_p=dropout_p,
                                  softmax_scale=q.shape[-1] ** -0.5, causal=False, window_size=half)


def _triton_here(device: str) -> bool:
    from .flash import triton_supported
    return triton_supported(torch.device(device))


def _version(capability: tuple[int, int]) -> str:
    return "{}.{}".format(*capability)


FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
HALVES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Backend:
    """One way to attend, and what it supports."""

    name: str
    run: Callable  # (q, k, v, batch, window, dropout_p) -> output, in `layout`
    layout: str  # "padded", "unpadded", or "any" (it runs on both as they are)
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...] = FLOATS
    layers: tuple[str, ...] = ("global", "local")
    dropout: bool = False
    usable: Callable[[str], bool] = lambda device: True  # installed and runnable on this device
    min_capability: tuple[int, int] | None = None  # CUDA: the oldest GPU it runs on (None: any)
    auto_capability: tuple[int, int] | None = None  # CUDA: the oldest GPU "auto" picks it on
    native_bf16: bool = False  # bf16 only on GPUs with bf16 units, never emulated

    def supports(self, device: str, dtype: torch.dtype, window: int | None, dropout_p: float,
                 installed: bool | None = None,
                 capability: tuple[int, int] | None = None) -> str | None:
        """None if this backend can run the call, else the reason it cannot.

        installed: say whether it is installed and runnable instead of asking `usable`;
        capability: the CUDA GPU's (major, minor), None where unknown or not CUDA.
        """
        layer = "global" if window is None else "local"
        if device not in self.devices:
            return f"it does not run on {device}"
        if dtype not in self.dtypes:
            return f"it does not take {dtype}"
        if not (self.usable(device) if installed is None else installed):  # last: it may import
            return f"it does not run on {device} here"
        if device == "cuda" and capability is not None:
            if self.min_capability is not None and tuple(capability) < self.min_capability:
                return (f"it needs a GPU of compute capability >= {_version(self.min_capability)}, "
                        f"this one has {_version(capability)}")
            if dtype == torch.bfloat16 and self.native_bf16 and not runtime.native_bf16(capability):
                return (f"bfloat16 needs compute capability >= {_version(runtime.MIN_CAPABILITY_BF16)} "
                        f"(bf16 units), this GPU has {_version(capability)} and only emulates "
                        f"it: use float16 or float32")
        if layer not in self.layers:
            return f"it has no {layer} layers"
        if dropout_p > 0 and not self.dropout:
            return "it has no attention dropout"
        return None


BACKENDS = {b.name: b for b in (
    Backend("eager", _eager, "padded", ("cpu", "cuda", "mps"), dropout=True),
    Backend("sdpa", _sdpa, "padded", ("cpu", "cuda", "mps"), dropout=True),
    Backend("local", _local, "any", ("cpu", "cuda", "mps"), layers=("local",), dropout=True),
    Backend("varlen", _varlen, "unpadded", ("cpu", "cuda", "mps"), dropout=True),
    Backend("tiled", _tiled, "unpadded", ("cpu", "cuda", "mps")),
    Backend("triton", _triton, "unpadded", ("cpu", "cuda"), dtypes=(torch.float32, *HALVES),
            usable=_triton_here, min_capability=runtime.MIN_CAPABILITY_TRITON,
            auto_capability=runtime.MIN_CAPABILITY_TRITON_DOT, native_bf16=True),
    Backend("flash_attn", _flash_attn, "unpadded", ("cuda",), dtypes=HALVES, dropout=True,
            usable=lambda device: runtime.flash_attn_importable(),
            min_capability=runtime.MIN_CAPABILITY_FLASH_ATTN, native_bf16=True),
)}
assert ("auto", *BACKENDS) == ATTENTION_BACKENDS, "config.ATTENTION_BACKENDS lists these names"

# What "auto" tries, fastest first, per device and layout: the first that supports the call wins
# (on a GPU below a backend's auto_capability, it is passed over). On a GPU: flash-attn, else
# PyTorch's SDPA, until a GPU measurement says otherwise (the module's docstring).
AUTO = {
    ("cuda", "unpadded"): ("flash_attn", "sdpa"),
    ("cuda", "padded"): ("flash_attn", "sdpa"),
}
AUTO_DEFAULT = {"unpadded": ("local", "varlen"), "padded": ("local", "sdpa")}


def check_backend_name(name: str) -> str:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend {name!r} is unknown: use one of {list(ATTENTION_BACKENDS)}")
    return name


def choose(name: str, batch: Batch, q: torch.Tensor, window: int | None,
           dropout_p: float = 0.0, *, device: str | None = None,
           installed: dict[str, bool] | None = None,
           capability: tuple[int, int] | None = None) -> Backend:
    """The backend that runs this call: the one named, or for "auto" the fastest that can.

    device, installed ({"flash_attn": True, ...}) and capability ((7, 5) for a T4) ask what would
    run elsewhere: on another device than q's, with other packages than this machine has, on
    another GPU. capability=None reads q's GPU (or this machine's, asked about "cuda"); where
    there is none to read, no capability rule applies.
    """
    device = q.device.type if device is None else device
    installed = installed or {}
    if capability is None and device == "cuda":
        capability = runtime.cuda_capability(q.device if q.is_cuda else None)
    if name == "local" and window is None:
        name = "auto"  # "local" has no global form: global layers run what "auto" picks
    if name != "auto":
        backend = BACKENDS[check_backend_name(name)]
        why_not = backend.supports(device, q.dtype, window, dropout_p, installed.get(name),
                                   capability)
        if why_not:
            raise ValueError(f"attention backend {name!r} cannot run this layer: {why_not}")
        return backend
    layout = "unpadded" if batch.is_unpadded else "padded"
    tracing = torch.compiler.is_compiling()
    for candidate in AUTO.get((device, layout), AUTO_DEFAULT[layout]):
        backend = BACKENDS[candidate]
        if tracing and layout == "padded" and backend.layout == "unpadded" and batch.padding_mask is not None:
            continue  # unpadding has shapes that depend on the data: torch.compile keeps it padded
        if candidate == "local" and not blocked_pays(typical_length(batch), window):
            continue  # short inputs: the dense mask is cheaper (see BLOCKED_FROM)
        if (backend.auto_capability is not None and capability is not None
                and tuple(capability) < backend.auto_capability):
            continue  # it would run, slower than PyTorch's kernels (Triton below 8.0: no tensor cores)
        if backend.supports(device, q.dtype, window, dropout_p, installed.get(candidate),
                            capability) is None:
            return backend
    return BACKENDS["eager"]  # runs everywhere


def available(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
              installed: dict[str, bool] | None = None,
              capability: tuple[int, int] | None = None) -> tuple[str, ...]:
    """The backends that can run a global or a local layer on this device and dtype, most
    readable first. installed and capability as in `choose` (None: this machine's)."""
    device = torch.device(device)
    installed = installed or {}
    if capability is None and device.type == "cuda":
        capability = runtime.cuda_capability(device)
    return tuple(name for name, b in BACKENDS.items()
                 if any(b.supports(device.type, dtype, window, 0.0, installed.get(name),
                                   capability) is None for window in (128, None)))


def runnable(rt: runtime.Runtime) -> tuple[str, ...]:
    """Names of the backends that run on the machine `rt` describes, in its dtype, most readable
    first (what chapter 0 prints: `backends.runnable(runtime.detect())`)."""
    installed = {"flash_attn": rt.flash_attn, "triton": rt.triton}  # rt's facts, not this machine's
    return available(rt.device, rt.dtype, installed=installed, capability=rt.capability)



def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: Batch,
           window: int | None = None, dropout_p: float = 0.0, backend: str = "auto") -> torch.Tensor:
    """Attention of rotated q, k, v: (B, S, nh, hd) padded or (T, nh, hd) unpadded, same out."""
    chosen = choose(backend, batch, q, window, dropout_p)
    if chosen.layout == "any" or (chosen.layout == "unpadded") == batch.is_unpadded:
        return chosen.run(q, k, v, batch, window, dropout_p)
    if batch.is_unpadded:  # a padded-only backend: into the padded grid and back
        grid = batch.as_padded()
        out = chosen.run(*(pad(x, batch) for x in (q, k, v)), grid, window, dropout_p)
        return unpad(out, batch)
    flat = batch.as_unpadded(q.shape[0])  # an unpadded-only backend
    out = chosen.run(*(unpad(x, flat) for x in (q, k, v)), flat, window, dropout_p)
    return pad(out, flat)

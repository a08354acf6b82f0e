"""FlashAttention: exact attention, one tile at a time, never the whole S x S matrix. Chapter 7.

This is the kernel behind ModernBERT's attention once a batch is unpadded (chapter 6): N
sequences packed back to back into T tokens, `cu_seqlens` = (0, len0, len0 + len1, ..., T) their
offsets. A query sees only keys of its own sequence, and in a local layer only those within
window // 2 tokens of it (ModernBERT: window 128, so 64 on each side).

Online softmax. For one query with scores s_j over keys j and any constant m,

    out = sum_j exp(s_j - m) v_j / sum_j exp(s_j - m).

So the keys can come in tiles. Keep, per query, the running max m, the running sum
l = sum exp(s_j - m) and the accumulator acc = sum exp(s_j - m) v_j. When a tile arrives whose
max lifts m to m', rescale what we have by exp(m - m'), add the tile's terms, and move on; after
the last tile out = acc / l. This is exact, not an approximation, and m keeps every exp <= 1.

Tiling. Queries go in tiles of `block_size` rows; for each query tile the key tiles stream past
one by one, so at most (block, block) scores exist at once: memory O(T), not O(S^2). With a
sliding window, a query tile can reach only the key tiles within window // 2 of it; the loop
visits those and skips every other tile, so a local layer costs O(S * window), not O(S^2).
Tiles partly inside the window are masked element by element.

Backward (FlashAttention-2, Dao 2023). The forward keeps one number per query, the logsumexp
L = m + log l. The backward recomputes the probabilities P = exp(Q K^T * scale - L) tile by tile
and gets, with delta = rowsum(dO * O):

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - delta),   dQ = dS K * scale,   dK = dS^T Q * scale.

Two implementations, one contract:
- `tiled_attention`: the algorithm in plain PyTorch, to be read; autograd differentiates it.
- `triton_attention`: the same algorithm as Triton kernels, forward and backward, one program
  per (sequence, tile, head). It is written for CUDA GPUs of capability >= 8.0, where tl.dot
  runs on tensor cores; it still runs on a T4 (7.5: fp16 or fp32, no tensor cores since Triton
  3.2, tiles sized for its 64 KiB of shared memory) when named, but "auto" prefers PyTorch's
  kernels there (backends.py). tests/test_flash_compile.py compiles the three kernels for sm_75,
  sm_80, sm_89 and sm_90 on the CPU and checks their shared memory. It runs on the CPU in
  Triton's interpreter with the environment variable TRITON_INTERPRET=1 set before triton is
  imported (slow, but the same kernels: that is how the tests check them without a GPU).
  A model's layers pass the host lengths of their `Batch` (seqlens=), so a call never waits
  for the GPU.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Optional

import torch

from .runtime import _triton_usable, cuda_capability, native_bf16

try:  # Triton is optional: the `triton` extra, or the one that comes with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the machine
    triton = tl = None


# ----------------------------------------------------------------------------- input checks
def _check_inputs(q, k, v, cu_seqlens, max_seqlen, window, scale,
                  seqlens=None) -> tuple[list[int], float]:
    """Validate the shared contract; return the sequence offsets (host ints) and the scale.

    seqlens: the N lengths on the host, as a `Batch` holds them; without them the offsets are
    copied from cu_seqlens (a device-to-host sync, which a model's 22-28 layers should not pay).
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a (T, nh, hd) tensor of unpadded tokens, got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k and v must have the same (T, nh, hd) shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k and v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1 or len(cu_seqlens) < 1:
        raise ValueError("cu_seqlens must be a 1-D tensor of N + 1 offsets (0, len0, len0 + len1, "
                         f"..., T), got {cu_seqlens!r}")
    if cu_seqlens.dtype != torch.int32:
        raise ValueError(f"cu_seqlens must be int32, got {cu_seqlens.dtype}")
    if len({q.device, k.device, v.device, cu_seqlens.device}) != 1:
        raise ValueError(f"q, k, v and cu_seqlens must be on one device, got {q.device}, "
                         f"{k.device}, {v.device} and {cu_seqlens.device}")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int) or max_seqlen < 0:
        raise ValueError(f"max_seqlen must be a Python int >= 0 (the longest sequence), "
                         f"got {max_seqlen!r}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window <= 0 or window % 2):
        raise ValueError("window must be None (global attention) or a positive even number of "
                         f"tokens, the total width of the sliding window (ModernBERT: 128), "
                         f"got {window!r}")
    if scale is None:
        scale = q.shape[-1] ** -0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be None (meaning hd ** -0.5) or a positive number, "
                         f"got {scale!r}")
    if seqlens is None:
        offsets = cu_seqlens.tolist()  # N + 1 ints: one small copy to the host
    else:
        if len(seqlens) != len(cu_seqlens) - 1:
            raise ValueError(f"seqlens has {len(seqlens)} lengths but cu_seqlens has "
                             f"{len(cu_seqlens)} offsets: it needs one length per sequence")
        offsets = [0, *itertools.accumulate(seqlens)]  # on the host, no copy from the device
    lengths = [end - start for start, end in zip(offsets[:-1], offsets[1:])]
    if offsets[0] != 0 or offsets[-1] != q.shape[0] or min(lengths, default=0) < 0:
        given = "cu_seqlens" if seqlens is None else "the offsets of seqlens"
        raise ValueError(f"{given} must rise from 0 to T = {q.shape[0]} (the number of "
                         f"tokens), got {offsets[:4]}{' ...' if len(offsets) > 4 else ''} "
                         f"ending at {offsets[-1]}")
    if max(lengths, default=0) > max_seqlen:
        raise ValueError(f"max_seqlen = {max_seqlen} is shorter than the longest sequence "
                         f"({max(lengths)} tokens)")
    return offsets, float(scale)


# ----------------------------------------------------------------------------- in PyTorch
def tiled_attention(q, k, v, cu_seqlens, max_seqlen, window=None, scale=None, block_size=64, *,
                    seqlens=None):
    """Exact attention over packed sequences, tile by tile with online softmax, in PyTorch.

    q, k, v: (T, nh, hd) unpadded tokens; cu_seqlens: (N + 1,) int32 offsets; max_seqlen: the
    longest sequence; window: None (global) or the total sliding window, even; scale: default
    hd ** -0.5; seqlens: the N lengths on the host, as `triton_attention` takes them (None: read
    from cu_seqlens, one sync). Returns (T, nh, hd) in q's dtype. Softmax statistics are float32
    (float64 for float64 inputs). Differentiable: autograd goes through the plain operations.
    """
    offsets, scale = _check_inputs(q, k, v, cu_seqlens, max_seqlen, window, scale, seqlens)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    half = None if window is None else window // 2
    tiles = []
    for start, end in zip(offsets[:-1], offsets[1:]):  # one sequence: tokens start .. end - 1
        for q0 in range(start, end, block_size):
            q1 = min(q0 + block_size, end)
            tiles.append(_query_tile(q, k, v, q0, q1, start, end, half, scale, block_size))
    if not tiles:  # no tokens at all
        return q.new_zeros(q.shape)
    return torch.cat(tiles).to(q.dtype)  # (T, nh, hd)


def _query_tile(q, k, v, q0, q1, start, end, half, scale, block_size):
    """Outputs of queries q0 .. q1 - 1 of the sequence start .. end - 1: (BM, nh, hd)."""
    acc_dtype = torch.promote_types(q.dtype, torch.float32)
    q_tile = q[q0:q1].to(acc_dtype).transpose(0, 1) * scale  # (nh, BM, hd)
    nh, BM, hd = q_tile.shape
    m = q_tile.new_full((nh, BM), float("-inf"))  # running max of each query's scores
    l = q_tile.new_zeros((nh, BM))  # running sum of exp(score - m)
    acc = q_tile.new_zeros((nh, BM, hd))  # running sum of exp(score - m) * v
    first, last = start, end  # global: every key tile of the sequence
    if half is not None:  # local: only the key tiles within `half` of some query of this tile
        first = start + (max(q0 - half, start) - start) // block_size * block_size
        last = min(q1 + half, end)
    for k0 in range(first, last, block_size):
        k1 = min(k0 + block_size, end)
        k_tile = k[k0:k1].to(acc_dtype).transpose(0, 1)  # (nh, BN, hd)
        v_tile = v[k0:k1].to(acc_dtype).transpose(0, 1)  # (nh, BN, hd)
        scores = q_tile @ k_tile.transpose(1, 2)  # (nh, BM, BN)
        if half is not None:
            queries = torch.arange(q0, q1, device=scores.device)  # (BM,)
            keys = torch.arange(k0, k1, device=scores.device)  # (BN,)
            outside = (queries[:, None] - keys[None, :]).abs() > half  # (BM, BN)
            scores = scores.masked_fill(outside, float("-inf"))
        m, l, acc = _online_softmax_step(m, l, acc, scores, v_tile)
    return (acc / l[..., None]).transpose(0, 1)  # (BM, nh, hd)


def _online_softmax_step(m, l, acc, scores, v_tile):
    """Fold one tile of scores into the running (max, sum, accumulator) of online softmax.

    m, l: (nh, BM); acc: (nh, BM, hd); scores: (nh, BM, BN), -inf where a key is not visible;
    v_tile: (nh, BN, hd). Returns the new m, l, acc.
    """
    # The max only keeps exp() in range; the result does not depend on it, so no gradient.
    m_new = torch.maximum(m, scores.amax(-1).detach())  # (nh, BM)
    shift = torch.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no key yet
    rescale = torch.exp(m - shift)  # (nh, BM): what was summed under the old max
    p = torch.exp(scores - shift[..., None])  # (nh, BM, BN), 0 where not visible
    l = rescale * l + p.sum(-1)  # (nh, BM)
    acc = rescale[..., None] * acc + p @ v_tile  # (nh, BM, hd)
    return m_new, l, acc


# ----------------------------------------------------------------------------- in Triton
def triton_supported(device: torch.device) -> bool:
    """Can triton_attention run on `device`: a CUDA GPU of capability >= 7.0 with Triton, or the
    CPU in Triton's interpreter. (It runs on a T4, 7.5, without tensor cores: `backends` picks
    PyTorch's kernels there unless it is named.)

    The interpreter needs TRITON_INTERPRET=1, set before triton is first imported: Triton
    decides then whether its own helpers (tl.max, tl.sum, ...) are compiled or interpreted.
    """
    device = torch.device(device)
    if triton is None or device.type not in ("cuda", "cpu"):
        return False
    if device.type == "cuda":
        return torch.cuda.is_available() and _triton_usable(cuda_capability(device))
    return _triton_usable(None) and _interpreted(tl.max)


def _interpreted(jitted) -> bool:
    """Was this @triton.jit function made for the interpreter?"""
    return type(jitted).__name__ == "InterpretedFunction"


def triton_attention(q, k, v, cu_seqlens, max_seqlen, window=None, scale=None, *,
                     block_size=None, seqlens=None):
    """The contract of `tiled_attention`, computed by Triton kernels (forward and backward).

    seqlens: the N sequence lengths on the host (`Batch.seqlens`), so that checking the inputs
    needs no copy from the GPU; None reads them from cu_seqlens (one sync per call).

    dtypes float32, float16, bfloat16 (bf16 on GPUs of capability >= 8.0 only, not in the
    interpreter); head dims up to 128
    (padded inside to a power of two >= 16). block_size: rows per tile, a power of two >= 16;
    by default the largest of 64, 32, 16 whose tiles fit a T4's shared memory (fp16 with
    head dim 64: 64).
    """
    _, scale = _check_inputs(q, k, v, cu_seqlens, max_seqlen, window, scale, seqlens)
    if not triton_supported(q.device):
        raise ValueError(f"triton_attention cannot run on {q.device}: it needs Triton and a CUDA "
                         "GPU, or on the CPU TRITON_INTERPRET=1 set before triton is first "
                         f"imported (Triton installed: {triton is not None})")
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"triton_attention takes float32, float16 or bfloat16, got {q.dtype}")
    if q.dtype == torch.bfloat16 and q.is_cuda and not native_bf16(cuda_capability(q.device)):
        raise ValueError(f"bfloat16 needs a GPU of compute capability >= 8.0 (bf16 units), this one "
                         f"has {cuda_capability(q.device)}: use float16 here")
    if q.dtype == torch.bfloat16 and not q.is_cuda:  # its tl.dot would multiply the bit patterns
        raise ValueError("bfloat16 does not run in Triton's CPU interpreter (it keeps bf16 as "
                         "raw 16-bit integers); use float16 or float32 on the CPU")
    head_dim = q.shape[-1]
    if head_dim > 128:
        raise ValueError(f"triton_attention supports head dims up to 128, got {head_dim}")
    if block_size is None:
        block_size = _default_block_size(q)
    if (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 16
            or block_size & (block_size - 1)):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size!r}")
    return _triton_forward(q, k, v, cu_seqlens, max_seqlen, window, scale, block_size)[0]


# The kernels reach PyTorch as two custom ops, forward and backward, each with a "fake" version
# that only says the shapes and dtypes of its outputs. That is what torch.compile traces through
# (one graph, no break at an opaque Python call) and what a rehearsal on fake CUDA tensors runs
# (tests/test_gpu_rehearsal.py); autograd joins the two (register_autograd, below).
@torch.library.custom_op("modernbert_mini::triton_attention", mutates_args=())
def _triton_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                    max_seqlen: int, window: Optional[int], scale: float,
                    block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (T, nh, hd), the logsumexp of each query's scores (nh, T) in float32)."""
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    T, nh, hd = q.shape
    out = torch.empty((T, nh, hd), dtype=q.dtype, device=q.device)  # (T, nh, hd)
    lse = torch.empty((nh, T), dtype=torch.float32, device=q.device)  # (nh, T) logsumexp
    if T > 0:
        grid = _grid(cu_seqlens, max_seqlen, block_size, nh)
        with _on_device_of(q):
            _jitted(_forward_kernel)[grid](
                q, k, v, out, lse, cu_seqlens,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                out.stride(0), out.stride(1), T, hd, scale, _half(window),
                **_constants(q, window, block_size), **launch_options(q.device)[0])
    return out, lse


@_triton_forward.register_fake
def _(q, k, v, cu_seqlens, max_seqlen, window, scale, block_size):
    T, nh, _ = q.shape
    return torch.empty_like(q), q.new_empty((nh, T), dtype=torch.float32)


@torch.library.custom_op("modernbert_mini::triton_attention_backward", mutates_args=())
def _triton_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     out: torch.Tensor, lse: torch.Tensor, cu_seqlens: torch.Tensor,
                     max_seqlen: int, window: Optional[int], scale: float,
                     block_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv: the forward's probabilities recomputed tile by tile from the logsumexp."""
    q, k, v, out, grad_out = (x if x.stride(-1) == 1 else x.contiguous()
                              for x in (q, k, v, out, grad_out))  # (T, nh, hd)
    T, nh, hd = q.shape
    # delta = rowsum(dO * O), the "preprocess" of FlashAttention-2, in plain PyTorch
    delta = (grad_out.float() * out.float()).sum(-1).transpose(0, 1).contiguous()  # (nh, T)
    dq, dk, dv = (torch.empty((T, nh, hd), dtype=q.dtype, device=q.device) for _ in range(3))
    if T > 0:
        grid = _grid(cu_seqlens, max_seqlen, block_size, nh)
        strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0),
                   v.stride(1), grad_out.stride(0), grad_out.stride(1))
        constants, launch = _constants(q, window, block_size), launch_options(q.device)[1]
        with _on_device_of(q):
            _jitted(_backward_dkdv_kernel)[grid](
                q, k, v, grad_out, lse, delta, dk, dv, cu_seqlens, *strides,
                dk.stride(0), dk.stride(1), T, hd, scale, _half(window), **constants, **launch)
            _jitted(_backward_dq_kernel)[grid](
                q, k, v, grad_out, lse, delta, dq, cu_seqlens, *strides,
                dq.stride(0), dq.stride(1), T, hd, scale, _half(window), **constants, **launch)
    return dq, dk, dv


@_triton_backward.register_fake
def _(grad_out, q, k, v, out, lse, cu_seqlens, max_seqlen, window, scale, block_size):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _save_for_backward(ctx, inputs, output):
    q, k, v, cu_seqlens, max_seqlen, window, scale, block_size = inputs
    ctx.save_for_backward(q, k, v, output[0], output[1], cu_seqlens)
    ctx.settings = (max_seqlen, window, scale, block_size)


def _gradients(ctx, grad_out, grad_lse):  # the logsumexp is a by-product: no gradient flows to it
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    dq, dk, dv = _triton_backward(grad_out, q, k, v, out, lse, cu_seqlens, *ctx.settings)
    return dq, dk, dv, None, None, None, None, None


_triton_forward.register_autograd(_gradients, setup_context=_save_for_backward)


# Launch options per GPU generation, (forward, backward): warps per program and the stages of
# software pipelining (how many tiles of K and V are in flight while one is multiplied; 8.0 brought
# asynchronous copies that make more than one pay). A first guess, not yet measured on a GPU:
# tools/gpu_check.sh times the kernel against SDPA, and a GPU's numbers should set these
# (tests/test_flash_compile.py checks that each fits its GPU's shared memory). The CPU's
# interpreter ignores them.
LAUNCH = {
    (7, 0): (dict(num_warps=4, num_stages=2), dict(num_warps=4, num_stages=1)),  # V100, T4
    (8, 0): (dict(num_warps=4, num_stages=3), dict(num_warps=4, num_stages=2)),  # A100, L4, H100
}


def launch_options(where: torch.device | tuple[int, int] | None) -> tuple[dict, dict]:
    """(forward, backward) launch options for a device or a capability: the row of the newest
    generation that is not newer than it (the CPU: the first row)."""
    capability = cuda_capability(where) if isinstance(where, torch.device) else where
    rows = [row for row in LAUNCH if capability is not None and row <= tuple(capability)]
    return LAUNCH[max(rows, default=min(LAUNCH))]


GRID_YZ_LIMIT = 65_535  # CUDA's most programs on grid axes 1 and 2 (axis 0: 2^31 - 1)


def _grid(cu_seqlens, max_seqlen, block_size, nh):
    """(sequences, tiles of the longest, heads): sequences on axis 0, the only one CUDA lets go
    past 65,535 programs (a packed batch of short documents can have more)."""
    grid = (len(cu_seqlens) - 1, triton.cdiv(max_seqlen, block_size), nh)
    for what, count in (("tiles of the longest sequence (max_seqlen / block_size)", grid[1]),
                        ("heads", grid[2])):
        if count > GRID_YZ_LIMIT:
            raise ValueError(f"triton_attention launches one program per sequence, tile and head: "
                             f"{count:,} {what} is more than CUDA's {GRID_YZ_LIMIT:,} on that "
                             f"axis (max_seqlen={max_seqlen}, block_size={block_size}, nh={nh})")
    return grid


def _on_device_of(x):
    """Triton launches on the current GPU: make it the one that holds the tensors."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _half(window):
    """The reach on each side: a query sees keys at distance <= window // 2."""
    return 0 if window is None else window // 2


def _default_block_size(q):
    """Rows per tile: 64, or fewer so that a tile of q (or k, v) rows stays within 8 KiB and a
    kernel's tiles fit the 64 KiB of shared memory of a T4 (checked by compiling for sm_75)."""
    row_bytes = q.element_size() * _head_block(q.shape[-1])
    return min(64, max(16, 8192 // row_bytes))


def _head_block(head_dim):
    """The head dim padded to a power of two >= 16 (what tl.arange and tl.dot accept)."""
    return max(16, triton.next_power_of_2(head_dim))


def _constants(q, window, block_size):
    """Compile-time parameters: one compiled kernel per combination."""
    return dict(LOCAL=window is not None, BLOCK_M=block_size, BLOCK_N=block_size,
                BLOCK_D=_head_block(q.shape[-1]),
                # float32 products exactly (a GPU would otherwise round them to TF32)
                DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32")


_JITTED = {}


def _jitted(kernel):
    """triton.jit(kernel), made on first use rather than at import.

    Triton decides when it decorates a function whether to compile it for the GPU or to run it
    in the interpreter (TRITON_INTERPRET=1); deciding at the first call follows the variable as
    it is then, not as it was when this module was imported.
    """
    key = (kernel.__name__, os.environ.get("TRITON_INTERPRET"))
    if key not in _JITTED:
        _JITTED[key] = triton.jit(kernel)
    return _JITTED[key]


# The kernels. Each program handles one tile of BLOCK_M queries (or BLOCK_N keys) of one head of
# one sequence (grid: sequence, tile, head); positions are relative to the sequence start, tokens
# are rows of (T, nh, hd). Every memory offset is int64: rows * stride_t and head * T (the
# (nh, T) logsumexp) pass 2^31 on long batches, where int32 would wrap around silently.
def _forward_kernel(Q, K, V, O, LSE, CU_SEQLENS,
                    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
                    stride_ot, stride_oh, T, head_dim, scale, half,
                    LOCAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr):
    seq, tile = tl.program_id(0), tl.program_id(1)
    head = tl.program_id(2).to(tl.int64)  # head * T passes 2^31 first: every offset in int64
    seq_start = tl.load(CU_SEQLENS + seq)
    seq_len = tl.load(CU_SEQLENS + seq + 1) - seq_start
    q_lo = tile * BLOCK_M
    if q_lo >= seq_len:  # this sequence is shorter than max_seqlen
        return
    offs_m = q_lo + tl.arange(0, BLOCK_M)  # (BM,) query positions in the sequence
    offs_d = tl.arange(0, BLOCK_D)  # (BD,) head-dim lanes, hd of them real
    row_ok = offs_m < seq_len
    d_ok = offs_d < head_dim
    rows = (seq_start + offs_m).to(tl.int64)
    q = tl.load(Q + rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, BD)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp(s - m)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # running sum of exp(s - m) * v
    k_first, k_last = 0, seq_len
    if LOCAL:  # the key tiles this query tile can reach; the others are never loaded
        k_first = tl.maximum(q_lo - half, 0) // BLOCK_N * BLOCK_N
        k_last = tl.minimum(q_lo + BLOCK_M + half, seq_len)
    for k_lo in range(k_first, k_last, BLOCK_N):
        offs_n = k_lo + tl.arange(0, BLOCK_N)  # (BN,)
        col_ok = offs_n < seq_len
        cols = (seq_start + offs_n).to(tl.int64)
        k = tl.load(K + cols[:, None] * stride_kt + head * stride_kh + offs_d[None, :],
                    mask=col_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)
        v = tl.load(V + cols[:, None] * stride_vt + head * stride_vh + offs_d[None, :],
                    mask=col_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale  # (BM, BN) float32
        visible = col_ok[None, :]
        if LOCAL:
            visible = visible & (tl.abs(offs_m[:, None] - offs_n[None, :]) <= half)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw no key yet
        rescale = tl.exp(m_i - shift)
        p = tl.exp(s - shift[:, None])  # (BM, BN), 0 where not visible
        l_i = l_i * rescale + tl.sum(p, 1)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    l_i = tl.where(row_ok, l_i, 1.0)  # rows past the sequence end are not stored
    out = acc / l_i[:, None]
    tl.store(O + rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(LSE + head * T + rows, m_i + tl.log(l_i), mask=row_ok)


def _backward_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, CU_SEQLENS,
                          stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
                          stride_dot, stride_doh, stride_dkt, stride_dkh, T, head_dim, scale, half,
                          LOCAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """dK and dV of one key tile: stream past the query tiles that can see it."""
    seq, tile = tl.program_id(0), tl.program_id(1)
    head = tl.program_id(2).to(tl.int64)  # head * T passes 2^31 first: every offset in int64
    seq_start = tl.load(CU_SEQLENS + seq)
    seq_len = tl.load(CU_SEQLENS + seq + 1) - seq_start
    k_lo = tile * BLOCK_N
    if k_lo >= seq_len:
        return
    offs_n = k_lo + tl.arange(0, BLOCK_N)  # (BN,) key positions in the sequence
    offs_d = tl.arange(0, BLOCK_D)
    col_ok = offs_n < seq_len
    d_ok = offs_d < head_dim
    cols = (seq_start + offs_n).to(tl.int64)
    k = tl.load(K + cols[:, None] * stride_kt + head * stride_kh + offs_d[None, :],
                mask=col_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)
    v = tl.load(V + cols[:, None] * stride_vt + head * stride_vh + offs_d[None, :],
                mask=col_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    q_first, q_last = 0, seq_len
    if LOCAL:  # the window is symmetric: the queries that see this tile are within `half` too
        q_first = tl.maximum(k_lo - half, 0) // BLOCK_M * BLOCK_M
        q_last = tl.minimum(k_lo + BLOCK_N + half, seq_len)
    for q_lo in range(q_first, q_last, BLOCK_M):
        offs_m = q_lo + tl.arange(0, BLOCK_M)  # (BM,)
        row_ok = offs_m < seq_len
        rows = (seq_start + offs_m).to(tl.int64)
        q = tl.load(Q + rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                    mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, BD)
        do = tl.load(DO + rows[:, None] * stride_dot + head * stride_doh + offs_d[None, :],
                     mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, BD)
        lse = tl.load(LSE + head * T + rows, mask=row_ok, other=0.0)  # (BM,)
        delta = tl.load(DELTA + head * T + rows, mask=row_ok, other=0.0)  # (BM,)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale  # (BM, BN)
        visible = row_ok[:, None] & col_ok[None, :]
        if LOCAL:
            visible = visible & (tl.abs(offs_m[:, None] - offs_n[None, :]) <= half)
        p = tl.where(visible, tl.exp(s - lse[:, None]), 0.0)  # (BM, BN) the forward's softmax
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)  # (BM, BN)
        ds = p * (dp - delta[:, None])  # (BM, BN)
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PRECISION)

    tl.store(DK + cols[:, None] * stride_dkt + head * stride_dkh + offs_d[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=col_ok[:, None] & d_ok[None, :])
    tl.store(DV + cols[:, None] * stride_dkt + head * stride_dkh + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=col_ok[:, None] & d_ok[None, :])


def _backward_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, CU_SEQLENS,
                        stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
                        stride_dot, stride_doh, stride_dqt, stride_dqh, T, head_dim, scale, half,
                        LOCAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """dQ of one query tile: stream past the key tiles it can see, as the forward does."""
    seq, tile = tl.program_id(0), tl.program_id(1)
    head = tl.program_id(2).to(tl.int64)  # head * T passes 2^31 first: every offset in int64
    seq_start = tl.load(CU_SEQLENS + seq)
    seq_len = tl.load(CU_SEQLENS + seq + 1) - seq_start
    q_lo = tile * BLOCK_M
    if q_lo >= seq_len:
        return
    offs_m = q_lo + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < seq_len
    d_ok = offs_d < head_dim
    rows = (seq_start + offs_m).to(tl.int64)
    q = tl.load(Q + rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, BD)
    do = tl.load(DO + rows[:, None] * stride_dot + head * stride_doh + offs_d[None, :],
                 mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BM, BD)
    lse = tl.load(LSE + head * T + rows, mask=row_ok, other=0.0)  # (BM,)
    delta = tl.load(DELTA + head * T + rows, mask=row_ok, other=0.0)  # (BM,)

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    k_first, k_last = 0, seq_len
    if LOCAL:
        k_first = tl.maximum(q_lo - half, 0) // BLOCK_N * BLOCK_N
        k_last = tl.minimum(q_lo + BLOCK_M + half, seq_len)
    for k_lo in range(k_first, k_last, BLOCK_N):
        offs_n = k_lo + tl.arange(0, BLOCK_N)
        col_ok = offs_n < seq_len
        cols = (seq_start + offs_n).to(tl.int64)
        k = tl.load(K + cols[:, None] * stride_kt + head * stride_kh + offs_d[None, :],
                    mask=col_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)
        v = tl.load(V + cols[:, None] * stride_vt + head * stride_vh + offs_d[None, :],
                    mask=col_ok[:, None] & d_ok[None, :], other=0.0)  # (BN, BD)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale  # (BM, BN)
        visible = row_ok[:, None] & col_ok[None, :]
        if LOCAL:
            visible = visible & (tl.abs(offs_m[:, None] - offs_n[None, :]) <= half)
        p = tl.where(visible, tl.exp(s - lse[:, None]), 0.0)  # (BM, BN)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)  # (BM, BN)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)

    tl.store(DQ + rows[:, None] * stride_dqt + head * stride_dqh + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])

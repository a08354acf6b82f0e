"""flash.py: tiled (PyTorch) and Triton FlashAttention against a naive float64 reference.

With a GPU the Triton kernels run on it. Without one they run in Triton's CPU interpreter, with
TRITON_INTERPRET=1 set for those tests only (flash.py decorates its kernels at their first call).
Triton's own helpers (tl.max, tl.sum) are made for the interpreter only if it is on when triton
is first imported, so this module imports triton first that way; if an earlier test module
imported it already, one test reruns the Triton cases in a fresh process. Shapes stay tiny
(2 heads, head dim 16, tiles of 16) because the interpreter is slow.
"""

import importlib.util
import itertools
import os
import sys

import subprocess

import pytest
import torch

HAVE_TRITON = importlib.util.find_spec("triton") is not None
NO_TRITON = "triton is not installed (it comes with requirements.txt)"
ON_GPU = torch.cuda.is_available()

# Triton makes its own helpers (tl.max, tl.sum, ...) for the GPU or for the interpreter when it is
# first imported. Without a GPU, import it now with the interpreter on, unless an earlier test
# module did already, and put the variable back so that no other test sees it.
if HAVE_TRITON and not ON_GPU and "triton" not in sys.modules:
    _before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401
    finally:
        if _before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = _before

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402 (it imports triton)

from modernbert_mini import flash, runtime  # noqa: E402
from modernbert_mini.flash import tiled_attention, triton_attention, triton_supported  # noqa: E402

INTERPRETER_HERE = HAVE_TRITON and not ON_GPU and (
    type(sys.modules["triton"].language.max).__name__ == "InterpretedFunction")
LATE = ("triton was imported before TRITON_INTERPRET=1 was set, so its interpreter cannot run "
        "in this process: test_triton_cases_in_a_fresh_process runs this case")


BLOCK = 16
LENGTHS = [1, 16, 23, 40]  # a single token, one exact tile, a partial tile, several tiles


# ----------------------------------------------------------------------------- helpers
def naive_attention(q, k, v, lengths, window=None, scale=None):
    """Per sequence: dense scores, boolean mask |i - j| <= window // 2, softmax. Float64."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    outputs, start = [], 0
    for n in lengths:
        qs, ks, vs = (x[start:start + n].double().transpose(0, 1) for x in (q, k, v))  # (nh, n, hd)
        scores = qs @ ks.transpose(1, 2) * scale  # (nh, n, n)
        if window is not None:
            i = torch.arange(n)
            too_far = (i[:, None] - i[None, :]).abs() > window // 2  # (n, n)
            scores = scores.masked_fill(too_far, float("-inf"))
        outputs.append((scores.softmax(-1) @ vs).transpose(0, 1))  # (n, nh, hd)
        start += n
    return torch.cat(outputs)  # (T, nh, hd)


def packed(lengths, nh=2, hd=16, dtype=torch.float32, seed=0):
    """Random q, k, v (T, nh, hd) that require grad, and cu_seqlens for `lengths`."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(sum(lengths), nh, hd, generator=gen).to(dtype).requires_grad_()
               for _ in range(3))
    cu_seqlens = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    return q, k, v, cu_seqlens


def grads(out, inputs, grad_out):
    return torch.autograd.grad(out, inputs, grad_out.to(out.dtype))


def on_triton_device(*tensors):
    """The tensors where the Triton kernels run here: the GPU, or the CPU (interpreter)."""
    return [x.cuda() for x in tensors] if ON_GPU else list(tensors)


def run_triton(q, k, v, cu_seqlens, *args, **kwargs):
    """triton_attention on the Triton device, the result back on the CPU (autograd follows)."""
    return triton_attention(*on_triton_device(q, k, v, cu_seqlens), *args, **kwargs).cpu()


@pytest.fixture
def triton_here(monkeypatch):
    """Make Triton runnable for one test: the GPU, or the interpreter on the CPU."""
    if not HAVE_TRITON:
        pytest.skip(NO_TRITON)
    if not ON_GPU:
        if not INTERPRETER_HERE:
            pytest.skip(LATE)
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(params=["tiled", "triton"])
def attend(request):
    """Each implementation, with tiles of BLOCK."""
    if request.param == "tiled":
        return lambda *args: tiled_attention(*args, block_size=BLOCK)
    request.getfixturevalue("triton_here")
    return lambda *args: run_triton(*args, block_size=BLOCK)


# ----------------------------------------------------------------------------- values, gradients
@pytest.mark.parametrize("window", [None, 2, 8, 30, 200],
                         ids=["global", "w2", "w8-under-a-tile", "w30", "w200-over-every-seq"])
def test_matches_the_naive_reference(attend, window):
    q, k, v, cu_seqlens = packed(LENGTHS)
    out = attend(q, k, v, cu_seqlens, max(LENGTHS), window)
    ref = naive_attention(q, k, v, LENGTHS, window)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)

    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    want = grads(ref, (q, k, v), grad_out)
    for name, got, expected in zip("qkv", grads(out, (q, k, v), grad_out), want):
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4, msg=f"d{name}")


def test_the_window_is_honoured(attend):
    """A backend that ignored the window would give the global result: it must not."""
    q, k, v, cu_seqlens = packed([40])
    local = attend(q, k, v, cu_seqlens, 40, 8)
    everything = attend(q, k, v, cu_seqlens, 40, None)
    assert (local - everything).abs().max() > 0.1
    torch.testing.assert_close(local.double(), naive_attention(q, k, v, [40], 8),
                               atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("window", [None, 8])
def test_sequences_do_not_see_each_other(attend, window):
    """Changing every token of sequence 2 changes nothing for sequences 1 and 3."""
    lengths = [23, 40, 17]
    q, k, v, cu_seqlens = packed(lengths)
    q2, k2, v2 = (x.detach().clone() for x in (q, k, v))
    seq2 = slice(23, 63)
    gen = torch.Generator().manual_seed(2)
    for x in (q2, k2, v2):
        x[seq2] = torch.randn(x[seq2].shape, generator=gen)
    q2, k2, v2 = (x.requires_grad_() for x in (q2, k2, v2))
    grad_out = torch.randn(q.shape, generator=gen)

    out, out2 = (attend(a, b, c, cu_seqlens, 40, window) for a, b, c in ((q, k, v), (q2, k2, v2)))
    others = torch.cat([torch.arange(0, 23), torch.arange(63, 80)])
    assert torch.equal(out[others], out2[others])
    assert not torch.allclose(out[seq2], out2[seq2])
    for got, got2 in zip(grads(out, (q, k, v), grad_out), grads(out2, (q2, k2, v2), grad_out)):
        assert torch.equal(got[others], got2[others])


def test_tiles_outside_the_window_are_never_touched(attend):
    """NaN in a far tile must not reach the first tiles: a skipped tile is never loaded.

    Window 16 (8 each side), tiles of 16; v and dO are NaN at tokens 64..79 (tile 4). Tiles 0..2
    never meet tile 4, so tokens 0..31 (whose values and gradients involve tiles 0..2 only) stay
    exact. A backend that visited every tile and masked would compute 0 * NaN = NaN. (Tile 3
    meets tile 4 and is poisoned by its masked entries: that is what masking alone would do.)
    """
    q, k, v, cu_seqlens = packed([128])
    far = slice(64, 80)
    v_poisoned = v.detach().clone()
    v_poisoned[far] = float("nan")
    v_poisoned.requires_grad_()
    grad_out = torch.randn(q.shape, generator=torch.Generator().manual_seed(3))
    grad_poisoned = grad_out.clone()
    grad_poisoned[far] = float("nan")

    out = attend(q, k, v_poisoned, cu_seqlens, 128, 16)
    ref = naive_attention(q, k, v, [128], 16)  # clean values
    near = slice(0, 32)
    torch.testing.assert_close(out[near].double(), ref[near], atol=2e-5, rtol=1e-4)
    got = grads(out, (q, k, v_poisoned), grad_poisoned)
    want = grads(ref, (q, k, v), grad_out)
    for name, g, w in zip("qkv", got, want):
        torch.testing.assert_close(g[near], w[near], atol=2e-5, rtol=1e-4, msg=f"d{name}")


def test_tiled_work_grows_linearly_with_a_window():
    """Count the matmul flops tiled_attention really does, against the tiles a window reaches."""
    nh, hd = 1, 16

    def flops(seq_len, window):
        q, k, v, cu_seqlens = packed([seq_len], nh=nh, hd=hd)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            tiled_attention(q, k, v, cu_seqlens, seq_len, window, block_size=BLOCK)
        return counter.get_total_flops()

    def reachable_tile_pairs(seq_len, window):
        """(query tile, key tile) pairs with at least one pair of tokens within window // 2."""
        tiles = range(0, seq_len, BLOCK)
        half = seq_len if window is None else window // 2
        gap = lambda a, b: max(0, b - (a + BLOCK - 1), a - (b + BLOCK - 1))  # noqa: E731
        return sum(gap(a, b) <= half for a in tiles for b in tiles)

    per_tile = 2 * (2 * nh * BLOCK * BLOCK * hd)  # Q K^T and P V, one tile each
    local = {s: flops(s, 32) for s in (128, 256, 512)}
    for s, measured in local.items():
        assert measured == per_tile * reachable_tile_pairs(s, 32)
    assert 1.9 < local[512] / local[256] < 2.1  # twice the length, twice the work
    assert flops(256, None) == 4 * flops(128, None) == 4 * per_tile * (128 // BLOCK) ** 2


# ----------------------------------------------------------------------------- Triton specifics
@pytest.mark.parametrize("head_dim, tile", [(24, 64), (64, 32), (128, 16)])
def test_triton_head_dims_scale_and_default_tiles(triton_here, head_dim, tile):
    """Head dims 24 (padded to 32), 64 (ModernBERT's) and 128, a custom scale, and the default
    tile, which shrinks as the rows grow (float32: 64, 32, 16 rows)."""
    lengths = [70, 9]
    q, k, v, cu_seqlens = packed(lengths, hd=head_dim)
    assert flash._default_block_size(q) == tile
    out = run_triton(q, k, v, cu_seqlens, 70, 30, 0.3)
    ref = naive_attention(q, k, v, lengths, 30, 0.3)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-4)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    for name, g, w in zip("qkv", grads(out, (q, k, v), grad_out), grads(ref, (q, k, v), grad_out)):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-4, msg=f"d{name}")


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_triton_half_precision(dtype, tol, triton_here):
    q, k, v, cu_seqlens = packed(LENGTHS, dtype=dtype)
    if dtype == torch.bfloat16 and not runtime.native_bf16(runtime.cuda_capability()):
        with pytest.raises(ValueError, match="bfloat16"):  # the interpreter, or a T4: refused
            run_triton(q, k, v, cu_seqlens, max(LENGTHS), 8, block_size=BLOCK)
        return
    out = run_triton(q, k, v, cu_seqlens, max(LENGTHS), 8, block_size=BLOCK)
    assert out.dtype == dtype
    ref = naive_attention(q, k, v, LENGTHS, 8)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    for name, g, w in zip("qkv", grads(out, (q, k, v), grad_out), grads(ref, (q, k, v), grad_out)):
        torch.testing.assert_close(g.double(), w.double(), atol=5 * tol, rtol=5 * tol, msg=f"d{name}")


def test_triton_supported(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not triton_supported(torch.device("cpu"))
    assert not triton_supported(torch.device("meta"))
    assert triton_supported(torch.device("cuda")) == (
        HAVE_TRITON and ON_GPU and runtime.cuda_capability() >= runtime.MIN_CAPABILITY_TRITON)


def test_triton_runs_on_the_cpu_in_the_interpreter(monkeypatch):
    if not HAVE_TRITON or ON_GPU:
        pytest.skip("this machine has a GPU, or no triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_supported(torch.device("cpu")) == INTERPRETER_HERE


def test_triton_cases_in_a_fresh_process():
    """Where triton came in too early for the interpreter, run the Triton cases anew."""
    if not HAVE_TRITON or ON_GPU or INTERPRETER_HERE:
        pytest.skip("the Triton cases run in this process")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-k", "triton", "-p", "no:cacheprovider"],
        env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "cannot run in this process" not in result.stdout


# ----------------------------------------------------------------------------- input checks
def _good():
    q, k, v, cu_seqlens = packed([5, 7])
    return dict(q=q, k=k, v=v, cu_seqlens=cu_seqlens, max_seqlen=7)


BAD_INPUTS = {
    "rank": (dict(q=torch.randn(12, 32)), "must be a \\(T, nh, hd\\) tensor"),
    "shapes": (dict(k=torch.randn(12, 2, 8)), "same \\(T, nh, hd\\) shape"),
    "dtypes": (dict(v=torch.randn(12, 2, 16, dtype=torch.float64)), "one dtype"),
    "integer q": (dict(q=torch.ones(12, 2, 16, dtype=torch.int64)), "floating-point"),
    "cu_seqlens int64": (dict(cu_seqlens=torch.tensor([0, 5, 12])), "int32"),
    "cu_seqlens 2-D": (dict(cu_seqlens=torch.tensor([[0, 5, 12]], dtype=torch.int32)), "1-D"),
    "not from 0": (dict(cu_seqlens=torch.tensor([1, 5, 12], dtype=torch.int32)), "rise from 0"),
    "not to T": (dict(cu_seqlens=torch.tensor([0, 5, 11], dtype=torch.int32)), "T = 12"),
    "falling": (dict(cu_seqlens=torch.tensor([0, 9, 5, 12], dtype=torch.int32)), "rise from 0"),
    "max_seqlen short": (dict(max_seqlen=6), "shorter than the longest sequence \\(7"),
    "max_seqlen tensor": (dict(max_seqlen=torch.tensor(7)), "Python int"),
    "odd window": (dict(window=7), "positive even"),
    "zero window": (dict(window=0), "positive even"),
    "float window": (dict(window=128.0), "positive even"),
    "scale": (dict(scale=-1.0), "positive number"),
}


@pytest.mark.parametrize("function", [tiled_attention, triton_attention], ids=["tiled", "triton"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_refused(function, case, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    change, message = BAD_INPUTS[case]
    args = {**_good(), **change}
    with pytest.raises(ValueError, match=message):
        function(**args)


def test_bad_tile_sizes_are_refused():
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        tiled_attention(**_good(), block_size=0)


def test_triton_refuses_what_it_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        triton_attention(**_good())  # CPU tensors, no interpreter


def test_triton_limits_are_refused(triton_here):
    def run(q, k, v, cu_seqlens, max_seqlen, **kwargs):
        return triton_attention(*on_triton_device(q, k, v, cu_seqlens), max_seqlen, **kwargs)

    with pytest.raises(ValueError, match="power of two >= 16"):
        run(**_good(), block_size=24)
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        run(*packed([5, 7], dtype=torch.float64), 7)
    with pytest.raises(ValueError, match="head dims up to 128"):
        run(*packed([5, 7], nh=1, hd=256), 7)


def test_no_tokens(triton_here):
    q, k, v, cu_seqlens = packed([])
    assert tiled_attention(q, k, v, cu_seqlens, 0).shape == (0, 2, 16)
    assert run_triton(q, k, v, cu_seqlens, 0).shape == (0, 2, 16)


# ----------------------------------------------------------------------------- no sync per call
class _Reads(torch.overrides.TorchFunctionMode):
    """Records every tensor function called: tolist/item would copy from the device."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


COPIES = {"tolist", "item", "__bool__", "__int__", "__index__", "cpu", "numpy"}


def test_host_lengths_spare_the_copy_from_the_device():
    good = _good()
    with _Reads() as reads:
        offsets, _ = flash._check_inputs(*good.values(), None, None, seqlens=(5, 7))
    assert offsets == [0, 5, 12]
    assert not COPIES & set(reads.names), reads.names
    with _Reads() as reads:  # without them, cu_seqlens is read (the copy this test would catch)
        flash._check_inputs(*good.values(), None, None)
    assert "tolist" in reads.names


@pytest.mark.parametrize("seqlens, message", [
    ((5, 6), "T = 12"), ((12,), "has 1 lengths but cu_seqlens has 3 offsets"),
    ((3, 9), "shorter than the longest sequence \\(9")])
def test_host_lengths_are_checked(seqlens, message):
    with pytest.raises(ValueError, match=message):
        flash._check_inputs(*_good().values(), None, None, seqlens=seqlens)


def test_the_backend_passes_the_batchs_host_lengths(monkeypatch):
    from modernbert_mini import backends
    from modernbert_mini.padding import Batch

    seen = {}
    monkeypatch.setattr(flash, "triton_attention", lambda *a, **kw: seen.update(kw) or a[0])
    q, k, v, cu_seqlens = packed([5, 7])
    backends._triton(q, k, v, Batch.packed(cu_seqlens), 8, 0.0)
    assert seen["seqlens"] == (5, 7)


@pytest.mark.skipif(not HAVE_TRITON, reason=NO_TRITON)
def test_the_grid_puts_sequences_on_the_unbounded_axis():
    cu_seqlens = torch.zeros(70_001, dtype=torch.int32)  # 70,000 sequences: more than 65,535
    assert flash._grid(cu_seqlens, 1000, 64, 12) == (70_000, 16, 12)
    with pytest.raises(ValueError, match="65,536 tiles of the longest sequence .* more than "
                                         "CUDA's 65,535"):
        flash._grid(cu_seqlens, 65_536 * 16, 16, 12)
    with pytest.raises(ValueError, match="70,000 heads"):
        flash._grid(cu_seqlens, 16, 16, 70_000)

"""Every attention backend against the formula, for values and gradients, with padding and windows.

The reference is written here, independently of backends.py: for each row, its real tokens only,
dense float64 scores, |i - j| <= window // 2, softmax, in float64. Each backend runs on both
layouts (padded with a mask, and unpadded), so the conversions between them are checked too.
A backend that ignored the window or the padding must fail these checks: the last tests show
that broken backends do.
"""

from dataclasses import replace

import pytest
import torch

import modernbert_mini as mm
from modernbert_mini import backends
from modernbert_mini.backends import BACKENDS, attend, choose
from modernbert_mini.padding import Batch, pad, unpad

LENGTHS = [7, 1, 20, 13]  # one token alone; one row fills S
S, NH, HD = 20, 2, 8
WINDOWS = [None, 2, 4, 8, 64]  # 64: wider than any row


# (backend, device): every backend on the CPU, and on the GPU too where there is one
DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
CASES = [(name, device) for device in DEVICES for name in BACKENDS if device in BACKENDS[name].devices]


def reference(q, k, v, lengths, window):
    """Per row, dense attention over its real tokens. q, k, v: (B, S, nh, hd) float64."""
    out = torch.zeros_like(q)
    for row, n in enumerate(lengths):
        qs, ks, vs = (x[row, :n].transpose(0, 1) for x in (q, k, v))  # (nh, n, hd)
        scores = qs @ ks.transpose(-1, -2) / HD ** 0.5  # (nh, n, n)
        if window is not None:
            i = torch.arange(n)
            scores = scores.masked_fill((i[:, None] - i[None, :]).abs() > window // 2, float("-inf"))
        out[row, :n] = (scores.softmax(-1) @ vs).transpose(0, 1)
    return out


def inputs(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(len(LENGTHS), S, NH, HD, generator=g, dtype=dtype) for _ in range(3))
    mask = torch.zeros(len(LENGTHS), S, dtype=torch.bool)
    for row, n in enumerate(LENGTHS):
        mask[row, :n] = True
    return q, k, v, mask


def dtype_for(name):
    return torch.float64 if torch.float64 in BACKENDS[name].dtypes else torch.float32


def run_backend(name, layout, window, q, k, v, mask):
    """The backend on `layout`; returns (B, S, nh, hd) with the real positions filled."""
    if layout == "padded":
        return attend(q, k, v, Batch.padded(S, mask), window, 0.0, name)
    batch = Batch.unpad(mask)
    return pad(attend(*(unpad(x, batch) for x in (q, k, v)), batch, window, 0.0, name), batch)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("layout", ["padded", "unpadded"])
@pytest.mark.parametrize("name,device", CASES)
def test_backend_values_and_gradients(name, device, layout, window, monkeypatch):
    if name == "triton" and device == "cpu":
        if torch.cuda.is_available():
            pytest.skip("triton: Triton was imported for the GPU here, so it runs there")
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # the kernel in Triton's CPU interpreter
    dtype = dtype_for(name)
    if BACKENDS[name].supports(device, dtype, window, 0.0):
        pytest.skip(f"{name}: {BACKENDS[name].supports(device, dtype, window, 0.0)}")
    q, k, v, mask = inputs(dtype)
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    leaves = [x.to(device, copy=True).requires_grad_() for x in (q, k, v)]  # on the device
    ref_leaves = [x.detach().double().clone().requires_grad_() for x in (q, k, v)]
    out = run_backend(name, layout, window, *leaves, mask.to(device)).cpu()
    ref = reference(*ref_leaves, LENGTHS, window)
    real = mask[:, :, None, None].expand_as(out)
    torch.testing.assert_close(out[real].double(), ref[real], rtol=0, atol=tol)

    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (out.double() * weights * real).sum().backward()
    (ref * weights * real).sum().backward()
    for mine, theirs, what in zip(leaves, ref_leaves, "qkv"):
        mine = mine.grad.cpu()
        # pad keys and values are never seen, pad queries are not in the loss: their gradient is 0
        torch.testing.assert_close(mine.double() * real, theirs.grad, rtol=0, atol=tol * 10,
                                   msg=lambda m: f"d{what}: {m}")
        if what in "kv":
            assert mine[~real].abs().max() == 0, f"a pad {what} got a gradient: it was attended to"


@pytest.mark.parametrize("name", ["eager", "sdpa", "local"])
def test_no_nan_where_a_pad_query_sees_no_key(name):
    """Row 1 has one real token; its pad queries' windows hold only padding."""
    q, k, v, mask = inputs(torch.float64 if name == "eager" else torch.float32)
    out = attend(q, k, v, Batch.padded(S, mask), 4, 0.0, name)
    assert torch.isfinite(out).all()


def test_a_backend_that_ignores_the_window_or_the_padding_fails():
    q, k, v, mask = inputs()
    real = mask[:, :, None, None].expand_as(q)
    no_window = attend(q, k, v, Batch.padded(S, mask), None, 0.0, "eager")
    no_padding = attend(q, k, v, Batch.padded(S), 4, 0.0, "eager")
    ref = reference(q, k, v, LENGTHS, 4)
    for broken in (no_window, no_padding):
        assert (broken[real] - ref[real]).abs().max() > 1e-2


def test_dense_masks_are_built_once_per_forward():
    q, k, v, mask = inputs(torch.float32)
    batch = Batch.padded(S, mask)
    for _ in range(3):  # three layers of one window
        attend(q, k, v, batch, 4, 0.0, "sdpa")
    assert [key for key in batch.cache if key[0] == "dense_mask"] == [("dense_mask", 4, S)]


def test_auto_picks_for_the_device_dtype_and_input():
    q32 = torch.zeros(2, S, NH, HD)
    padded, unpadded = Batch.padded(S), Batch.unpad(torch.ones(2, S))
    assert choose("auto", padded, q32, None).name == "sdpa"
    assert choose("auto", padded, q32, 128).name == "sdpa"  # 20 tokens: the dense mask is cheaper
    assert choose("auto", Batch.padded(6 * 128), q32, 128).name == "local"  # long: blocked
    assert choose("auto", unpadded, q32.flatten(0, 1), 128).name == "varlen"
    assert choose("eager", unpadded, q32.flatten(0, 1), 128).name == "eager"  # forced, converted


def test_a_backend_that_cannot_run_says_why():
    q = torch.zeros(2, S, NH, HD)
    with pytest.raises(ValueError, match="'flash_attn' cannot run this layer: it does not run on cpu"):
        choose("flash_attn", Batch.padded(S), q, None)
    with pytest.raises(ValueError, match="'tiled' cannot run this layer: it has no attention dropout"):
        choose("tiled", Batch.padded(S), q, None, dropout_p=0.1)
    with pytest.raises(ValueError, match="'flash' is unknown"):
        choose("flash", Batch.padded(S), q, None)


def test_local_backend_costs_the_window_not_the_length():
    """The blocked scores grow linearly with T: window + window // 4 keys per query."""
    key_masks = [backends.local_key_mask(torch.zeros(n, dtype=torch.long), 128).shape
                 for n in (512, 4096)]
    assert [m[0] * m[-2] * m[-1] for m in key_masks] == [512 * 160, 4096 * 160]


def test_local_blocks_straddle_documents_but_never_see_across():
    """Blocks of the stream cut across documents (and rows); the mask keeps each to its own."""
    lengths, window = [50, 3, 77, 31, 40], 16  # blocks of 4, spans of 20
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), NH, HD, generator=g, dtype=torch.float64) for _ in range(3))
    batch = Batch.packed(torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()]))
    out = attend(q, k, v, batch, window, 0.0, "local")
    start = 0
    for n in lengths:
        one = [x[start:start + n][None] for x in (q, k, v)]  # (1, n, nh, hd): alone
        alone = reference(*one, [n], window)[0]
        torch.testing.assert_close(out[start:start + n], alone, rtol=0, atol=1e-12)
        start += n


def test_choose_can_be_asked_about_another_device():
    """What a GPU would pick, from the declarations, with what is installed there given."""
    q16 = torch.zeros(2 * S, NH, HD, dtype=torch.bfloat16)
    unpadded = Batch.unpad(torch.ones(2, S))
    a100 = {"flash_attn": True, "triton": True}
    no_flash = {"flash_attn": False, "triton": True}
    assert choose("auto", unpadded, q16, 128, device="cuda", installed=a100,
                  capability=(8, 0)).name == "flash_attn"
    # without flash-attn, or in float32 (flash-attn takes halves only): PyTorch's SDPA, never
    # Triton, until a GPU measures it against SDPA (backends.py's docstring)
    assert choose("auto", unpadded, q16.half(), 128, device="cuda", installed=no_flash,
                  capability=(8, 6)).name == "sdpa"
    assert choose("auto", unpadded, q16.float(), None, device="cuda", installed=a100,
                  capability=(8, 0)).name == "sdpa"
    with pytest.raises(ValueError, match="does not run on cuda here"):
        choose("flash_attn", unpadded, q16, None, device="cuda", installed={"flash_attn": False})


EVERYTHING = {"flash_attn": True, "triton": True}
PYTORCH_KERNELS = ("eager", "sdpa", "local", "varlen", "tiled")


def auto_on(capability, dtype, layout, window, seq_len=S):
    """What "auto" picks on a pretend GPU with flash-attn and Triton installed."""
    batch = Batch.padded(seq_len) if layout == "padded" else Batch.unpad(torch.ones(2, seq_len))
    q = torch.zeros(2, seq_len, NH, HD, dtype=dtype)
    q = q if layout == "padded" else q.flatten(0, 1)
    return choose("auto", batch, q, window, device="cuda", installed=EVERYTHING,
                  capability=capability).name


@pytest.mark.parametrize("capability", [(6, 0), (7, 0), (7, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["padded", "unpadded"])
@pytest.mark.parametrize("window, seq_len", [(None, S), (128, S), (128, 6 * 128)])
def test_below_8_0_auto_picks_pytorch_kernels(capability, dtype, layout, window, seq_len):
    """A T4 (7.5), a V100 (7.0), a P100 (6.0): never Triton (no tensor cores in tl.dot, or no
    Triton at all) and never flash-attn, in any dtype; a bf16 model falls back, it does not raise."""
    assert auto_on(capability, dtype, layout, window, seq_len) in PYTORCH_KERNELS


@pytest.mark.parametrize("capability", [(8, 0), (9, 0)])
def test_from_8_0_auto_picks_the_fast_kernels(capability):
    assert auto_on(capability, torch.bfloat16, "unpadded", 128) == "flash_attn"
    assert auto_on(capability, torch.float16, "padded", None) == "flash_attn"
    assert auto_on(capability, torch.float32, "unpadded", None) == "sdpa"  # flash-attn: halves only
    q = torch.zeros(2 * S, NH, HD, dtype=torch.bfloat16)
    without_flash = choose("auto", Batch.unpad(torch.ones(2, S)), q, 128, device="cuda",
                           installed={"flash_attn": False, "triton": True}, capability=capability)
    assert without_flash.name == "sdpa"  # Triton runs by name only
    assert choose("triton", Batch.unpad(torch.ones(2, S)), q, 128, device="cuda",
                  installed={"triton": True}, capability=capability).name == "triton"


def test_local_by_name_runs_a_whole_model():
    """"local" has no global form: global layers take what "auto" picks, local ones the blocks."""
    q = torch.zeros(2 * S, NH, HD)
    unpadded = Batch.unpad(torch.ones(2, S))
    assert choose("local", unpadded, q, 128).name == "local"
    assert choose("local", unpadded, q, None).name == choose("auto", unpadded, q, None).name
    config = mm.ModernBertConfig.mini(num_hidden_layers=3, hidden_size=64, intermediate_size=96,
                                      num_attention_heads=2, vocab_size=64, local_attention=8)
    torch.manual_seed(0)
    ids = torch.randint(5, 64, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, 25:] = 0
    outputs = []
    for name in ("local", "eager"):
        torch.manual_seed(0)
        model = mm.ModernBertModel(replace(config, attention_backend=name))
        outputs.append(model.eval()(ids, mask).last_hidden_state[mask.bool()])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-5)


def force(name, capability, dtype):
    q = torch.zeros(2 * S, NH, HD, dtype=dtype)
    return choose(name, Batch.unpad(torch.ones(2, S)), q, 128, device="cuda",
                  installed=EVERYTHING, capability=capability).name


def test_forcing_a_backend_the_gpu_cannot_run_says_why():
    with pytest.raises(ValueError, match=r"'triton' cannot run this layer: it needs a GPU of "
                                         r"compute capability >= 7.0, this one has 6.0"):
        force("triton", (6, 0), torch.float16)
    with pytest.raises(ValueError, match=r"'flash_attn' cannot run this layer: it needs a GPU of "
                                         r"compute capability >= 8.0, this one has 7.5"):
        force("flash_attn", (7, 5), torch.float16)
    with pytest.raises(ValueError, match=r"'triton' cannot run this layer: bfloat16 needs compute "
                                         r"capability >= 8.0 \(bf16 units\), this GPU has 7.5"):
        force("triton", (7, 5), torch.bfloat16)
    assert force("triton", (7, 5), torch.float16) == "triton"  # named: it runs, without tensor cores
    assert force("sdpa", (7, 5), torch.bfloat16) == "sdpa"  # PyTorch emulates bf16 there
    assert force("triton", (9, 0), torch.bfloat16) == "triton"
    assert force("flash_attn", (8, 0), torch.bfloat16) == "flash_attn"


def test_available_follows_the_capability():
    for capability, expected in [((6, 0), ()), ((7, 5), ("triton",)),
                                 ((8, 0), ("triton", "flash_attn")), ((9, 0), ("triton", "flash_attn"))]:
        names = backends.available("cuda", torch.float16, installed=EVERYTHING, capability=capability)
        assert names == PYTORCH_KERNELS + expected, capability
    bf16_on_t4 = backends.available("cuda", torch.bfloat16, installed=EVERYTHING, capability=(7, 5))
    assert bf16_on_t4 == PYTORCH_KERNELS


def edge_lengths(window: int) -> list[int]:
    """Every length where a window's edge can fall: around window // 2 (the farthest key a token
    sees), around window, and a sequence long enough for a token to see both edges at once."""
    half = window // 2
    return sorted({1, 2, half - 1, half, half + 1, half + 2, half + 3, window - 1, window,
                   window + 1, window + 2, 2 * window + 3})


@pytest.mark.parametrize("window", [6, 16])  # local: blocks of 1 and 4 queries
@pytest.mark.parametrize("layout", ["padded", "unpadded"])
@pytest.mark.parametrize("name", [n for n in BACKENDS
                                  if "cpu" in BACKENDS[n].devices and n != "eager"])
def test_every_cpu_backend_at_every_length_around_the_window_edges(name, layout, window,
                                                                   monkeypatch):
    """Each CPU backend against eager (checked against the formula above) and against the
    formula, one sequence of every length around window // 2 and window. Fails if `varlen`'s
    "the window covers the whole sequence" shortcut is off by one (`length - 1 <= window // 2`
    made `length - 2 <= window // 2`, or `length <= window // 2 + 2`: a sequence of
    window // 2 + 2 tokens then attends globally), or if any backend's window test is `<` where
    it should be `<=` (or the reverse)."""
    if BACKENDS[name].supports("cpu", dtype_for(name), window, 0.0):
        pytest.skip(f"{name}: {BACKENDS[name].supports('cpu', dtype_for(name), window, 0.0)}")
    if name == "triton":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    lengths = edge_lengths(window)
    longest, dtype = max(lengths), dtype_for(name)
    g = torch.Generator().manual_seed(window)
    q, k, v = (torch.randn(len(lengths), longest, NH, HD, generator=g, dtype=torch.float64)
               for _ in range(3))
    mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]  # (B, S)

    def run(backend):
        x = [t.to(dtype) for t in (q, k, v)]
        if layout == "padded":
            return attend(*x, Batch.padded(longest, mask), window, 0.0, backend)
        batch = Batch.unpad(mask)
        return pad(attend(*(unpad(t, batch) for t in x), batch, window, 0.0, backend), batch)

    real = mask[:, :, None, None].expand_as(q)
    out, eager = run(name).double()[real], run("eager").double()[real]
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(out, eager, rtol=0, atol=tol)
    torch.testing.assert_close(out, reference(q, k, v, lengths, window)[real], rtol=0, atol=tol)

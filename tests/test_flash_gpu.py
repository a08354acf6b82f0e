"""The Triton kernel on a CUDA GPU at ModernBERT's real shapes. Skipped without one.

test_flash.py checks the kernels' logic on small tiles (block 16, head dim 16), in the interpreter
on the CPU. Here they run as a real model runs them: 12 heads of 64, the default tile (64 rows in
fp16/bf16, 32 in fp32, so several tiles a sequence), lengths around the tile edges, a local layer
(window 128) and a global one, and q, k, v as strided views of one fused (T, 3, nh, hd) qkv tensor,
as attention.py hands them over. Values and gradients are checked against float64 and against
PyTorch's SDPA in the same dtype: the kernel may round, but not worse than PyTorch does.
bf16 only where the GPU has bf16 units (capability >= 8.0).
"""

import pytest
import torch

from modernbert_mini import backends, flash, runtime
from modernbert_mini.padding import Batch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

HEADS, HEAD_DIM = 12, 64
LENGTHS = [1, 63, 64, 65, 200, 513, 1000]
# how much worse than SDPA's error (both against float64) the kernel may be, plus a floor
SLACK = 2.0
FLOOR = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def dtypes():
    if not torch.cuda.is_available():
        return []
    here = [torch.float32, torch.float16]
    return here + ([torch.bfloat16] if runtime.native_bf16(runtime.cuda_capability()) else [])


@pytest.fixture(autouse=True)
def triton_on_the_gpu():
    if not flash.triton_supported(torch.device("cuda")):
        pytest.skip("Triton does not run on this GPU (it needs capability >= 7.0 and triton)")


def qkv_views(dtype, seed=0):
    """q, k, v (T, nh, hd): strided views of one (T, 3, nh, hd) tensor, and their Batch."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(sum(LENGTHS), 3, HEADS, HEAD_DIM, generator=gen, device="cuda")
    qkv = qkv.to(dtype).requires_grad_()
    cu_seqlens = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    return qkv, Batch.packed(cu_seqlens.cuda())


def attention_and_grad(name, qkv, batch, window, grad_out):
    q, k, v = qkv.unbind(1)  # (T, nh, hd) each, row stride 3 * nh * hd
    assert q.stride(0) == 3 * HEADS * HEAD_DIM
    out = backends.attend(q, k, v, batch, window, 0.0, name)  # eager: padded and back
    (grad,) = torch.autograd.grad(out, qkv, grad_out.to(out.dtype))
    return out.double(), grad.double()


def worst(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("window", [128, None], ids=["local-128", "global"])
@pytest.mark.parametrize("dtype", dtypes(), ids=str)
def test_real_shapes_against_float64_and_sdpa(dtype, window):
    qkv, batch = qkv_views(dtype)
    grad_out = torch.randn(sum(LENGTHS), HEADS, HEAD_DIM, device="cuda",
                           generator=torch.Generator(device="cuda").manual_seed(1))
    exact = qkv.detach().double().requires_grad_()
    ref_out, ref_grad = attention_and_grad("eager", exact, batch, window, grad_out)  # float64
    sdpa_out, sdpa_grad = attention_and_grad("varlen", qkv, batch, window, grad_out)  # SDPA, dtype
    out, grad = attention_and_grad("triton", qkv, batch, window, grad_out)
    assert flash._default_block_size(qkv[:, 0]) == (32 if dtype == torch.float32 else 64)
    for what, ours, pytorch, truth in (("values", out, sdpa_out, ref_out),
                                       ("dq, dk, dv", grad, sdpa_grad, ref_grad)):
        allowed = SLACK * worst(pytorch, truth) + FLOOR[dtype]
        assert worst(ours, truth) <= allowed, (what, worst(ours, truth), worst(pytorch, truth))


def test_more_sequences_than_a_grid_axis_above_0_allows():
    """70,000 one-token sequences: on grid axis 1 or 2 (at most 65,535) the launch would fail."""
    n = 70_000
    q, k, v = (torch.randn(n, 1, 16, device="cuda") for _ in range(3))
    cu_seqlens = torch.arange(n + 1, dtype=torch.int32, device="cuda")
    out = flash.triton_attention(q, k, v, cu_seqlens, 1, seqlens=(1,) * n)
    torch.testing.assert_close(out, v)  # one key each: its own value


def test_no_sync_with_host_lengths():
    """With the Batch's host lengths, forward and backward never wait for the GPU."""
    qkv, batch = qkv_views(torch.float16)
    q, k, v = qkv.unbind(1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = flash.triton_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen, 128,
                                     seqlens=batch.seqlens)
        out.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with pytest.raises(RuntimeError):  # and the check does catch the copy without them
        torch.cuda.set_sync_debug_mode("error")
        try:
            flash.triton_attention(q, k, v, batch.cu_seqlens, batch.max_seqlen, 128)
        finally:
            torch.cuda.set_sync_debug_mode("default")

"""The whole model on a CUDA GPU, against transformers' on the same GPU. Skipped without one.

A model built on the CPU and moved to the GPU must choose its attention there, at forward time
(a padded batch runs unpadded, so "auto" takes flash-attn in bf16 where it is installed, else
the Triton kernel, on a GPU of capability >= 8.0; PyTorch's kernels below), and give the reference's numbers and gradients. tools/gpu_check.sh runs these
on a GPU machine, with the backend and Triton tests and the benchmark.
"""

import pytest
import torch

import modernbert_mini as mm
from modernbert_mini import backends, runtime
from modernbert_mini.flash import triton_supported
from test_model_parity import CONFIGS, lengths_for
from test_model_reference import TOL, make_batch, max_abs_diff, ours_like, reference, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU_TOL = 1e-4  # float32, other kernels than the CPU's: only the summation order differs


@pytest.fixture
def chosen(monkeypatch):
    """The names of the backends that ran, one per attention call, with their input's device."""
    calls = []
    choose = backends.choose

    def spy(name, batch, q, *args, **kwargs):
        backend = choose(name, batch, q, *args, **kwargs)
        calls.append((backend.name, q.device.type))
        return backend

    monkeypatch.setattr(backends, "choose", spy)
    return calls


def gpu_pair(config, backend="auto"):
    """The reference (SDPA) and ours with its weights, both built on the CPU, then moved."""
    ref = reference("ModernBertForMaskedLM", config, "sdpa")
    ours = ours_like(mm.ModernBertForMaskedLM, ref, config, backend)
    return ref.cuda(), ours.cuda()


def test_a_model_moved_to_the_gpu_chooses_there_and_equals_the_reference(chosen):
    config = tiny_config(**CONFIGS["base-like"])
    ids, mask = (x.cuda() for x in make_batch(config, lengths_for(config.local_attention)))
    ref, ours = gpu_pair(config)
    with torch.no_grad():
        r = ref(ids, attention_mask=mask, output_hidden_states=True)
        o = ours(ids, mask, output_hidden_states=True)
    assert chosen and all(device == "cuda" for _, device in chosen)
    names = {name for name, _ in chosen}
    if triton_supported(torch.device("cuda")) and runtime.native_bf16(runtime.cuda_capability()):
        assert names == {"triton"}, chosen  # float32: no flash-attn
    elif runtime.cuda_capability() < runtime.MIN_CAPABILITY_TRITON_DOT:  # a T4: PyTorch's kernels
        assert not names & {"triton", "flash_attn"}, chosen
    for a, b in zip(o.hidden_states, r.hidden_states):
        assert max_abs_diff(a, b, mask) < GPU_TOL
    assert max_abs_diff(o.logits, r.logits, mask) < GPU_TOL


def test_gradients_on_the_gpu_equal_the_reference():
    """One training step on the GPU: the Triton kernel's backward where Triton runs."""
    config = tiny_config(num_hidden_layers=4, global_attn_every_n_layers=2)
    ids, mask = (x.cuda() for x in make_batch(config, lengths_for(config.local_attention)))
    labels = torch.where(mask.bool(), ids, -100)
    ref, ours = gpu_pair(config)
    ref.train()(ids, attention_mask=mask, labels=labels).loss.backward()
    ours.train()(ids, mask, labels=labels).loss.backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        assert max_abs_diff(p.grad, ref_grads[name].grad) < GPU_TOL, name


def test_bf16_fast_path_is_as_close_to_float32_as_pytorch_attention_in_bf16(chosen):
    """bf16 rounds: the fast kernels must not round worse than PyTorch's own SDPA in bf16."""
    if not runtime.native_bf16(runtime.cuda_capability()) or not triton_supported(torch.device("cuda")):
        pytest.skip("bf16 flash-attn and Triton need a GPU of capability >= 8.0 with Triton")
    config = tiny_config(**CONFIGS["every-2-window-4"])
    ids, mask = (x.cuda() for x in make_batch(config, lengths_for(config.local_attention)))
    ref, fast = gpu_pair(config)
    plain = ours_like(mm.ModernBertForMaskedLM, ref, config, "sdpa").cuda()
    with torch.no_grad():
        exact = ref(ids, attention_mask=mask).logits
        chosen.clear()
        fast_error = max_abs_diff(fast.to(torch.bfloat16)(ids, mask).logits, exact, mask)
        fast_names = {name for name, _ in chosen}
        plain_error = max_abs_diff(plain.to(torch.bfloat16)(ids, mask).logits, exact, mask)
    assert fast_names & {"flash_attn", "triton"}, fast_names
    assert fast_error <= 2 * plain_error + TOL, (fast_error, plain_error)

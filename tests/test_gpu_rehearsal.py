"""A GPU runtime rehearsed on the CPU: the model on fake CUDA tensors, for the GPUs readers meet.

No GPU here, and a reader's Colab runtime has one. PyTorch's FakeTensorMode represents CUDA
tensors on a CPU-only build: every operation computes the shape, dtype and device of its result
and nothing else. A forward runs as it is; a backward also needs a CUDA device guard and CUDA
hooks, which a CPU build lacks: tests/fake_cuda.cpp provides both (built once with g++, cached by
torch.utils.cpp_extension), switched on only inside `rehearsal`.

For a T4 (7.5), an A100 (8.0) and an H100 (9.0), in float32 and in the half type each would use
(fp16 on the T4, bf16 from 8.0), the model runs a padded batch (which it unpads), a packed batch,
a backward, and `torch.compile(fullgraph=True)` as chapter 8 compiles it on a GPU ("aot_eager":
tracing forward and backward, no code generation). Each must
- create no CPU tensor inside the CUDA forward (a device mix-up: chapter 7's cell 31 once passed
  CPU tensors to a CUDA kernel);
- copy from the device to the host only where the package says it does (`padding.to_host`, once
  per forward for a batch it unpads or a packed one; none for one without padding): `.tolist()`,
  `.item()` or an operation whose output shape depends on values (nonzero, repeat_interleave
  without output_size) anywhere else raise here, as they have no values to read;
- trace as one graph, reading no hardware fact while tracing (the GPU's name or capability read
  by the patched functions below raises while torch.compile traces, as dynamo does on a GPU).

The Triton kernel (by name) and flash-attn (by "auto" from 8.0 in half precision) take part through
their fake implementations: the Triton kernel is a torch custom op with a fake version
(flash.py); flash-attn is not installed here, so a stand-in with the signature of
`flash_attn_varlen_func` plays it (real flash-attn registers its kernels as custom ops too).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import modernbert_mini as mm
from modernbert_mini import backends, padding, runtime

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a real GPU: tools/gpu_check.sh")

GPUS = {(7, 5): ("Tesla T4", torch.float16), (8, 0): ("NVIDIA A100-SXM4-40GB", torch.bfloat16),
        (9, 0): ("NVIDIA H100 80GB HBM3", torch.bfloat16)}
CASES = [(capability, dtype) for capability, (_, half) in GPUS.items()
         for dtype in (torch.float32, half)]
LENGTHS = [24, 9, 17]  # one row longer than the window's reach, padding in the others
CONFIG = dict(num_hidden_layers=3, hidden_size=64, intermediate_size=96, num_attention_heads=2,
              local_attention=16, global_attn_every_n_layers=2, vocab_size=128)


@pytest.fixture(scope="module")
def fake_cuda():
    """tests/fake_cuda.cpp, compiled once (about 35 s) and cached between runs."""
    from torch.utils.cpp_extension import load
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    source = Path(__file__).with_name("fake_cuda.cpp")
    return load("modernbert_mini_fake_cuda", [str(source)], verbose=False)


class CPUTensorWatch(TorchDispatchMode):
    """Records every operation that makes a CPU tensor: inside a CUDA forward there should be none."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tree_leaves(out)):
            self.found.append(str(func))
        return out


class HostCopies:
    """Stands in for `padding.to_host`: counts the calls and answers with the values a run on the
    CPU read at the same calls (fake tensors have no values to copy)."""

    def __init__(self, answers: list):
        self.answers, self.calls = list(answers), 0

    def __call__(self, x: torch.Tensor) -> list[int]:
        self.calls += 1
        assert self.answers, "a device-to-host copy the CPU run did not make"
        answer = self.answers.pop(0)
        assert len(answer) == x.numel()
        return answer


def recorded_host_copies(run) -> list:
    """What `padding.to_host` returned, call by call, while run() ran on the CPU."""
    seen, to_host = [], padding.to_host
    padding.to_host = lambda x: seen.append(to_host(x)) or seen[-1]
    try:
        run()
    finally:
        padding.to_host = to_host
    return seen


def hardware_read(value):
    """A fake torch.cuda query that torch.compile cannot trace, as the real one: on a GPU, dynamo
    stops at a torch.cuda function that returns no tensor ("torch.* op returned non-Tensor").
    Called while tracing, the trace breaks, and `fullgraph=True` makes that an error; called
    outside (or at trace time through `torch.compiler.assume_constant_result`), it answers."""
    return torch.compiler.disable(lambda *args, **kwargs: value)


@contextlib.contextmanager
def rehearsal(fake_cuda, capability, monkeypatch, flash_attn=False):
    """torch.cuda says a GPU of `capability` is here, and tensors made on "cuda" are fake ones."""
    name = GPUS[capability][0]
    rng_state = torch.zeros(16, dtype=torch.uint8)  # made before the fake mode: a real tensor
    props = types.SimpleNamespace(name=name, major=capability[0], minor=capability[1],
                                  total_memory=40 * 2**30, multi_processor_count=108)
    for attribute, value in [("is_available", lambda: True), ("device_count", lambda: 1),
                             ("current_device", lambda: 0),
                             ("get_device_capability", hardware_read(capability)),
                             ("get_device_name", hardware_read(name)),
                             ("get_device_properties", lambda device=None: props),  # dynamo folds this one
                             ("_lazy_init", lambda: None),  # nothing to initialise
                             # torch.compile keeps the GPU's random state around a trace: none here
                             ("get_rng_state", lambda device="cuda": rng_state),
                             ("set_rng_state", lambda state, device="cuda": None)]:
        monkeypatch.setattr(torch.cuda, attribute, value)
    if flash_attn:  # a stand-in with flash_attn_varlen_func's signature: shapes, devices, gradients
        module = types.ModuleType("flash_attn")
        module.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)
        module.flash_attn_varlen_func = (lambda q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0,
                                         softmax_scale=None, causal=False, window_size=(-1, -1):
                                         (q + k + v) * softmax_scale)
        monkeypatch.setitem(sys.modules, "flash_attn", module)
    runtime.flash_attn_importable.cache_clear()
    assert fake_cuda.enable(), "the fake CUDA guard and hooks did not take"
    try:
        with FakeTensorMode() as mode, torch.autograd.set_multithreading_enabled(False):
            yield mode
    finally:
        fake_cuda.disable()
        runtime.flash_attn_importable.cache_clear()


def config(**overrides):
    return mm.ModernBertConfig.mini(**{**CONFIG, **overrides})


def on_the_gpu(cls, cfg, dtype):
    """The model with fake CUDA weights: built on the meta device (its init samples with a sync,
    torch's own trunc_normal_), then given empty weights on "cuda" (values play no part here)."""
    with torch.device("meta"):
        model = cls(cfg)
    made = {}  # id of a meta tensor -> its fake CUDA one: tied weights stay tied

    def fake(t):
        if id(t) not in made:
            empty = torch.empty_like(t, device="cuda", dtype=dtype if t.is_floating_point() else None)
            made[id(t)] = torch.nn.Parameter(empty) if isinstance(t, torch.nn.Parameter) else empty
        return made[id(t)]
    for module in model.modules():
        for where in (module._parameters, module._buffers):
            for name, t in where.items():
                if t is not None:
                    where[name] = fake(t)
    return model


def inputs(cfg):
    """A padded batch (LENGTHS) and the same tokens packed: ids, mask, flat ids, cu_seqlens."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, cfg.vocab_size, (len(LENGTHS), max(LENGTHS)), generator=g)
    mask = (torch.arange(max(LENGTHS))[None] < torch.tensor(LENGTHS)[:, None]).long()
    flat = ids[mask.bool()]
    cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    return [ids, mask, flat, cu]


def forward_backward(model, ids, mask, flat, cu):
    """The three runs: padded (unpadded inside), packed, and a backward through the packed one."""
    padded = model(ids, mask).logits
    packed = model(flat, cu_seqlens=cu, max_seqlen=max(LENGTHS)).logits
    packed.float().square().mean().backward()
    return padded, packed


def rehearse(fake_cuda, monkeypatch, capability, dtype, backend="auto", flash_attn=False):
    """The model's forward and backward on fake CUDA tensors: what ran, where, and what copied."""
    cfg = config(attention_backend=backend)
    host = recorded_host_copies(lambda: forward_backward(mm.ModernBertForMaskedLM(config()),
                                                          *inputs(cfg)))  # the same batches
    real = inputs(cfg)  # made before the rehearsal: under it, "cpu" tensors are fake too
    chosen = []
    choose = backends.choose
    monkeypatch.setattr(backends, "choose", lambda *a, **k: chosen.append(choose(*a, **k).name)
                        or backends.BACKENDS[chosen[-1]])
    copies = HostCopies(host)
    monkeypatch.setattr(padding, "to_host", copies)
    with rehearsal(fake_cuda, capability, monkeypatch, flash_attn):
        model = on_the_gpu(mm.ModernBertForMaskedLM, cfg, dtype).train()
        batch = [torch.zeros(x.shape, dtype=x.dtype, device="cuda") for x in real]
        with CPUTensorWatch() as watch:
            padded, packed = forward_backward(model, *batch)
        grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.device.type == "cuda" and g.dtype == dtype for g in grads)
    assert padded.shape == (len(LENGTHS), max(LENGTHS), cfg.vocab_size) and padded.is_cuda
    assert packed.shape == (sum(LENGTHS), cfg.vocab_size) and packed.is_cuda
    return chosen, watch.found, copies.calls


@pytest.mark.parametrize("capability, dtype", CASES, ids=str)
def test_forward_and_backward_stay_on_the_gpu(fake_cuda, monkeypatch, capability, dtype):
    chosen, cpu_tensors, copies = rehearse(fake_cuda, monkeypatch, capability, dtype)
    assert not cpu_tensors, f"CPU tensors made inside a CUDA forward: {cpu_tensors}"
    assert copies == 2, "one copy of the lengths per forward (padded, then packed)"
    assert set(chosen) == {"sdpa"}, chosen  # flash-attn is not installed: PyTorch's SDPA


@pytest.mark.parametrize("capability", [(8, 0), (9, 0)], ids=str)
def test_flash_attn_runs_where_installed_in_half_precision(fake_cuda, monkeypatch, capability):
    chosen, cpu_tensors, copies = rehearse(fake_cuda, monkeypatch, capability, torch.bfloat16,
                                           flash_attn=True)
    assert not cpu_tensors and copies == 2
    assert set(chosen) == {"flash_attn"}, chosen


@pytest.mark.parametrize("capability, dtype", [c for c in CASES if c[1] != torch.bfloat16]
                         + [((8, 0), torch.bfloat16)], ids=str)
def test_the_triton_kernel_by_name(fake_cuda, monkeypatch, capability, dtype):
    pytest.importorskip("triton")
    chosen, cpu_tensors, copies = rehearse(fake_cuda, monkeypatch, capability, dtype, "triton")
    assert not cpu_tensors and copies == 2
    assert set(chosen) == {"triton"}, chosen


@pytest.mark.parametrize("backend", ["tiled", "varlen", "local", "eager"])
def test_the_other_backends_by_name(fake_cuda, monkeypatch, backend):
    """Every layer gets the host lengths of its Batch: no backend reads them back (tiled once did)."""
    chosen, cpu_tensors, copies = rehearse(fake_cuda, monkeypatch, (8, 0), torch.float32, backend)
    assert not cpu_tensors and copies == 2
    assert backend in chosen


@pytest.mark.parametrize("capability, dtype", CASES, ids=str)
def test_compiles_as_one_graph_as_chapter_8_does_on_a_gpu(fake_cuda, monkeypatch, capability, dtype):
    """A padded batch with padding, flash-attn installed: under compile it stays padded (SDPA)."""
    cfg = config()
    monkeypatch.setattr(padding, "to_host", HostCopies([]))  # none: a compiled forward copies nothing
    real = inputs(cfg)
    torch._dynamo.reset()
    with rehearsal(fake_cuda, capability, monkeypatch, flash_attn=True):
        model = on_the_gpu(mm.ModernBertForMaskedLM, cfg, dtype)
        ids, mask = (torch.zeros(x.shape, dtype=x.dtype, device="cuda") for x in real[:2])
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        logits = compiled(ids, mask).logits
        logits.float().square().mean().backward()
    assert logits.is_cuda and logits.shape == (len(LENGTHS), max(LENGTHS), cfg.vocab_size)
    assert all(p.grad is not None and p.grad.is_cuda for p in model.parameters())
    torch._dynamo.reset()

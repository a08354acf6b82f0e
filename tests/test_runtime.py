"""runtime.py: the rules for bf16, FlashAttention-2 and Triton, checked on pretend hardware."""

import importlib.util

import pytest
import torch

from modernbert_mini import backends, runtime


@pytest.fixture(autouse=True)
def fresh_answers():
    """runtime asks once per process whether flash-attn and Triton are installed: each pretend
    machine here asks again."""
    for ask in (runtime.flash_attn_importable, runtime.triton_installed):
        ask.cache_clear()
    yield
    for ask in (runtime.flash_attn_importable, runtime.triton_installed):
        ask.cache_clear()


def pretend_gpu(monkeypatch, capability, name="Pretend GPU", flash_installed=False, triton_installed=False):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capability)
    real_find_spec = importlib.util.find_spec
    installed = {"flash_attn": flash_installed, "triton": triton_installed}

    def find_spec(module_name, *args):
        if module_name in installed:
            return object() if installed[module_name] else None
        return real_find_spec(module_name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(runtime.importlib, "import_module", lambda name: None)


def test_this_machine_is_a_cpu_in_fp32():
    rt = runtime.detect()
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert rt.device in ("cpu", "mps")
    assert rt.capability is None
    assert rt.bf16 is False and rt.dtype == torch.float32
    assert rt.flash_attn is False
    assert backends.runnable(rt)[:2] == ("eager", "sdpa")


def test_t4_has_no_bf16_and_no_flash_attention(monkeypatch):
    pretend_gpu(monkeypatch, (7, 5), "Tesla T4", flash_installed=True, triton_installed=True)
    rt = runtime.detect()
    assert rt.device == "cuda" and rt.capability == (7, 5)
    assert not rt.bf16 and rt.dtype == torch.float32
    assert not rt.flash_attn  # installed, but capability 7.5 < 8.0
    assert rt.triton  # Triton runs on a T4
    assert "flash_attn" not in backends.runnable(rt)


def test_a100_has_bf16_and_flash_attention_when_installed(monkeypatch):
    pretend_gpu(monkeypatch, (8, 0), "NVIDIA A100", flash_installed=True)
    rt = runtime.detect()
    assert rt.bf16 and rt.dtype == torch.bfloat16
    assert rt.flash_attn
    assert backends.runnable(rt)[-1] == "flash_attn"


def test_flash_attention_needs_the_package(monkeypatch):
    pretend_gpu(monkeypatch, (8, 9), "NVIDIA L4", flash_installed=False)
    rt = runtime.detect()
    assert rt.bf16 and not rt.flash_attn


def test_triton_on_cpu_only_in_the_interpreter(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: object() if n == "triton" else real_find_spec(n, *a))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not runtime.detect().triton
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert runtime.detect().triton


def test_summary_is_one_line_that_names_the_facts(monkeypatch):
    pretend_gpu(monkeypatch, (7, 5), "Tesla T4")
    line = runtime.summary()
    assert "\n" not in line
    for fact in ("cuda", "Tesla T4", "capability 7.5", "bf16 no", "flash-attn no", "dtype float32"):
        assert fact in line, (fact, line)


@pytest.mark.parametrize("capability, bf16, triton", [
    ((6, 0), False, False),  # P100: no bf16 units, no Triton
    ((7, 5), False, True),  # T4: bf16 only emulated (is_bf16_supported() says True: not asked)
    ((8, 0), True, True),  # A100
    ((9, 0), True, True),  # H100
])
def test_bf16_and_triton_follow_the_capability(monkeypatch, capability, bf16, triton):
    pretend_gpu(monkeypatch, capability, triton_installed=True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts there
    rt = runtime.detect()
    assert rt.bf16 is bf16 and runtime.native_bf16(capability) is bf16
    assert rt.dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert rt.triton is triton
    assert ("triton" in backends.runnable(rt)) is triton

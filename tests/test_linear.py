"""linear.Linear: nn.Linear's numbers and gradients, with the reordered-weight CPU path where it may run."""

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from modernbert_mini import linear
from modernbert_mini.linear import Linear, reordering

pytestmark = pytest.mark.skipif(not linear.ONEDNN, reason="this PyTorch has no oneDNN linear ops")


@pytest.fixture(autouse=True)
def small_products_reorder_too(monkeypatch):
    """These tests' products are tiny, and this CPU may not reorder by default (no AVX-512): let
    them take the reordered-weight path all the same."""
    monkeypatch.setattr(linear, "SMALL", 0)
    with reordering(True):
        yield


def layer(bias=False, seed=0):
    torch.manual_seed(seed)
    return Linear(48, 80, bias=bias)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(5, 48), (3, 7, 48)])
def test_reordered_path_equals_f_linear(bias, shape):
    lin = layer(bias)
    x = torch.randn(shape)
    with torch.no_grad():
        out = lin(x)
    assert lin._reordered is not None  # it took the reordered-weight path
    exact = F.linear(x.double(), lin.weight.double(), None if lin.bias is None else lin.bias.double())
    assert out.shape == exact.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)


def test_a_rows_result_does_not_depend_on_the_batch():
    lin = layer()
    x = torch.randn(300, 48)
    with torch.inference_mode():
        whole = lin(x)
        assert all(torch.equal(lin(x[:n]), whole[:n]) for n in (1, 2, 17, 299))


def test_with_gradients_it_is_nn_linear():
    lin = layer(bias=True)
    plain = torch.nn.Linear(48, 80)
    plain.load_state_dict(lin.state_dict())
    x = torch.randn(6, 48, requires_grad=True)
    lin(x).square().sum().backward()
    assert lin._reordered is None  # oneDNN's op has no backward: never used here
    x2 = x.detach().clone().requires_grad_()
    plain(x2).square().sum().backward()
    assert torch.equal(x.grad, x2.grad) and torch.equal(lin.weight.grad, plain.weight.grad)


def test_the_reordered_weight_follows_the_weight():
    lin = layer()
    x = torch.randn(4, 48)
    with torch.no_grad():
        before = lin(x)
        lin.weight.mul_(2)  # an optimizer step changes the weight in place
        assert torch.allclose(lin(x), 2 * before, rtol=1e-5, atol=1e-6)
        lin.load_state_dict(layer(seed=1).state_dict())
        torch.testing.assert_close(lin(x), F.linear(x, layer(seed=1).weight), rtol=1e-5, atol=1e-6)


def test_reordering_off_autocast_and_copies():
    lin = layer()
    x = torch.randn(4, 48)
    with torch.no_grad():
        with reordering(False):
            assert torch.equal(lin(x), F.linear(x, lin.weight))
        lin(x)
        assert lin._reordered is not None
        twin = copy.deepcopy(lin)  # the reordered copy stays behind; the twin makes its own
        assert twin._reordered is None and torch.equal(twin(x), lin(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert lin(x).dtype == torch.bfloat16  # autocast is F.linear's
    assert list(lin.state_dict()) == ["weight"]


def test_a_tiny_product_stays_on_f_linear(monkeypatch):
    monkeypatch.setattr(linear, "SMALL", 48 * 80 * 100)  # multiply-adds of 100 rows
    lin = layer()
    with torch.no_grad():
        assert torch.equal(lin(torch.ones(99, 48)), F.linear(torch.ones(99, 48), lin.weight))
        assert lin._reordered is None
        lin(torch.ones(100, 48))
        assert lin._reordered is not None


@pytest.mark.parametrize("value, reorders", [("0", False), ("1", True), ("auto", linear.PAYS),
                                             (None, linear.PAYS)])
def test_the_environment_turns_reordering_off_for_the_process(value, reorders):
    env = {k: v for k, v in os.environ.items() if k != "MODERNBERT_MINI_ONEDNN"}
    if value is not None:
        env["MODERNBERT_MINI_ONEDNN"] = value
    code = ("import torch; from modernbert_mini import linear; layer = linear.Linear(768, 768)\n"
            "with torch.no_grad(): print(layer.reorders(torch.ones(4096, 768)))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(reorders and linear.ONEDNN)


def test_a_bad_environment_value_says_what_is_allowed():
    env = {**os.environ, "MODERNBERT_MINI_ONEDNN": "off"}
    out = subprocess.run([sys.executable, "-c", "import modernbert_mini.linear"], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "MODERNBERT_MINI_ONEDNN must be 0" in out.stderr
    assert "reordered weights" in out.stderr  # oneDNN's word: "packed" is sequence packing


def test_reordering_pays_only_with_avx512(monkeypatch):
    """By default the reordered-weight path runs where PyTorch dispatches AVX-512 kernels, not on an
    AVX2-only CPU, where it measured slower than the BLAS."""
    for capability, pays in (("AVX512", True), ("AVX512_BF16", True), ("AVX2", False), ("DEFAULT", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert linear._cpu_has_avx512() is pays

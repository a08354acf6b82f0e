"""nn.Linear, with its weight reordered for the CPU's vector units when no gradient is needed.

Most of a ModernBERT forward is matrix products with the layers' weights (chapter 12). On the
CPU, PyTorch sends a float32 product to its BLAS (MKL in the pip wheels). PyTorch also ships
oneDNN, whose inference kernels multiply by a weight that was reordered once into the blocked
layout they read (`torch.ops.mkldnn._reorder_linear_weight`). Whether that pays depends on the
CPU. On an AMD EPYC Zen 5, with 2 threads at the base model's shapes: 350-450 GFLOP/s with the
reordered weight against MKL's 170-210 (MKL runs its AVX2 kernels on AMD CPUs, oneDNN its
AVX-512 ones). On an AMD EPYC Zen 3, which has AVX2 only, the reordered path was slower (0.85x on
chapter 12's two-layer model, one thread); on an Intel Xeon with AVX-512, where MKL uses AVX-512
too, it bought much less than on the Zen 5. So by default the reordered path is used only where
PyTorch's CPU dispatch runs AVX-512 kernels (`torch.backends.cpu.get_cpu_capability()`). The
numbers are float32 products too, rounded in another order: they differ from F.linear's by
float32 rounding. A row's result does not depend on how many rows are in the product (also
checked).

`Linear` is an nn.Linear (the same parameter, the same state dict). Its forward takes the
reordered path only when all of these hold:

- the input is a float32 CPU tensor, CPU autocast is off, and oneDNN's ops are in this PyTorch;
- the product is not tiny (`SMALL` multiply-adds or more: below that the call costs more);
- autograd has nothing to record (`torch.no_grad()` or `torch.inference_mode()`, or nothing
  requires a gradient): oneDNN's op has no backward;
- torch.compile is not tracing the model (its own freezing lays weights out itself);
- reordering is on: by default where the CPU has AVX-512 (`PAYS`); `with reordering(False):` or
  `with reordering(True):` switches it for a while, and the environment variable
  `MODERNBERT_MINI_ONEDNN=0` or `=1` for the whole process (0 also shows that the book's checked
  outputs do not depend on the kernels: another CPU's would round differently).

The reordered copy is kept, and made again when the weight changes (an optimizer step,
`load_state_dict`, a move): one more copy of the weight in memory while it is kept.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F
from torch import nn


def _cpu_has_avx512() -> bool:
    try:
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    except AttributeError:  # a PyTorch without the query
        return False


PAYS = _cpu_has_avx512()  # where reordering beat the BLAS in our measurements (the docstring)


def _reordering_from_environment() -> bool:
    value = os.environ.get("MODERNBERT_MINI_ONEDNN", "auto")
    if value not in ("0", "1", "auto"):
        raise ValueError(f"MODERNBERT_MINI_ONEDNN must be 0 (F.linear only), 1 (oneDNN with "
                         f"reordered weights in CPU inference) or auto (reordered where the CPU "
                         f"has AVX-512, the default), got {value!r}")
    return PAYS if value == "auto" else value == "1"


_REORDERING = _reordering_from_environment()
ROWS_HINT = 4096  # the row count oneDNN lays the weight out for; any row count runs on it
SMALL = 2 ** 21  # multiply-adds: below this, oneDNN's call overhead (about 20 us here) costs more
# than it saves (measured: 64 -> 96 on 64 rows 0.5x the speed of F.linear, 768 -> 2304 on 1 row even)


@contextlib.contextmanager
def reordering(on: bool):
    """Turn the reordered-weight CPU path of every `Linear` on or off for a while."""
    global _REORDERING
    before, _REORDERING = _REORDERING, on
    try:
        yield
    finally:
        _REORDERING = before


def _onednn_here() -> bool:
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight"))


ONEDNN = _onednn_here()


def _cpu_autocast() -> bool:
    """Is CPU autocast on (F.linear would run in its lower dtype)?"""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


class Linear(nn.Linear):
    """y = x W^T + b; on the CPU in inference, through oneDNN with W reordered once."""

    _reordered: tuple | None = None  # (the weight's identity, its reordered copy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if self.reorders(x):
            return torch.ops.mkldnn._linear_pointwise(x, self._reordered_weight(), self.bias,
                                                      "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def __getstate__(self):  # copies and pickles leave the reordered weight out: it is remade
        state = self.__dict__.copy()
        state.pop("_reordered", None)
        return state

    def reorders(self, x: torch.Tensor) -> bool:
        """Would this input take the reordered-weight path?"""
        if torch.compiler.is_compiling() or not (_REORDERING and ONEDNN):
            return False  # (under compile, first: tracing stops at what follows)
        w = self.weight
        return (x.dtype == torch.float32 == w.dtype and x.device.type == "cpu" == w.device.type
                and x.numel() * w.shape[0] >= SMALL and not w.is_inference() and not _cpu_autocast()
                and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)))

    def _reordered_weight(self) -> torch.Tensor:
        w = self.weight
        identity = (w.data_ptr(), w._version, w.shape)  # changes when the weight does
        if self._reordered is None or self._reordered[0] != identity:
            with torch.no_grad():
                self._reordered = (identity, torch.ops.mkldnn._reorder_linear_weight(w.detach(), ROWS_HINT))
        return self._reordered[1]

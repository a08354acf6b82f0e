"""What this machine offers: device, compute capability, bf16, FlashAttention-2, Triton.

Every chapter's first code cell prints `summary()`, so a reader sees at once which paths the
package will take here. The rules follow the hardware, not what a library is willing to emulate:

- bf16 only on a CUDA GPU of compute capability >= 8.0 (A100, L4, H100). A T4 (7.5) can emulate
  bf16, slowly; we count that as no. On the CPU we stay in fp32 (CPUs without native bf16 units
  run bf16 matrix products far slower than fp32).
- FlashAttention-2 (the optional `flash-attn` package, installed as its own step with
  `pip install flash-attn --no-build-isolation`, see the README) needs CUDA and capability >= 8.0.
- Triton kernels (chapter 7) run on a CUDA GPU of capability >= 7.0 (Triton supports nothing
  older), or on the CPU in the interpreter when the environment variable TRITON_INTERPRET=1 is
  set. Below 8.0 (a T4) they run without tensor cores, so the backends pick PyTorch's kernels there.

This module knows the hardware, not the attention backends (chapters 4, 6 and 7): backends.py asks
it what the machine offers and decides which of them run (`backends.runnable`, also reachable as
`backends.runnable(detect())`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import platform
from dataclasses import dataclass

import torch

MIN_CAPABILITY_BF16 = (8, 0)  # bf16 matrix units: A100 (8.0), L4 (8.9), H100 (9.0); a T4 (7.5) emulates
MIN_CAPABILITY_FLASH_ATTN = (8, 0)  # FlashAttention-2's own requirement
MIN_CAPABILITY_TRITON = (7, 0)  # below (P100, 6.0) Triton does not compile at all
MIN_CAPABILITY_TRITON_DOT = (8, 0)  # since Triton 3.2, tl.dot below 8.0 runs on FMA units, no tensor cores


# The hardware does not change while a model runs, and torch.compile cannot trace a read of it
# (dynamo: "torch.* op returned non-Tensor" for torch.cuda.get_device_capability or _name): these
# reads run once per call at trace time and enter the graph as constants.
@torch.compiler.assume_constant_result
def cuda_capability(device: torch.device | str | None = None) -> tuple[int, int] | None:
    """(major, minor) of a CUDA device (the current one for None), or None without CUDA."""
    if device is not None and torch.device(device).type != "cuda":
        return None
    if not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(device))


def native_bf16(capability: tuple[int, int] | None) -> bool:
    """bf16 where the GPU has bf16 units, never by emulation.

    `torch.cuda.is_bf16_supported()` answers True on a T4 too (it counts emulation), so the rule
    reads the capability. The CPU (capability None) stays in fp32.
    """
    return capability is not None and tuple(capability) >= MIN_CAPABILITY_BF16


@dataclass(frozen=True)
class Runtime:
    device: str  # "cuda", "mps" or "cpu"
    device_name: str  # "NVIDIA A100-SXM4-40GB", or the CPU's name
    capability: tuple[int, int] | None  # CUDA compute capability, None off CUDA
    bf16: bool  # native bf16 matrix units
    flash_attn: bool  # the flash-attn package is installed and this GPU can run it
    triton: bool  # Triton is installed and has something to run on (a GPU >= 7.0 or the interpreter)
    torch_version: str
    cpu_threads: int

    @property
    def dtype(self) -> torch.dtype:
        """The dtype to train and run in here: bf16 where it is native, else fp32."""
        return torch.bfloat16 if self.bf16 else torch.float32

    def summary(self) -> str:
        """One line: what runs here."""
        where = self.device_name if self.capability is None else (
            f"{self.device_name} (capability {self.capability[0]}.{self.capability[1]})")
        yes = lambda flag: "yes" if flag else "no"  # noqa: E731
        return (f"{self.device}: {where} | torch {self.torch_version} | "
                f"dtype {str(self.dtype).removeprefix('torch.')} | bf16 {yes(self.bf16)} | "
                f"flash-attn {yes(self.flash_attn)} | triton {yes(self.triton)}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


@torch.compiler.assume_constant_result  # asked at forward time, also while torch.compile traces
@functools.cache
def flash_attn_importable() -> bool:
    """The flash-attn package is installed and imports (a wheel built for another torch fails)."""
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        importlib.import_module("flash_attn")
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def _flash_attn_usable(capability: tuple[int, int] | None) -> bool:
    if capability is None or capability < MIN_CAPABILITY_FLASH_ATTN:
        return False
    return flash_attn_importable()


@torch.compiler.assume_constant_result  # asked at forward time, also while torch.compile traces
@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_usable(capability: tuple[int, int] | None) -> bool:
    """Triton is installed and has something to run on: a CUDA GPU of capability >= 7.0
    (capability given), or the CPU in the interpreter (capability None, TRITON_INTERPRET=1)."""
    if not triton_installed():
        return False
    if capability is not None:
        return tuple(capability) >= MIN_CAPABILITY_TRITON
    return os.environ.get("TRITON_INTERPRET") == "1"


def detect() -> Runtime:
    """Look at this machine once and say what it can run."""
    if torch.cuda.is_available():
        device = "cuda"
        name = torch.cuda.get_device_name(0)
        capability = cuda_capability("cuda:0")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device, name, capability = "mps", "Apple GPU", None
    else:
        device, name, capability = "cpu", _cpu_name(), None
    return Runtime(
        device=device,
        device_name=name,
        capability=capability,
        bf16=native_bf16(capability),
        flash_attn=_flash_attn_usable(capability),
        triton=_triton_usable(capability),
        torch_version=torch.__version__,
        cpu_threads=torch.get_num_threads(),
    )


def summary() -> str:
    """The one-line summary each notebook prints first."""
    return detect().summary()


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on a CUDA GPU with native bf16 (capability >= 8.0); everywhere else fp32,
    an autocast that is off. The training loops and fine-tuning run their forward under it."""
    on = native_bf16(cuda_capability(device))  # cheap: it runs every step, detect() reads files
    return torch.autocast("cuda" if on else "cpu", dtype=torch.bfloat16, enabled=on)

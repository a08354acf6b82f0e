"""What this machine offers: device, compute capability, bf16, FlashAttention-2, Triton.

Every chapter's first code cell prints `summary()`, so a reader sees at once which paths the
package will take here. The rules follow the hardware, not what a library is willing to emulate:

- bf16 only on a CUDA GPU of compute capability >= 8.0 (A100, L4, H100). A T4 (7.5) can emulate
  bf16, slowly; we count that as no. On the CPU we stay in fp32 (CPUs without native bf16 units
  run bf16 matrix products far slower than fp32).
- FlashAttention-2 (the optional `flash-attn` package) needs CUDA and capability >= 8.0.
- Triton kernels (chapter 7) run on a CUDA GPU, or on the CPU in the interpreter when the
  environment variable TRITON_INTERPRET=1 is set.

The attention backends themselves live with attention (chapters 4, 6 and 7); this module only says
which of them this machine can run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
from dataclasses import dataclass

import torch

MIN_CAPABILITY_BF16 = (8, 0)
MIN_CAPABILITY_FLASH_ATTN = (8, 0)


@dataclass(frozen=True)
class Runtime:
    device: str  # "cuda", "mps" or "cpu"
    device_name: str  # "NVIDIA A100-SXM4-40GB", or the CPU's name
    capability: tuple[int, int] | None  # CUDA compute capability, None off CUDA
    bf16: bool  # native bf16 matrix units
    flash_attn: bool  # the flash-attn package is installed and this GPU can run it
    triton: bool  # Triton is installed and has something to run on (a GPU or the interpreter)
    torch_version: str
    cpu_threads: int

    @property
    def dtype(self) -> torch.dtype:
        """The dtype to train and run in here: bf16 where it is native, else fp32."""
        return torch.bfloat16 if self.bf16 else torch.float32

    @property
    def attention_backends(self) -> tuple[str, ...]:
        """Names of the attention backends (backends.py) that run here, most readable first."""
        from .backends import BACKENDS  # backends asks runtime about flash-attn: import late

        installed = {"flash_attn": self.flash_attn, "triton": self.triton}  # this Runtime's facts
        return tuple(name for name, backend in BACKENDS.items()
                     if self.device in backend.devices and self.dtype in backend.dtypes
                     and installed.get(name, True))

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


def _flash_attn_usable(capability: tuple[int, int] | None) -> bool:
    if capability is None or capability < MIN_CAPABILITY_FLASH_ATTN:
        return False
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:  # installed is not enough: a wheel built for another torch fails on import
        importlib.import_module("flash_attn")
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


def _triton_usable(on_cuda: bool) -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    return on_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def detect() -> Runtime:
    """Look at this machine once and say what it can run."""
    if torch.cuda.is_available():
        device = "cuda"
        name = torch.cuda.get_device_name(0)
        capability = tuple(torch.cuda.get_device_capability(0))
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device, name, capability = "mps", "Apple GPU", None
    else:
        device, name, capability = "cpu", _cpu_name(), None
    on_cuda = capability is not None
    return Runtime(
        device=device,
        device_name=name,
        capability=capability,
        bf16=on_cuda and capability >= MIN_CAPABILITY_BF16,
        flash_attn=_flash_attn_usable(capability),
        triton=_triton_usable(on_cuda),
        torch_version=torch.__version__,
        cpu_threads=torch.get_num_threads(),
    )


def summary() -> str:
    """The one-line summary each notebook prints first."""
    return detect().summary()


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on a CUDA GPU with native bf16 (capability >= 8.0); everywhere else fp32,
    an autocast that is off. The training loops and fine-tuning run their forward under it."""
    on = device.type == "cuda" and detect().bf16
    return torch.autocast("cuda" if on else "cpu", dtype=torch.bfloat16, enabled=on)

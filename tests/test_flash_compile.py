"""The Triton kernels of flash.py, compiled on the CPU for the GPUs readers meet. No GPU needed.

Triton ships its own ptxas, so `triton.compile` turns a kernel into a cubin for any NVIDIA
target without a driver: a T4 (sm_75), an A100 (sm_80), an L4 (sm_89), an H100 (sm_90). Each of
the three kernels (forward, dK/dV, dQ) is compiled at ModernBERT's shape (head dim 64, the
default tile for its dtype, a local layer) with the launch options flash.py uses on that GPU
(`flash.LAUNCH`: warps and pipelining stages per generation), and must fit
the target's shared memory per block, the opt-in maximum of the CUDA C Programming Guide
(technical specifications): 64 KiB on 7.5, 163 KiB on 8.0, 99 KiB on 8.6/8.9, 227 KiB on 9.0.
From 8.0 on, tl.dot must run on tensor cores (an mma instruction in the PTX).

The compiling runs in a fresh process without TRITON_INTERPRET: the tests' own process may have
Triton's interpreter on (conftest.py), and then Triton's helpers cannot be compiled.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED_PER_BLOCK = {75: 64 * 1024, 80: 163 * 1024, 89: 99 * 1024, 90: 227 * 1024}
# (capability, dtype): fp16 (the model's half precision) everywhere, fp32 and bf16 where they run
CASES = [(75, "float16"), (80, "float16"), (89, "float16"), (90, "float16"),
         (80, "float32"), (90, "bfloat16")]
HEADS, HEAD_DIM, WINDOW = 12, 64, 128
ROOT = Path(__file__).resolve().parent.parent


def compile_all() -> dict:
    """{"skip": why} where this Triton cannot compile for NVIDIA here, else
    {"kernels": [{"kernel", "capability", "dtype", "block", "shared", "mma"}, ...]}."""
    try:
        import torch
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as error:
        return {"skip": f"triton is not installed ({error})"}
    import triton.backends
    if "nvidia" not in triton.backends.backends:
        return {"skip": f"this Triton ({triton.__version__}) has no NVIDIA backend"}
    ptxas = Path(sys.modules[triton.backends.backends["nvidia"].compiler.__module__].__file__)
    ptxas = ptxas.parent / "bin" / "ptxas"
    if not ptxas.exists() and not os.environ.get("TRITON_PTXAS_PATH"):
        return {"skip": f"this Triton ({triton.__version__}) ships no ptxas ({ptxas})"}
    from modernbert_mini import flash

    results = []
    for capability, dtype_name in CASES:
        forward, backward = flash.launch_options(divmod(capability, 10))  # this GPU's row
        kernels = {flash._forward_kernel: forward, flash._backward_dkdv_kernel: backward,
                   flash._backward_dq_kernel: backward}
        dtype = getattr(torch, dtype_name)
        q = torch.empty(1, HEADS, HEAD_DIM, dtype=dtype, device="meta")  # (T, nh, hd): the shape
        block = flash._default_block_size(q)
        constants = flash._constants(q, WINDOW, block)
        for kernel, launch in kernels.items():
            jitted = triton.jit(kernel)
            source = ASTSource(jitted, _signature(jitted, dtype_name, constants), constexprs=constants)
            compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32), options=launch)
            results.append(dict(kernel=kernel.__name__, capability=capability, dtype=dtype_name,
                                block=block, stages=launch["num_stages"], shared=compiled.metadata.shared,
                                mma="mma" in compiled.asm["ptx"]))
    return {"kernels": results}


def _signature(jitted, dtype_name: str, constants: dict) -> dict:
    """Triton's type of each argument, as a launch with (T, nh, hd) tensors of dtype would give."""
    element = {"float16": "*fp16", "bfloat16": "*bf16", "float32": "*fp32"}[dtype_name]
    types = {}
    for name in jitted.arg_names:
        if name in constants:
            types[name] = "constexpr"
        elif name in ("LSE", "DELTA"):  # float32 statistics, (nh, T)
            types[name] = "*fp32"
        elif name == "CU_SEQLENS":
            types[name] = "*i32"
        elif name == "scale":
            types[name] = "fp32"
        elif name.isupper() and name != "T":  # Q, K, V, O, DO, DK, DV, DQ
            types[name] = element
        else:  # strides, T, head_dim, half
            types[name] = "i32"
    return types


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, without its warning
    run = subprocess.run([sys.executable, __file__], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    return result["kernels"]


def test_every_kernel_compiles_for_every_target(compiled):
    names = {"_forward_kernel", "_backward_dkdv_kernel", "_backward_dq_kernel"}
    assert {(k["kernel"], k["capability"], k["dtype"]) for k in compiled} == {
        (name, capability, dtype) for name in names for capability, dtype in CASES}


def test_shared_memory_fits_each_target(compiled):
    too_big = [k for k in compiled if k["shared"] > SHARED_PER_BLOCK[k["capability"]]]
    print("\n".join(f"sm_{k['capability']} {k['dtype']:9} block {k['block']:3} stages {k['stages']} "
                     f"{k['kernel']:22} shared {k['shared']:6} B mma {k['mma']}" for k in compiled))
    assert not too_big, too_big
    for k in compiled:
        assert k["shared"] > 0, k  # the tiles go through shared memory: 0 would mean no tl.dot


def test_from_8_0_half_precision_tl_dot_runs_on_tensor_cores(compiled):
    """fp16/bf16 on 8.0+: mma. fp32 is multiplied exactly ("ieee", not TF32), on the FMA units."""
    without = [k for k in compiled if k["capability"] >= 80 and k["dtype"] != "float32"
               and not k["mma"]]
    assert not without, without
    assert not any(k["mma"] for k in compiled if k["dtype"] == "float32")


def test_the_default_tile_is_the_real_one(compiled):
    """fp16/bf16 at head dim 64 tile by 64 rows, fp32 by 32 (16 KiB of q rows either way)."""
    for k in compiled:
        assert k["block"] == (32 if k["dtype"] == "float32" else 64), k


if __name__ == "__main__":  # the fresh process the fixture starts
    print(json.dumps(compile_all()))

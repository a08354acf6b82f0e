"""Measured speed and memory against the reference ModernBERT. Chapter 12; `make bench`.

Both models get the same weights, run in the same process with the same thread count, take
turns (so a slow moment of the machine hits both), and keep their best time. Cases:

- (a) full:     8 x 512, no padding;
- (b) varlen:   8 sequences of 64..512 tokens (mean 256), padded to 512;
- (c) long:     one sequence of 8192 tokens (a reduced-depth base on the CPU: both sides alike).

Reported: real tokens per second, the ratio to the reference, the peak memory a forward adds
(Linux's resident high-water mark, reset before the call, above what was resident then), and model FLOP
utilisation: the FLOPs the model needs (matrix products, attention inside the window only) per
second, over this machine's measured peak matrix-product rate (the faster of its BLAS and the
packed oneDNN path of linear.py, both measured here). On a CUDA GPU the same script adds bf16
and flash-attn columns.

    python -m modernbert_mini.bench [--out out/bench] [--cases full varlen long] [--compile]

`--compile` adds rows for our model under torch.compile (Inductor, frozen weights; not for the
long case). On the 2-core CPU of this project it did not pay: measured 0.85x the reference on
(a) and 0.80x on (b), against eager's 1.09x and 2.23x in the same run, after 40 s or more of
compiling (measured before linear.py's packed weights, which eager now uses and a compiled
model does not: there Inductor handles the weights itself).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from . import runtime
from .config import ModernBertConfig
from .linear import Linear
from .model import ModernBertModel


# ----------------------------------------------------------------------------- inputs
def make_case(name: str, config: ModernBertConfig, seed: int = 0):
    """(input_ids, attention_mask or None) of a named case."""
    g = torch.Generator().manual_seed(seed)
    if name == "full":
        lengths, S = [512] * 8, 512
    elif name == "varlen":
        lengths, S = [512, 64, 320, 128, 448, 192, 256, 128], 512  # mean 256
    elif name == "long":
        lengths, S = [8192], 8192
    else:
        raise ValueError(f"unknown case {name!r}: use full, varlen or long")
    ids = torch.randint(5, config.vocab_size, (len(lengths), S), generator=g)
    mask = torch.zeros(len(lengths), S, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    ids[mask == 0] = config.pad_token_id
    return ids, (None if bool(mask.all()) else mask)


def model_flops(config: ModernBertConfig, lengths: list[int]) -> float:
    """FLOPs of one forward that the model needs: matrix products, attention in the window."""
    H, I = config.hidden_size, config.intermediate_size
    per_token = 2 * (3 * H * H + H * H + 2 * H * I + I * H)  # Wqkv, Wo, Wi, Wo
    total = 0.0
    for n in lengths:
        for layer in range(config.num_hidden_layers):
            half = n if config.is_global_layer(layer) else config.local_attention // 2
            # query i sees min(i, half) keys before it, min(n - 1 - i, half) after, and itself
            before = n * (n - 1) // 2 if n <= half + 1 else half * (half + 1) // 2 + half * (n - 1 - half)
            pairs = n + 2 * before  # (query, key) pairs
            total += n * per_token + 4 * H * pairs  # q k^T and weights v: 2 H FLOPs a pair each
    return total


def peak_matmul_flops(size: int = 2048, repeats: int = 5, device="cpu") -> dict:
    """This machine's fp32 matrix-product rates, FLOP/s (best of a few): the BLAS's (a @ b, what
    the reference's layers get), the packed oneDNN path's (what ours get in CPU inference,
    linear.py), and the higher of the two, which the MFU column divides by."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    packed = Linear(size, size, bias=False).to(device)
    rates = {}
    with torch.inference_mode():
        for name, product in (("blas", lambda: a @ b), ("packed", lambda: packed(a))):
            if name == "packed" and not packed.packs(a):
                continue  # no packed path here (a GPU, or no oneDNN)
            product()
            best = math.inf
            for _ in range(repeats):
                start = time.perf_counter()
                product()
                if device != "cpu":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - start)
            rates[name] = 2 * size ** 3 / best
    rates["peak"] = max(rates.values())
    return rates


# ----------------------------------------------------------------------------- measuring
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """Linux's high-water mark of resident memory (VmHWM), since the last reset."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM"))
    return int(line.split()[1]) * 1024


def _release_freed_memory() -> None:
    """Hand memory that is freed but kept by the C allocator back to the system, so that what
    one call freed is not counted as "already in use" before the next."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def peak_memory(run, device: str | torch.device = "cpu") -> int:
    """Bytes a call adds at its peak on `device`, where its tensors live: CUDA's allocator stats,
    or on the CPU (Linux) the resident memory's high-water mark (reset before the call), above
    what was resident before it. A GPU runtime's CPU work is measured on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    _release_freed_memory()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    before = _rss()
    run()
    return _peak_rss() - before


def best_times(runs: dict, repeats: int) -> dict:
    """Each call's best wall time; the calls take turns so that noise hits them alike."""
    for run in runs.values():
        run()  # warm-up
    best = {name: math.inf for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


@contextlib.contextmanager
def frozen_weights():
    """Inductor's inference mode: weights become constants, prepacked for the CPU's matmuls."""
    from torch._inductor import config as inductor_config

    with inductor_config.patch(freezing=True):
        yield


def reference_model(config: ModernBertConfig, ours: ModernBertModel, attn: str = "sdpa",
                    dtype=torch.float32):
    """transformers' ModernBertModel with our weights (loaded strictly: every one replaced)."""
    import transformers as tf
    from transformers.initialization import no_init_weights

    hf_config = tf.ModernBertConfig(**config.to_hf_dict())
    hf_config._attn_implementation = attn
    with no_init_weights():  # its random init would be overwritten: skip it (10 s -> 4 s for base)
        ref = tf.ModernBertModel(hf_config)
    ref.load_state_dict(ours.state_dict())
    return ref.to(dtype).eval()


# ----------------------------------------------------------------------------- the run
def run(cases=("full", "varlen", "long"), long_layers: int = 6, repeats: int = 3,
        device: str = "cpu", compile_ours: bool = False) -> list[dict]:
    """One row per (case, implementation)."""
    torch.manual_seed(0)
    rates = peak_matmul_flops(device=device)
    peak = rates["peak"]
    rows = []
    for case in cases:
        config = ModernBertConfig.base(attention_backend="auto")
        if case == "long":
            config = replace(config, num_hidden_layers=long_layers)
        ours = ModernBertModel(config).eval().to(device)
        ref = reference_model(config, ours).to(device)
        ids, mask = make_case(case, config)
        ids = ids.to(device)
        mask = None if mask is None else mask.to(device)
        lengths = (mask.sum(1).tolist() if mask is not None else [ids.shape[1]] * ids.shape[0])
        tokens, flops = sum(lengths), model_flops(config, lengths)
        impls = {"transformers": lambda: ref(ids, attention_mask=mask),
                 "modernbert_mini": lambda: ours(ids, mask)}
        if compile_ours and case != "long":
            compiled = torch.compile(ours, fullgraph=True)
            impls["modernbert_mini, compiled"] = lambda: compiled(ids, mask)
        if device == "cuda" and runtime.detect().bf16:  # the GPU columns: bf16, flash-attn
            ours16 = copy.deepcopy(ours).to(torch.bfloat16)  # "auto": flash-attn, else Triton
            ref16 = copy.deepcopy(ref).to(torch.bfloat16)
            impls["transformers, bf16 sdpa"] = lambda: ref16(ids, attention_mask=mask)
            impls["modernbert_mini, bf16"] = lambda: ours16(ids, mask)
            if runtime.detect().flash_attn:
                ref_fa = reference_model(config, ours, "flash_attention_2", torch.bfloat16).to(device)
                impls["transformers, bf16 flash-attn"] = lambda: ref_fa(ids, attention_mask=mask)
        with torch.inference_mode(), frozen_weights():
            compile_start = time.perf_counter()
            outputs = {name: call() for name, call in impls.items()}  # compiles, once
            compile_seconds = time.perf_counter() - compile_start
            seconds = best_times(impls, repeats if case != "long" else max(1, repeats - 1))
            memory = {name: peak_memory(call, device) for name, call in impls.items()}
        real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        expected = outputs["transformers"].last_hidden_state[real].float()
        for name in impls:
            rows.append(dict(case=case, impl=name, layers=config.num_hidden_layers,
                             shape=f"{ids.shape[0]} x {ids.shape[1]}", tokens=tokens,
                             seconds=seconds[name], tokens_per_s=tokens / seconds[name],
                             speedup=seconds["transformers"] / seconds[name],
                             peak_mib=memory[name] / 2 ** 20,
                             memory_ratio=memory[name] / max(memory["transformers"], 1),
                             mfu=flops / seconds[name] / peak,
                             max_abs_diff=(outputs[name].last_hidden_state[real].float() - expected)
                             .abs().max().item()))
        packed = sum(m.weight.numel() * m.weight.element_size() for m in ours.modules()
                     if isinstance(m, Linear) and m._packed is not None)
        next(r for r in rows if r["case"] == case and r["impl"] == "modernbert_mini")[
            "packed_weights_mib"] = packed / 2 ** 20
        if "modernbert_mini, compiled" in impls:
            rows[-1]["first_call_seconds"] = compile_seconds
        del ours, ref, impls
        gc.collect()
    for row in rows:
        row.update({f"{name}_matmul_gflops": rate / 1e9 for name, rate in rates.items()})
    return rows


def table(rows: list[dict]) -> str:
    head = ("| case | implementation | shape (layers) | tokens/s | x reference | peak MiB | "
            "x reference | MFU | max abs diff |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n")
    return head + "".join(
        f"| {r['case']} | {r['impl']} | {r['shape']} ({r['layers']}) | {r['tokens_per_s']:,.0f} | "
        f"{r['speedup']:.2f} | {r['peak_mib']:,.0f} | {r['memory_ratio']:.2f} | {r['mfu']:.0%} | "
        f"{r['max_abs_diff']:.1e} |\n" for r in rows)


def packed_note(rows: list[dict]) -> str:
    """The packed weights (linear.py) stay in memory between calls: not in the peak column."""
    kept = [r for r in rows if r.get("packed_weights_mib")]
    return "".join(f"\n{r['case']}: {r['impl']} keeps {r['packed_weights_mib']:,.0f} MiB of packed "
                   "weights between calls (a second copy of its weights), not in the peak column"
                   for r in kept) + ("\n" if kept else "")


def plot(rows: list[dict], path: Path) -> None:
    from .viz import file_figure

    cases = list(dict.fromkeys(r["case"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig = file_figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    width = 0.8 / len(impls)
    for i, impl in enumerate(impls):
        for ax, key in zip(axes, ("speedup", "memory_ratio")):
            values = [next((r[key] for r in rows if r["case"] == c and r["impl"] == impl), 0)
                      for c in cases]
            ax.bar([j + i * width for j in range(len(cases))], values, width, label=impl)
    for ax, title in zip(axes, ("tokens/s, x transformers", "peak memory, x transformers")):
        ax.axhline(1, color="k", lw=0.8)
        ax.set_xticks([j + width * (len(impls) - 1) / 2 for j in range(len(cases))], cases)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--cases", nargs="+", default=["full", "varlen", "long"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--long-layers", type=int, default=6)
    parser.add_argument("--compile", action="store_true", help="add our model under torch.compile")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = run(args.cases, args.long_layers, args.repeats, device, args.compile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = (f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, peak fp32 "
            f"matmul {rows[0]['peak_matmul_gflops']:.0f} GFLOP/s "
            f"(BLAS {rows[0]['blas_matmul_gflops']:.0f}"
            + (f", oneDNN packed {rows[0]['packed_matmul_gflops']:.0f}" if "packed_matmul_gflops"
               in rows[0] else "") + ")\n\n" + table(rows) + packed_note(rows))
    (out / "bench.md").write_text(text)
    (out / "bench.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "bench.png")
    print(text)
    print(f"written to {out}/bench.md, bench.json, bench.png")


if __name__ == "__main__":
    main()

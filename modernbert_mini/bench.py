"""Measured speed and memory against the reference ModernBERT. Chapter 12; `make bench`.

Both models get the same weights, run in the same process with the same thread count, take
turns (so a slow moment of the machine hits both), and keep their best time. Cases:

- (a) full:     8 x 512, no padding;
- (b) varlen:   8 sequences of 64..512 tokens (mean 256), padded to 512;
- (c) long:     one sequence of 8192 tokens (a reduced-depth base on the CPU: both sides alike);
- (d) train:    one pretraining step (forward, backward, optimizer step) on 64 short documents of
                16 to 128 tokens with 30% of the tokens as targets, the mini model by default:
                ours packed (no padding), sparse prediction, StableAdamW; transformers' ModernBERT
                on the same documents padded to the longest with an attention mask, as
                DataCollatorForLanguageModeling feeds it, sparse prediction on too, torch's AdamW.

Reported: real tokens per second, the ratio to the reference, the peak memory a forward adds
(Linux's resident high-water mark, reset before the call, above what was resident then), and model FLOP
utilisation: the FLOPs the model needs (matrix products, attention inside the window only) per
second, over this machine's measured peak matrix-product rate in the row's dtype (on the CPU the
faster of its BLAS and linear.py's oneDNN path with reordered weights, both measured here; on a
GPU cuBLAS's fp32 without TF32, and its bf16 or fp16 on tensor cores). Each row also keeps the time
of its implementation's first call (`first_call_seconds`: Triton's or Inductor's compiling,
cuBLAS's warm-up), apart from the best time.

On a CUDA GPU every case runs in fp32 and in half precision (bf16 where the GPU has bf16 units,
capability >= 8.0, else fp16), each beside transformers' SDPA in the same dtype: ours with every
attention backend that runs there (eager, sdpa, triton, flash_attn) and "auto", so the table
shows what the fast kernels save over the formula written out, in time and memory.

    python -m modernbert_mini.bench [--out out/bench] [--cases full varlen long train] [--compile]
                                    [--model base|mini]

The files in --out are rewritten after every case (bench.md, bench.json, bench.png), so a run
cut short keeps the cases it finished.

`--compile` adds rows for our model under torch.compile (Inductor, frozen weights; not for the
long case). On the 2-core CPU of this project it did not pay: measured 0.85x the reference on
(a) and 0.80x on (b), against eager's 1.09x and 2.23x in the same run, after 40 s or more of
compiling (measured before linear.py's reordered weights, which eager now uses and a compiled
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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import backends, runtime
from .attention import Attention
from .config import ModernBertConfig
from .linear import Linear, reordering
from .mlm import IGNORE_INDEX, MASK_RATE
from .model import ModernBertForMaskedLM, ModernBertModel
from .optim import StableAdamW, param_groups


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


def peak_matmul_flops(size: int = 2048, repeats: int = 5, device="cpu",
                      dtype: torch.dtype = torch.float32) -> dict:
    """This machine's matrix-product rates in `dtype`, FLOP/s (best of a few): the BLAS's (a @ b,
    what the reference's layers get; cuBLAS on a GPU, fp32 without TF32 as PyTorch's default),
    the oneDNN path's with a reordered weight (linear.py: what ours get in CPU inference where it
    pays, on CPUs with AVX-512; measured on any CPU with oneDNN, to compare), and the higher of the
    two, which the MFU column divides by."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    layer = Linear(size, size, bias=False).to(device=device, dtype=dtype)
    rates = {}
    with torch.inference_mode(), reordering(True):
        for name, product in (("blas", lambda: a @ b), ("reordered", lambda: layer(a))):
            if name == "reordered" and not layer.reorders(a):
                continue  # no oneDNN path here (a GPU, or no oneDNN)
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


def peak_memory(run, device: str | torch.device = "cpu") -> float:
    """Bytes a call adds at its peak on `device`, where its tensors live: CUDA's allocator stats,
    or on the CPU (Linux) the resident memory's high-water mark (reset before the call), above
    what was resident before it. A GPU runtime's CPU work is measured on the CPU. Where the
    high-water mark cannot be reset (not Linux, or /proc not writable), the call still runs and
    the answer is NaN: no number rather than a wrong one."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    _release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
    except OSError:
        run()
        return math.nan
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
    """Inductor's inference mode: weights become constants, reordered once for the CPU's matmuls."""
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


# ----------------------------------------------------------------------------- a training step
TRAIN_DOCUMENTS, TRAIN_LENGTHS = 64, (16, 128)  # short documents, as pretraining's first phase


def training_case(config: ModernBertConfig, seed: int = 0):
    """64 documents of 16-128 tokens, 30% of their tokens targets (as [MASK]): (inputs, labels,
    cu_seqlens) packed, and (inputs, labels, mask) padded to the longest, the same tokens."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(TRAIN_LENGTHS[0], TRAIN_LENGTHS[1] + 1, (TRAIN_DOCUMENTS,), generator=g)
    ids = torch.randint(5, config.vocab_size, (int(lengths.sum()),), generator=g)  # (T,)
    chosen = torch.rand(ids.shape, generator=g) < MASK_RATE
    inputs = torch.where(chosen, config.mask_token_id, ids)
    labels = torch.where(chosen, ids, IGNORE_INDEX)
    cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    mask = torch.arange(int(lengths.max()))[None] < lengths[:, None]  # (N, S)
    padded = [torch.full(mask.shape, fill).masked_scatter(mask, x)
              for x, fill in ((inputs, config.pad_token_id), (labels, IGNORE_INDEX))]
    return (inputs, labels, cu_seqlens), (*padded, mask.long())


def training_rows(config: ModernBertConfig, device: str, repeats: int) -> list[dict]:
    """(d): one step of each side, same weights, same tokens and targets, taking turns."""
    config = replace(config, sparse_prediction=True, attention_backend="auto")
    (inputs, labels, cu_seqlens), (p_inputs, p_labels, mask) = (
        [x.to(device) for x in part] for part in training_case(config))
    torch.manual_seed(0)
    ours = ModernBertForMaskedLM(config).to(device).train()
    import transformers as tf  # a test dependency: imported where the reference runs, as above
    hf_config = tf.ModernBertConfig(**config.to_hf_dict())
    hf_config._attn_implementation = "sdpa"
    ref = tf.ModernBertForMaskedLM(hf_config).to(device).train()
    ref.load_state_dict(ours.state_dict())
    optimizers = {"ours": StableAdamW(param_groups(ours, 1e-5), lr=1e-4, betas=(0.9, 0.98), eps=1e-6),
                  "ref": torch.optim.AdamW(param_groups(ref, 1e-5), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)}
    longest = int(mask.sum(1).max())

    def step(model, optimizer, loss_of):
        def call():
            loss = loss_of(model)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()
        return call

    calls = {"transformers": step(ref, optimizers["ref"], lambda m: m(
                 input_ids=p_inputs, attention_mask=mask, labels=p_labels).loss),
             "modernbert_mini": step(ours, optimizers["ours"], lambda m: m(
                 inputs, labels=labels, cu_seqlens=cu_seqlens, max_seqlen=longest).loss)}
    first, first_seconds = {}, {}
    for name, call in calls.items():  # from the same weights: the same loss
        start = time.perf_counter()
        first[name] = call()
        first_seconds[name] = time.perf_counter() - start
    seconds = best_times(calls, repeats)
    memory = {name: peak_memory(call, device) for name, call in calls.items()}
    lengths = cu_seqlens.diff().tolist()
    tokens, flops = sum(lengths), 3 * model_flops(config, lengths)  # forward + backward: about 3x
    rates = peak_matmul_flops(device=device)
    return [dict(case="train", impl=name, dtype="float32", layers=config.num_hidden_layers,
                 shape=f"{len(lengths)} docs ({tokens} tokens; padded {mask.numel()})",
                 tokens=tokens, seconds=seconds[name], tokens_per_s=tokens / seconds[name],
                 first_call_seconds=first_seconds[name], reference="transformers",
                 speedup=seconds["transformers"] / seconds[name], peak_mib=memory[name] / 2 ** 20,
                 memory_ratio=memory[name] / max(memory["transformers"], 1),
                 peak_matmul_gflops_dtype=rates["peak"] / 1e9, mfu=flops / seconds[name] / rates["peak"],
                 max_abs_diff=(first[name] - first["transformers"]).abs().item(),
                 **{f"{k}_matmul_gflops": v / 1e9 for k, v in rates.items()})
            for name in calls]


# ----------------------------------------------------------------------------- the run
@dataclass
class Impl:
    """One row of a case: what is called, in which dtype, and the row it is compared with."""

    call: Callable[[], object]  # () -> an output with .last_hidden_state
    dtype: torch.dtype
    reference: str  # the transformers row of the same dtype


def _with_backend(model: ModernBertModel, backend: str, ids, mask):
    """model(ids, mask) with every attention layer on `backend` (set before each call, as the
    implementations of one model take turns)."""
    def call():
        for module in model.modules():
            if isinstance(module, Attention):
                module.backend = backend
        return model(ids, mask)
    return call


def gpu_dtypes() -> tuple[torch.dtype, ...]:
    """fp32, and the GPU's half precision: bf16 with bf16 units (>= 8.0), else fp16 (a T4)."""
    return (torch.float32, torch.bfloat16 if runtime.detect().bf16 else torch.float16)


def with_blas(call):
    """The same call with linear.Linear's reordered weights off: its matrix products through the
    BLAS, as the reference's nn.Linear runs them. Against the reference, what is left of the ratio
    is work skipped (padding, masked scores), not a faster matrix library."""
    def run():
        with reordering(False):
            return call()
    return run


def implementations(config, ours, ref, ids, mask, device, compile_ours, case) -> dict[str, Impl]:
    """The rows of one case. CPU: transformers and ours in fp32, as it runs by default and with
    its products through the BLAS (and ours compiled). GPU: per
    dtype, transformers' SDPA, ours with each attention backend that runs there and "auto",
    and transformers' flash-attn in half precision where it is installed."""
    if device != "cuda":
        impls = {"transformers": Impl(lambda: ref(ids, attention_mask=mask), torch.float32,
                                      "transformers"),
                 "modernbert_mini": Impl(lambda: ours(ids, mask), torch.float32, "transformers"),
                 "modernbert_mini, BLAS products": Impl(with_blas(lambda: ours(ids, mask)),
                                                        torch.float32, "transformers")}
        if compile_ours and case != "long":
            compiled = torch.compile(ours, fullgraph=True)
            impls["modernbert_mini, compiled"] = Impl(lambda: compiled(ids, mask), torch.float32,
                                                      "transformers")
        return impls
    impls = {}
    for dtype in gpu_dtypes():
        label = str(dtype).removeprefix("torch.")
        ref_here = ref if dtype == torch.float32 else copy.deepcopy(ref).to(dtype)
        ours_here = ours if dtype == torch.float32 else copy.deepcopy(ours).to(dtype)
        baseline = f"transformers, {label} sdpa"
        impls[baseline] = Impl(lambda r=ref_here: r(ids, attention_mask=mask), dtype, baseline)
        runs_here = backends.available(device, dtype)
        for backend in ("eager", "sdpa", "triton", "flash_attn", "auto"):
            if backend == "auto" or backend in runs_here:
                impls[f"modernbert_mini, {label} {backend}"] = Impl(
                    _with_backend(ours_here, backend, ids, mask), dtype, baseline)
        if dtype != torch.float32 and runtime.detect().flash_attn:
            ref_fa = reference_model(config, ours, "flash_attention_2", dtype).to(device)
            impls[f"transformers, {label} flash-attn"] = Impl(
                lambda: ref_fa(ids, attention_mask=mask), dtype, baseline)
    return impls


def first_calls(impls: dict[str, Impl]) -> tuple[dict, dict]:
    """Each implementation's first call: its output and its time (compiling included)."""
    outputs, seconds = {}, {}
    for name, impl in impls.items():
        start = time.perf_counter()
        outputs[name] = impl.call()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds[name] = time.perf_counter() - start
    return outputs, seconds


def run(cases=("full", "varlen", "long"), long_layers: int = 6, repeats: int = 3,
        device: str = "cpu", compile_ours: bool = False, model: str = "base",
        on_case: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """One row per (case, implementation). on_case(rows so far) runs after every case."""
    torch.manual_seed(0)
    dtypes = gpu_dtypes() if device == "cuda" else (torch.float32,)
    size = 8192 if device == "cuda" else 2048  # a GPU reaches its peak only on large products
    rates = {dtype: peak_matmul_flops(size, device=device, dtype=dtype) for dtype in dtypes}
    rows = []
    for case in cases:
        config = getattr(ModernBertConfig, model)(attention_backend="auto")
        if case == "train":
            rows += training_rows(ModernBertConfig.mini() if model == "mini" or device != "cuda"
                                  else config, device, repeats)
            if on_case is not None:
                on_case(rows)
            continue
        if case == "long":
            config = replace(config, num_hidden_layers=long_layers)
        ours = ModernBertModel(config).eval().to(device)
        ref = reference_model(config, ours).to(device)
        ids, mask = make_case(case, config)
        ids = ids.to(device)
        mask = None if mask is None else mask.to(device)
        lengths = (mask.sum(1).tolist() if mask is not None else [ids.shape[1]] * ids.shape[0])
        tokens, flops = sum(lengths), model_flops(config, lengths)
        impls = implementations(config, ours, ref, ids, mask, device, compile_ours, case)
        calls = {name: impl.call for name, impl in impls.items()}
        with torch.inference_mode(), frozen_weights():
            outputs, first_seconds = first_calls(impls)  # compiles, once
            seconds = best_times(calls, repeats if case != "long" else max(1, repeats - 1))
            memory = {name: peak_memory(call, device) for name, call in calls.items()}
        real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        for name, impl in impls.items():
            expected = outputs[impl.reference].last_hidden_state[real].float()
            rows.append(dict(case=case, impl=name, dtype=str(impl.dtype).removeprefix("torch."),
                             layers=config.num_hidden_layers,
                             shape=f"{ids.shape[0]} x {ids.shape[1]}", tokens=tokens,
                             seconds=seconds[name], tokens_per_s=tokens / seconds[name],
                             first_call_seconds=first_seconds[name], reference=impl.reference,
                             speedup=seconds[impl.reference] / seconds[name],
                             peak_mib=memory[name] / 2 ** 20,
                             memory_ratio=memory[name] / max(memory[impl.reference], 1),
                             peak_matmul_gflops_dtype=rates[impl.dtype]["peak"] / 1e9,
                             mfu=flops / seconds[name] / rates[impl.dtype]["peak"],
                             max_abs_diff=(outputs[name].last_hidden_state[real].float() - expected)
                             .abs().max().item()))
        reordered = sum(m.weight.numel() * m.weight.element_size() for m in ours.modules()
                        if isinstance(m, Linear) and m._reordered is not None)
        if reordered:
            next(r for r in rows if r["case"] == case and r["impl"] == "modernbert_mini")[
                "reordered_weights_mib"] = reordered / 2 ** 20
        for row in rows:  # the fp32 rates, as before: the header of bench.md reads them
            row.update({f"{name}_matmul_gflops": rate / 1e9
                        for name, rate in rates[torch.float32].items()})
        del ours, ref, impls, calls, outputs
        gc.collect()
        if on_case is not None:
            on_case(rows)
    return rows


def table(rows: list[dict]) -> str:
    head = ("| case | implementation | shape (layers) | tokens/s | x reference | peak MiB | "
            "x reference | MFU | max abs diff |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n")
    return head + "".join(
        f"| {r['case']} | {r['impl']} | {r['shape']} ({r['layers']}) | {r['tokens_per_s']:,.0f} | "
        f"{r['speedup']:.2f} | {r['peak_mib']:,.0f} | {r['memory_ratio']:.2f} | {r['mfu']:.0%} | "
        f"{r['max_abs_diff']:.1e} |\n" for r in rows)


def reordered_note(rows: list[dict]) -> str:
    """The reordered weights (linear.py) stay in memory between calls: not in the peak column."""
    kept = [r for r in rows if r.get("reordered_weights_mib")]
    return "".join(f"\n{r['case']}: {r['impl']} keeps {r['reordered_weights_mib']:,.0f} MiB of "
                   "reordered weights between calls (a second copy of its weights), not in the "
                   "peak column"
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


def write(rows: list[dict], out: Path, device: str) -> str:
    """bench.md, bench.json and bench.png of the rows so far; returns bench.md's text."""
    out.mkdir(parents=True, exist_ok=True)
    first = rows[0]
    half = sorted({(r["dtype"], r["peak_matmul_gflops_dtype"]) for r in rows
                   if r["dtype"] != "float32"})
    text = (f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, peak fp32 "
            f"matmul {first['peak_matmul_gflops']:.0f} GFLOP/s "
            f"(BLAS {first['blas_matmul_gflops']:.0f}"
            + (f", oneDNN, reordered weight {first['reordered_matmul_gflops']:.0f}"
               if "reordered_matmul_gflops" in first else "") + ")"
            + "".join(f", peak {name} matmul {rate:.0f} GFLOP/s" for name, rate in half)
            + "\n\n" + table(rows) + reordered_note(rows) + first_call_note(rows))
    (out / "bench.md").write_text(text)
    (out / "bench.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "bench.png")
    return text


def first_call_note(rows: list[dict]) -> str:
    """Each implementation's first call, compiling included (not in the tokens/s column)."""
    slow = [r for r in rows if r.get("first_call_seconds", 0) > 2 * r["seconds"] + 0.5]
    return "".join(f"\n{r['case']}: {r['impl']}'s first call took {r['first_call_seconds']:.1f} s "
                   f"(compiling, warm-up), its best {r['seconds']:.3f} s" for r in slow) + (
        "\n" if slow else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/bench")
    parser.add_argument("--cases", nargs="+", default=["full", "varlen", "long", "train"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--long-layers", type=int, default=6)
    parser.add_argument("--model", choices=["base", "mini"], default="base",
                        help="mini: the 6-layer, hidden-256 model (a quick check of the plumbing)")
    parser.add_argument("--compile", action="store_true", help="add our model under torch.compile")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)

    def finished(rows):
        print(f"case {rows[-1]['case']} done: {out}/bench.md, bench.json, bench.png", flush=True)
        write(rows, out, device)

    rows = run(args.cases, args.long_layers, args.repeats, device, args.compile, args.model,
               on_case=finished)
    print(write(rows, out, device), flush=True)
    print(f"written to {out}/bench.md, bench.json, bench.png")


if __name__ == "__main__":
    main()

"""What tools/gpu_check.sh measures on a GPU beside the tests and the bench: one report, printed.

1. compile: the base model (the mini model with --model mini) under `torch.compile(fullgraph=True)`
   with Inductor, on a padded batch with padding, as chapter 8 compiles it: does it trace as one
   graph, how long the first call takes, and eager against compiled on the same weights.
2. backends: one attention layer of ModernBERT-base's shape (12 heads of 64), global and local,
   at the bench's shapes (8 x 512 padded; 8 sequences of 64-512 packed; one of 8,192), every
   backend the device runs in the dtype, timed against PyTorch's SDPA in the same run. This is the
   measurement `backends.AUTO` waits for before "auto" may pick the Triton kernel on a GPU
   (backends.py); each launch-option row of `flash.LAUNCH` in use is printed with it.

    python tools/gpu_probe.py [--model base|mini] [--repeats 5]

On a machine without CUDA it runs the same code on the CPU at the mini model's size (the dry run
of tools/gpu_check.sh), compiling with the "eager" backend (Inductor needs minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import time

import torch

import modernbert_mini as mm
from modernbert_mini import backends, bench, flash, runtime
from modernbert_mini.padding import Batch

SHAPES = {"8 x 512": [512] * 8, "varlen 64-512": [64, 128, 192, 256, 320, 384, 448, 512],
          "one of 8192": [8192]}


def probe_compile(config, device, dtype, repeats: int) -> None:
    torch.manual_seed(0)
    model = mm.ModernBertModel(config).to(device, dtype).eval()
    lengths = SHAPES["varlen 64-512"] if device == "cuda" else [32, 64]
    ids = torch.randint(5, config.vocab_size, (len(lengths), max(lengths)), device=device)
    mask = (torch.arange(max(lengths), device=device)[None]
            < torch.tensor(lengths, device=device)[:, None]).long()
    compiler = "inductor" if device == "cuda" else "eager"
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=compiler)
    with torch.inference_mode():
        start = time.perf_counter()
        out = compiled(ids, mask).last_hidden_state
        if device == "cuda":
            torch.cuda.synchronize()
        first = time.perf_counter() - start
        best = bench.best_times({"eager": lambda: model(ids, mask), "compiled": lambda: compiled(ids, mask)},
                                repeats)
        real = mask.bool()
        diff = (out - model(ids, mask).last_hidden_state)[real].abs().max().item()
    print(f"compile ({compiler}, fullgraph, {dtype}, {len(lengths)} rows padded to {max(lengths)}): "
          f"one graph; first call {first:.1f} s; eager {best['eager'] * 1e3:.2f} ms, compiled "
          f"{best['compiled'] * 1e3:.2f} ms ({best['eager'] / best['compiled']:.2f}x); "
          f"largest |compiled - eager| at real tokens {diff:.1e}")


def probe_backends(device, dtype, repeats: int, shapes: dict) -> None:
    names = [n for n in backends.available(device, dtype) if n != "eager"]
    print(f"\none attention layer, 12 heads of 64, {dtype}: ms (x SDPA's time); launch options "
          f"{flash.launch_options(torch.device(device)) if 'triton' in names else '-'}")
    print(f"{'shape':<15}{'layer':<7}" + "".join(f"{n:>18}" for n in names))
    for shape, lengths in shapes.items():
        T, S = sum(lengths), max(lengths)
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
        packed = Batch.packed(cu)
        q, k, v = torch.randn(3, T, 12, 64, device=device, dtype=dtype).unbind(0)
        for window in (None, 128):
            runs = {n: (lambda n=n: backends.attend(q, k, v, packed, window, backend=n))
                    for n in names if backends.BACKENDS[n].supports(device, dtype, window, 0.0) is None}
            with torch.inference_mode():
                best = bench.best_times(runs, repeats)
            layer = "global" if window is None else "local"
            cells = [f"{best[n] * 1e3:9.2f} ({best[n] / best['sdpa']:4.2f}x)" if n in best else f"{'-':>18}"
                     for n in names]
            print(f"{shape:<15}{layer:<7}" + "".join(f"{c:>18}" for c in cells))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["base", "mini"], default=None,
                        help="base on a GPU, mini on the CPU by default")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = args.model or ("base" if device == "cuda" else "mini")
    config = getattr(mm.ModernBertConfig, model)()
    print(runtime.summary())
    dtypes = (torch.float32, runtime.detect().dtype) if device == "cuda" else (torch.float32,)
    shapes = SHAPES if device == "cuda" else {"2 x 128": [128, 128], "varlen 16-128": [16, 64, 128]}
    for dtype in dict.fromkeys(dtypes):
        probe_compile(config, device, dtype, args.repeats)
    for dtype in dict.fromkeys((*dtypes, torch.float16) if device == "cuda" else dtypes):
        probe_backends(device, dtype, args.repeats, shapes)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run, for a session that is lent a GPU machine:
#   1. the tests that run on the GPU there: every backend on CUDA tensors (test_backends), the
#      Triton kernel compiled for the GPU (test_flash), the whole model moved to the GPU against
#      transformers' on the same GPU, fp32 and bf16 (test_gpu);
#   2. `make bench`'s three cases on the GPU, where it adds the bf16 and flash-attn rows.
# It uses the python3 that is there, with its own torch, triton and transformers (no venv), and
# writes its logs and the bench table, json and plot to $OUT (or out/gpu_check/): 6 files.
# Budget: the tests take about a minute, the bench a few; each step has its own time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu_check}
mkdir -p "$out"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
PY=${PY:-python3}

$PY -c 'import sys, torch; sys.exit(None if torch.cuda.is_available() else
        "no CUDA GPU here: tools/gpu_check.sh is for a GPU machine")' || exit 2
$PY -c 'import modernbert_mini as mm; print(mm.runtime.summary())' 2>&1 | tee "$out/runtime.txt"

timeout 300 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_backends.py \
    tests/test_flash.py tests/test_runtime.py 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}

timeout 360 $PY -m modernbert_mini.bench --out "$out" --repeats 3 2>&1 | tee "$out/bench.log"
bench=${PIPESTATUS[0]}

echo "gpu_check: tests exit $tests, bench exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]

#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run that always reports, for a session lent a GPU machine:
#   1. versions first (python, torch, CUDA, triton, transformers, pytest, the GPU's capability);
#   2. what the machine lacks (tools/gpu_requirements.txt), installed from wheelhouse/ with
#      `pip install --no-index` (the machine has no network; `make wheelhouse` makes it here);
#   3. each GPU test file in its own pytest call with its own time limit, so that one collection
#      error stops one file, not all;
#   4. the probe (tools/gpu_probe.py): the model compiled for the GPU (Inductor, one graph), and
#      every attention backend timed against SDPA at the bench's shapes;
#   5. `make bench`'s cases on the GPU (fp32 and bf16/fp16, every backend beside eager), whose
#      files are rewritten after every case, so a cut-short run keeps what it finished;
#   6. the chapters with a GPU branch (1, 7, 8, 12), executed top to bottom on the GPU from a
#      scratch copy: does "Run all" on a GPU runtime reach the last cell.
# Every step has a time limit, the version printout included. Everything lands in $OUT (or
# out/gpu_check/), 6 files at most (the device tool brings back 8): report.txt (one line per step
# and the versions, written first thing and rewritten after every step), log.txt (every step's
# output, one after the other), probe.txt, bench.md, bench.json, bench.png. See README.md.
# The whole run stays under TOTAL seconds (default 540: one 600 s device call with room to spare);
# each step's limit is cut to what is left, and the probe and bench keep their reserves.
#
#   bash tools/gpu_check.sh                    on the GPU machine (carry wheelhouse/ there)
#   GPU_CHECK_DRY=1 bash tools/gpu_check.sh    here, on the CPU: the same plumbing end to end
#     (the wheelhouse unpacked into a throwaway folder for Python 3.12, the GPU test files run and
#     skip, the other files only collected, the probe and the bench at the mini model's size)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu_check}
mkdir -p "$out"
dry=${GPU_CHECK_DRY:-0}
PY=${PY:-python3}
TOTAL=${TOTAL:-540}
BENCH_RESERVE=${BENCH_RESERVE:-200}
PROBE_RESERVE=${PROBE_RESERVE:-90}
CHAPTERS_RESERVE=${CHAPTERS_RESERVE:-0}  # seconds the bench leaves for the chapters (the rest of the budget)
[ "${GPU_CHECK_DRY:-0}" = 1 ] || CHAPTERS_RESERVE=${CHAPTERS_RESERVE_GPU:-150}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$SECONDS
status=0
report="$out/report.txt" log="$out/log.txt"
vers=$(mktemp)  # the versions, kept outside $out (its files are what comes back)
trap 'rm -f "$vers"' EXIT
: >"$log"
lines=()  # the report's step lines, so far

left() { echo $((TOTAL - (SECONDS - start))); }
write_report() {  # the step lines, then the versions: rewritten whole after every step
  { printf '%s\n' "${lines[@]}"; echo; cat "$vers"; } >"$report.part"
  mv "$report.part" "$report"
}
note() { lines+=("[gpu_check +$((SECONDS - start))s] $*"); echo "${lines[-1]}"; write_report; }
step() {  # step NAME LIMIT COMMAND...: run with a time limit, output appended to log.txt
  local name=$1 limit=$2 began=$SECONDS code
  shift 2
  if [ "$limit" -le 5 ]; then
    note "$name: not run, no time left"; status=1; return
  fi
  echo "===== $name (limit ${limit}s): $*" >>"$log"
  timeout -k 5 "$limit" "$@" >>"$log" 2>&1
  code=$?
  [ "$code" -eq 124 ] && note "$name: TIMED OUT after ${limit}s"
  note "$name: exit $code in $((SECONDS - began))s ($(tail -n 1 "$log" | cut -c1-120))"
  [ "$code" -eq 0 ] || [ "$code" -eq 5 ] || status=1
}

versions() {
  $PY - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "triton", "transformers", "pytest", "yaml", "matplotlib", "flash_attn"):
    try:
        print(f"{name:13}", getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as error:  # missing, or broken: say which
        print(f"{name:13} MISSING ({type(error).__name__}: {error})")
try:
    import torch
    if torch.cuda.is_available():
        print("cuda         ", torch.version.cuda, "|", torch.cuda.get_device_name(0),
              "| capability", "{}.{}".format(*torch.cuda.get_device_capability(0)))
    else:
        print("cuda          none: no CUDA GPU here")
    import modernbert_mini as mm
    print("runtime      ", mm.runtime.summary())
    print("backends     ", ", ".join(mm.backends.runnable(mm.runtime.detect())))
except Exception as error:
    print("runtime       FAILED:", type(error).__name__, error)
EOF
}

versions_file() {  # the versions, under a time limit of their own, added to the report
  timeout -k 5 60 bash -c "$(declare -f versions); PY='$PY' versions" >>"$vers" 2>&1 \
    || echo "versions: exit $? (timed out after 60 s, or failed)" >>"$vers"
}

note "start: dry=$dry, python $PY, out $out, budget ${TOTAL}s"
versions_file
note "versions: in this report, below"

# --------------------------------------------------------------------------- what is missing
if ! ls wheelhouse/*.whl >/dev/null 2>&1; then
  note "install: no wheelhouse/ (make wheelhouse, then carry it): nothing installed"
  status=1
elif [ "$dry" = 1 ]; then  # every wheel, unpacked for the GPU machine's Python into a throwaway folder
  site=$(mktemp -d)
  step "install (dry: unpack for cp312 into $site)" 120 \
    $PY -m pip install --no-index --no-deps --no-compile --only-binary=:all: --target "$site" \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 wheelhouse/*.whl
  rm -rf "$site"
else  # pip installs only what is missing or too old there
  step install 120 $PY -m pip install --no-index --find-links wheelhouse \
    --disable-pip-version-check -r tools/gpu_requirements.txt
  { echo; echo "after install:"; } >>"$vers"
  versions_file
  write_report
fi

# --------------------------------------------------------------------------- tests, one call a file
# name and limit; the GPU-only files first (they skip without CUDA)
tests=("test_flash_gpu.py 150" "test_gpu.py 90" "test_flash.py 90" "test_backends.py 60" "test_runtime.py 30")
for entry in "${tests[@]}"; do
  set -- $entry
  file=$1 limit=$2
  budget=$(( $(left) - BENCH_RESERVE - PROBE_RESERVE ))
  [ "$budget" -lt "$limit" ] && limit=$budget
  case "$dry:$file" in
    1:test_flash_gpu.py | 1:test_gpu.py | 0:*) only=() ;;  # run (in dry mode they skip: no CUDA)
    *) only=(--collect-only) ;;  # dry mode, a file that would run on the CPU: collection only
  esac
  step "$file" "$limit" $PY -m pytest -q -rs -p no:cacheprovider "${only[@]}" "tests/$file"
done

# --------------------------------------------------------------------------- probe: compile, backends
limit=$(( $(left) - BENCH_RESERVE ))
[ "$limit" -gt "$PROBE_RESERVE" ] || limit=$PROBE_RESERVE
step probe "$limit" bash -c "$PY tools/gpu_probe.py --repeats $([ "$dry" = 1 ] && echo 1 || echo 5) \
  > '$out/probe.txt' 2>&1; code=\$?; cat '$out/probe.txt'; exit \$code"

# --------------------------------------------------------------------------- bench, case by case
if [ "$dry" = 1 ]; then
  bench_args=(--cases full --repeats 1 --model mini)
else
  bench_args=(--cases full varlen long --repeats 3)
fi
step bench "$(( $(left) - CHAPTERS_RESERVE ))" $PY -m modernbert_mini.bench --out "$out" "${bench_args[@]}"

# --------------------------------------------------------------------------- the chapters' GPU cells
# "Run all" on a GPU runtime must reach the last cell of every chapter with a GPU branch: each is
# executed from a scratch copy (nothing comes back but the verdict in log.txt and the report)
if [ "$dry" = 1 ]; then
  note "chapters: not run in the dry run (on the CPU they are make test's nbval)"
else
  scratch=$(mktemp -d)
  cp chapters/01_tokenizer.ipynb chapters/07_flash_attention.ipynb chapters/08_model.ipynb \
    chapters/12_efficiency.ipynb "$scratch"
  step "chapters with a GPU branch" "$(left)" env CUDA_VISIBLE_DEVICES=0 \
    $PY tools/run_notebooks.py "$scratch"/*.ipynb
  rm -rf "$scratch"
fi

note "done in $((SECONDS - start))s, exit $status; files: $(cd "$out" && ls | tr '\n' ' ')"
exit $status

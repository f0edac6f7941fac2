#!/usr/bin/env bash
# The GPU checks of issue #14 as one prepared run, within BUDGET seconds (default 500) on one H100 / H200:
# the CUDA-only tests (sync-debug, the orthogonalizers on the GPU) and `muonlab perf` on every
# GPU shape set of docs/BENCHMARKS.md. Nothing is installed: the image's python3 with torch and
# pytest is used, with this checkout's src/ on PYTHONPATH.
#
#   bash scripts/gpu_check.sh                      # on the GPU machine; results under $OUT
#   DEVICE=cpu QUICK=1 bash scripts/gpu_check.sh   # a dry run of the script itself on a CPU
#
# Writes (at most 8 files, as the device tool brings back): env.txt (machine, torch, commit),
# tests.log, norm_forms.md (norms_bench --forms), perf_train.md (perf --train: the step inside GPT-2-small
# training), perf.md (every table, in order) and perf-json.tgz (the runs' --json files).
set -u
BUDGET=${BUDGET:-500}  # seconds for the whole script: later runs are skipped (and said so) once it is spent
deadline=$((SECONDS + BUDGET))
cap() { local left=$((deadline - SECONDS)); echo $((left < 1 ? 1 : left < $1 ? left : $1)); }  # min($1, time left), >= 1 (timeout 0 = none)
OUT=${OUT:-gpu_out}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT/json"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    $PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
    git rev-parse --short HEAD 2>/dev/null || echo "commit: unknown (no .git)"
    git status --short 2>/dev/null | head -5
} >"$OUT/env.txt" 2>&1
if ! $PY -c "import muonlab" >>"$OUT/env.txt" 2>&1; then
    echo "muonlab does not import with this python (see above)" >>"$OUT/env.txt"
    exit 1
fi

# 1. Tests that only run with CUDA present (each file skips its CUDA cases without it).
tests=(tests/test_orth_cuda.py tests/test_no_sync.py)
timeout "$(cap 150)" $PY -m pytest -q -p no:cacheprovider "${tests[@]}" >"$OUT/tests.log" 2>&1
timeout "$(cap 90)" $PY -m pytest -q -p no:cacheprovider tests/test_namo.py tests/test_adago.py -k "cuda" >>"$OUT/tests.log" 2>&1
echo "pytest summaries (tests.log has the details):" >>"$OUT/env.txt"
grep -E "passed|failed|error" "$OUT/tests.log" >>"$OUT/env.txt"

# 2. The widened (fp64) and scaled forms of the norms and the normalization across stack sizes: their size
#    limits were measured on a CPU only (docs/BENCHMARKS.md, seventh stop).
timeout "$(cap 60)" $PY -m muonlab.orth.norms_bench --forms --device "$DEVICE" --repeats "$([ "${QUICK:-0}" = 1 ] && echo 2 || echo 30)" \
    >"$OUT/norm_forms.md" 2>&1 || echo "(exit $? for the forms)" >>"$OUT/norm_forms.md"

# 3. The optimizer's share of a GPT-2-small training step (fp32, batch 8 x 1024 tokens): perf --train, each
#    optimizer training its own copy of the model.
if [ "${QUICK:-0}" = 1 ]; then
    train="--d 32 --layers 1 --heads 2 --vocab 64 --seq 16 --batch 2 --rounds 2 --warmup 1"
else
    train="--d 768 --layers 12 --heads 12 --vocab 50304 --seq 1024 --batch 8 --rounds 10 --warmup 3"
fi
echo "## muonlab perf --train --device $DEVICE $train --optimizers muon,namo,namo-d,adamw" >"$OUT/perf_train.md"
# shellcheck disable=SC2086  # the arguments are meant to split
timeout "$(cap 90)" $PY -m muonlab perf --train --device "$DEVICE" $train --optimizers muon,namo,namo-d,adamw \
    >>"$OUT/perf_train.md" 2>&1 || echo "(exit $? for the training loop)" >>"$OUT/perf_train.md"

# 4. perf, one set per run (a run's candidates are interleaved round-robin in one process).
if [ "${QUICK:-0}" = 1 ]; then
    runs=("--set gpt --d 64 --layers 2 --steps 3 --warmup 1 --only muonlab.Muon,fp32")
else
    runs=(
        "--set gpt2-small --steps 20"
        "--set gpt2-small --steps 20 --compile --only torch.optim,muonlab.Muon"
        "--set gpt2-medium --steps 20"
        "--set gpt2-large --steps 10"
        "--set gpt --d 2048 --layers 4 --steps 20"
        "--set gpt --d 4096 --layers 4 --steps 10"
        "--set few-large --steps 10"
        "--set many-small --steps 20"
    )
fi
: >"$OUT/perf.md"
i=0
for args in "${runs[@]}"; do
    i=$((i + 1))
    echo "## muonlab perf --device $DEVICE $args" >>"$OUT/perf.md"
    if [ "$(cap 120)" -lt 20 ]; then
        echo "(skipped: the script's budget of ${BUDGET} s is spent)" >>"$OUT/perf.md"
        continue
    fi
    # shellcheck disable=SC2086  # the arguments are meant to split
    timeout "$(cap 120)" $PY -m muonlab perf --device "$DEVICE" $args --json "$OUT/json/run$i.json" >>"$OUT/perf.md" 2>&1 \
        || echo "(exit $? for this run)" >>"$OUT/perf.md"
    echo >>"$OUT/perf.md"
done
tar czf "$OUT/perf-json.tgz" -C "$OUT" json && rm -rf "$OUT/json"

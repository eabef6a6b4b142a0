#!/usr/bin/env bash
# Reproduce the thesis's Table 3, Table 4 and Figures 8/10 on one GPU with the full (non-quick) settings and
# write results/{table3,table4,evolution}.{md,json} and results/evolution.png.
#
#   scripts/reproduce-gpu.sh                      # data in .data/ (mnist/, fashion-mnist/, higgs-subsets/)
#   DATA_DIR=/path/to/data EPOCHS=150 scripts/reproduce-gpu.sh
#
# Table 3 runs first and alone (its timings must not share the GPU; it also builds the CUDA kernels once).
# Then Table 4 (in the foreground, with its progress bar) and the evolution comparison (in the background,
# log in results/logs/) share the GPU, each spreading its trainings over a few worker processes.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${DATA_DIR:-.data}
EPOCHS=${EPOCHS:-150}         # the epoch budget of every Table 4 and evolution run (stated in the results)
JOBS_TABLE4=${JOBS_TABLE4:-8}
JOBS_EVOLUTION=${JOBS_EVOLUTION:-5}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-results}
PYTHON=${PYTHON:-python}
# Time limits (s): a run that overruns is stopped (SIGTERM) and leaves its results so far, marked INCOMPLETE.
LIMIT_TABLE3=${LIMIT_TABLE3:-120}
LIMIT_TRAINING=${LIMIT_TRAINING:-840}

start=$(date +%s)
mkdir -p "$OUT/logs"
echo "== reproduce-gpu: data $DATA_DIR, device $DEVICE, $EPOCHS epochs per run, results in $OUT/"
"$PYTHON" -c "import torch; print('torch', torch.__version__, '| GPU:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"

status=0
timeout -k 15 "$LIMIT_TABLE3" "$PYTHON" -m sweep reproduce table3 --data-dir "$DATA_DIR" --device "$DEVICE" --out "$OUT" || status=$?

timeout -k 15 "$LIMIT_TRAINING" "$PYTHON" -m sweep reproduce evolution --data-dir "$DATA_DIR" --device "$DEVICE" --out "$OUT" \
  --epochs "$EPOCHS" --jobs "$JOBS_EVOLUTION" > "$OUT/logs/evolution.log" 2>&1 &
evolution_pid=$!

timeout -k 15 "$LIMIT_TRAINING" "$PYTHON" -m sweep reproduce table4 --data-dir "$DATA_DIR" --device "$DEVICE" --out "$OUT" \
  --epochs "$EPOCHS" --jobs "$JOBS_TABLE4" || status=$?

echo "== waiting for the evolution comparison (log: $OUT/logs/evolution.log)"
wait "$evolution_pid" || status=$?
tail -n 25 "$OUT/logs/evolution.log" | tr '\r' '\n' | grep -v '^evolution' || true

echo "== reproduce-gpu: total wall time $(( $(date +%s) - start )) s, exit status $status"
exit "$status"

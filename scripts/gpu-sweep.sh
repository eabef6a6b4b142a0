#!/usr/bin/env bash
# The sweep platform on a GPU machine, in one call: `sweep run fashion-tradeoff --n-trials 8` with the CUDA
# kernels, its `sweep best` output and measured idle time between trials, a report of it, the GPU platform test,
# and the 1-GPU scaling baseline (benchmarks/scaling.py).
#
#   scripts/gpu-sweep.sh            # data in .data/fashion-mnist (see shared/data), results in $OUT or results/gpu-sweep
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/gpu-sweep}
data=${DATA_DIR:-.data}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
db="sqlite:///$out/fashion-tradeoff.db"

echo "== GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "== sweep run fashion-tradeoff --n-trials 8"
start=$(date +%s)
python3 -m sweep run fashion-tradeoff --n-trials 8 --data-dir "$data" --storage "$db" --no-progress 2>&1 | tee "$out/run.log" || status=1
echo "sweep run wall time: $(( $(date +%s) - start )) s"
echo "== sweep best fashion-tradeoff"
python3 -m sweep best fashion-tradeoff --storage "$db" 2>&1 | tee "$out/best.txt" || status=1
python3 -m sweep best fashion-tradeoff --storage "$db" --json > "$out/best.json" || status=1
python3 -m sweep status --storage "$db" 2>&1 | tee -a "$out/best.txt"
echo "== sweep report fashion-tradeoff"
python3 -m sweep report fashion-tradeoff --storage "$db" --out "$out/report" 2>&1 | tail -3 || status=1
echo "== GPU platform test"
python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu tests/sweep 2>&1 | tail -5 || status=1
if [ "${SCALING:-1}" = 1 ]; then
  echo "== scaling baseline (1 GPU)"
  python3 benchmarks/scaling.py --sweep fashion-tradeoff --trials 8 --per-gpu 1 2 --data-dir "$data" --no-progress \
    --out "$out/scaling" 2>&1 || status=1
fi
exit $status

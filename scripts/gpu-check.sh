#!/usr/bin/env bash
# Build the sparselayer CUDA kernels, run the GPU tests, and run the kernel benchmark: one command on a GPU
# machine (run it from anywhere; it works in the repository root).
#
#   scripts/gpu-check.sh           build + GPU tests + full benchmark (a few minutes on an H100)
#   scripts/gpu-check.sh quick     build + GPU tests + two benchmark shapes
#   scripts/gpu-check.sh bench     build + full benchmark only
#   scripts/gpu-check.sh tests     build + GPU tests only
#
# Logs and results go to $OUT when set (the lent-GPU tool), else benchmarks/results/.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
status=0

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader || true
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"

echo "== build"
start=$(date +%s)
if ! python3 -c "import sparselayer._cuda as c; c.ensure_loaded(); print('loaded; build dir', c.build_directory(''.join(map(str, __import__('torch').cuda.get_device_capability()))))" 2>&1 | tee "$out/build.log"; then
  echo "BUILD FAILED"; exit 1
fi
echo "build+load $(( $(date +%s) - start )) s"

if [ "$mode" != bench ]; then
  echo "== GPU tests"
  python3 -m pytest -q -p no:cacheprovider -o addopts="" --timeout 300 \
    tests/sparselayer \
    2>&1 | tee "$out/tests.log" | tail -40
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

[ "$mode" = tests ] && exit $status
echo "== benchmark"
args=()
[ "$mode" = quick ] && args+=(--quick)
python3 benchmarks/kernels.py --out "$out" "${args[@]}" 2>&1 | tee "$out/bench.log" | grep -v '^|' | tail -60
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
cat "$out"/kernels-*.md | grep '^|' || true
exit $status

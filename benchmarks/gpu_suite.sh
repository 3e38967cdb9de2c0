#!/usr/bin/env bash
# Every GPU row of docs/performance.md section 5 in one call (a lent GPU's time is short):
# DistilHuBERT recipe with the default student, its CNN frozen (feature_grad_mult 0), the fast
# preset alone and frozen, then the RobustDistiller recipe as is, with its corruption made in
# the loader's workers (augmentation.in_loader) and with a frozen CNN; each with and without the teacher
# cache (bench_gpu.py). Tables are appended to $OUT/gpu.md (or runs/perf/gpu.md) as each ends,
# so a run cut short keeps the rows it finished. SMOKE=1 checks the script on CPU (no figures).
# Usage: bash benchmarks/gpu_suite.sh [extra bench_gpu.py options, e.g. --repeats 6]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/perf}/gpu.md
mkdir -p "$(dirname "$out")"
smoke=()
[ "${SMOKE:-0}" = 1 ] && smoke=(--smoke)
run() { PYTHONUNBUFFERED=1 python benchmarks/bench_gpu.py "${smoke[@]}" --out "$out" "$@"; }
run --recipe distilhubert "$@"
run --recipe distilhubert --set student.feature_grad_mult=0 "$@"
run --recipe distilhubert --preset fast "$@"
run --recipe distilhubert --preset fast --set student.feature_grad_mult=0 "$@"
run --recipe robust_wavlm_base_plus "$@"
run --recipe robust_wavlm_base_plus --set augmentation.in_loader=true "$@"
run --recipe robust_wavlm_base_plus --set student.feature_grad_mult=0 "$@"
echo "tables in $out"

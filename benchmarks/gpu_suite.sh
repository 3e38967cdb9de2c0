#!/usr/bin/env bash
# Every GPU row of docs/performance.md section 5 in one call (a lent GPU's time is short), each
# bench_gpu.py run timing teacher-every-step against cached targets:
#   DistilHuBERT recipe: default student; with TF32 for the float32 teacher; with cuDNN's
#   algorithm search (training.cudnn_benchmark) for the CNNs' convolutions; its CNN frozen
#   (feature_grad_mult 0); the pruned preset; the fast preset; the fast preset frozen;
#   RobustDistiller recipe: as is; corruption in the loader's workers (augmentation.in_loader);
#   its CNN frozen.
# Each table is appended to $OUT/gpu.md (or runs/perf/gpu.md) as soon as it ends, so a run cut
# short keeps what it finished. One bench_gpu.py run is its start-up, generating and caching a
# corpus of batch x (repeats + 2) training utterances (303 of 15.6-23.4 s at the defaults, so no
# epoch start or short batch falls among the measured steps; the cache build took 14-19 s for
# 91 of them on the H100 of 2026-11-22, so expect about 3x) and 24 steps of 0.14-0.9 s: pass
# --repeats 6 when the lease is short (202 utterances).
# SMOKE=1 checks the script on CPU (no figures).
# Usage: bash benchmarks/gpu_suite.sh [extra bench_gpu.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/perf}/gpu.md
mkdir -p "$(dirname "$out")"
smoke=()
[ "${SMOKE:-0}" = 1 ] && smoke=(--smoke)
run() { PYTHONUNBUFFERED=1 python -m benchmarks.bench_gpu "${smoke[@]}" --out "$out" "$@"; }
run --recipe distilhubert "$@"
run --recipe distilhubert --set training.tf32=true "$@"
run --recipe distilhubert --set training.cudnn_benchmark=true "$@"
run --recipe distilhubert --set student.feature_grad_mult=0 "$@"
run --recipe distilhubert --preset pruned "$@"
run --recipe distilhubert --preset fast "$@"
run --recipe distilhubert --preset fast --set student.feature_grad_mult=0 "$@"
run --recipe robust_wavlm_base_plus "$@"
run --recipe robust_wavlm_base_plus --set augmentation.in_loader=true "$@"
run --recipe robust_wavlm_base_plus --set student.feature_grad_mult=0 "$@"
echo "tables in $out"

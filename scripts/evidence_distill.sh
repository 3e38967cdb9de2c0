#!/usr/bin/env bash
# Issue 9: the two distillation runs of docs/evidence.md, from the real Whisper tiny.en teacher
# with its targets read from the teacher cache (context crop on fixed 2 s chunks: Whisper's
# absolute position embedding rules out whole-utterance targets): the robust recipe (student on corrupted audio,
# training halves of the noises and rooms only, enhancement head) and plain DistilHuBERT
# (clean input, no enhancement head). Same seed, same student initialisation, same data order.
#
# Usage (from the repository root, after scripts/setup.sh and scripts/split_shared_data.sh):
#   STEPS=1500 bash scripts/evidence_distill.sh [robust|plain ...]   # default: both, in parallel
# Outputs: runs/ev/<variant>/ (checkpoints every 250 steps, all kept; metrics.jsonl; student/).
set -euo pipefail
STEPS=${STEPS:-1500}
OUT=${EVIDENCE_OUT:-runs/ev}
TEACHER=${TEACHER:-../shared/models/whisper-tiny.en}
CACHE=${CACHE:-runs/cache/whisper-tiny}
LS=../shared/data/librispeech-mini
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
VARIANTS=("$@")
[[ ${#VARIANTS[@]} -eq 0 ]] && VARIANTS=(robust plain)

common=(--teacher "$TEACHER" --objectives.layerwise.teacher_layers null
        --data.train_dir "$LS/train-clean-100" --data.validation_dir "$LS/test-other"
        --augmentation.noise_dir runs/data/noise_train --augmentation.rir_dir runs/data/rir_train
        --training.max_steps "$STEPS" --data.batch_size 4 --data.max_length_s 2
        --data.num_workers 0 --training.mixed_precision no --training.cpu true
        --training.eval_every 250 --training.max_eval_batches 8 --training.save_every 250
        --training.keep_checkpoints 100 --training.log_every 10
        --teacher_cache.dir "$CACHE" --teacher_cache.context crop
        --teacher_cache.crop_starts chunks)

# The cache is built once, in two processes (about 6 min here); a second call only checks it.
mkdir -p "$OUT"
accelerate launch --multi_gpu --num_processes 2 -m robustdistill.cli cache-teacher \
    --config configs/robust_wavlm_base_plus.yaml "${common[@]}" --training.cpu true \
    --output_dir "$OUT/cache-build" > "$OUT/cache.log" 2>&1 || { tail -20 "$OUT/cache.log"; exit 1; }

for variant in "${VARIANTS[@]}"; do
    case $variant in
        robust) config=configs/robust_wavlm_base_plus.yaml ;;
        plain) config=configs/distilhubert.yaml ;;
        *) echo "unknown variant '$variant' (robust|plain)" >&2; exit 2 ;;
    esac
    robustdistill distill --config "$config" "${common[@]}" --teacher_cache.missing error \
        --output_dir "$OUT/$variant" > "$OUT/$variant.log" 2>&1 &
done
wait

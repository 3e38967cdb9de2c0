#!/usr/bin/env bash
# Issue 10 comparison: the same Whisper tiny.en teacher, student, data and step budget,
# trained with (a) layer prediction, (b) + enhancement head, (c) + Gram KD, (d) cosine
# alignment through a linear inverted bottleneck, (e) I2RF-TFCKD; c2 is (c) with our
# `center: true` option (the paper's Gram loss is uncentred). Distils on
# librispeech-mini/train-clean-100 with runs/data/{noise,rir}_train only; the evaluation
# (scripts/literature_table.py) uses test-other with runs/data/noise_test only.
# Usage: bash scripts/literature_table.sh [STEPS] [OUT] [RUN...]   (defaults 30, runs/lit10,
# all six runs); a finished run (final_state.json) is skipped. SEED=1 ... for another training seed.
set -euo pipefail
# the project environment of scripts/setup.sh, unless one is active already
[[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]] && . .venv/bin/activate
STEPS=${1:-30}
SEED=${SEED:-0}   # the training seed (initial student, data order, corruption draws)
OUT=${2:-runs/lit10}
SHARED=${SHARED:-../shared}
export HF_HUB_OFFLINE=1
declare -A OBJ=(
  [a_layerwise]="{layerwise: {}}"
  [b_enhancement]="{layerwise: {}, enhancement: {}}"
  [c_gram]="{layerwise: {}, enhancement: {}, gram_kd: {layer_pairs: [[1, 1], [4, 2]]}}"
  [c2_gram_centred]="{layerwise: {}, enhancement: {}, gram_kd: {layer_pairs: [[1, 1], [4, 2]], center: true}}"
  [d_cosine]="{cosine_alignment: {teacher_layers: [1, 3, 4]}}"
  [e_tfckd]="{tfckd: {teacher_layers: [1, 2, 3, 4], student_layers: [1, 2], num_sets: 2}}"
)
shift $(( $# < 2 ? $# : 2 ))
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(a_layerwise b_enhancement c_gram c2_gram_centred d_cosine e_tfckd)
for name in "${RUNS[@]}"; do
  [ -f "$OUT/$name/final_state.json" ] && continue
  robustdistill distill --teacher "$SHARED/models/whisper-tiny.en" --output_dir "$OUT/$name" \
    --seed "$SEED" --objectives "${OBJ[$name]}" \
    --data.train_dir "$SHARED/data/librispeech-mini/train-clean-100" \
    --data.validation_fraction 0.02 --data.batch_size 4 --data.max_length_s 2 \
    --data.min_length_s 2 \
    --augmentation.noise_dir runs/data/noise_train --augmentation.rir_dir runs/data/rir_train \
    --teacher_cache.dir "$OUT/teacher_cache" --teacher_cache.context crop \
    --teacher_cache.crop_starts chunks \
    --teacher_cache.dtype float32 --teacher_cache.layers "[1, 2, 3, 4]" \
    --training.max_steps "$STEPS" --training.learning_rate 5.0e-4 --training.warmup_ratio 0.1 \
    --training.cpu true --training.eval_at_start false --training.eval_every 100000 \
    --training.max_eval_batches 2 --training.save_every 0 --training.log_every 5 \
    --training.report_to "[]"
done

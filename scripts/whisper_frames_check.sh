#!/usr/bin/env bash
# What placing a Whisper teacher's frames on its own grid costs a student. cache-teacher built
# Whisper targets on Whisper's grid ("native": frame k at 320 k) until 2026-12-06, while the
# runs meant the student's frame centres ("ssl", the default: 320 k + 200). Per seed, two
# students distil the plain DistilHuBERT recipe from the real Whisper tiny.en teacher (teacher
# every step, batch 4 x 2 s, CPU bf16), one per placement; then each final student is
# validated against the teacher on both grids (32 held-out test-other utterances).
# docs/evidence.md, section 1. Usage: STEPS=400 SEEDS="0 1" bash scripts/whisper_frames_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]] && . .venv/bin/activate
export HF_HUB_OFFLINE=1
STEPS=${STEPS:-400}
SEEDS=${SEEDS:-0 1}
OUT=${OUT:-runs/frames}
LS=../shared/data/librispeech-mini
mkdir -p "$OUT"
for seed in $SEEDS; do for grid in ssl native; do
    [ -f "$OUT/s${seed}_$grid/final_state.json" ] && continue
    python -m robustdistill.cli distill --config configs/distilhubert.yaml \
        --teacher ../shared/models/whisper-tiny.en --objectives.layerwise.teacher_layers null \
        --data.train_dir $LS/train-clean-100 --data.validation_dir $LS/test-other \
        --training.max_steps "$STEPS" --data.batch_size 4 --data.max_length_s 2 \
        --data.num_workers 0 --training.cpu true --training.eval_every "$STEPS" \
        --training.max_eval_batches 8 --training.save_every 0 --training.log_every 50 \
        --training.mixed_precision bf16 --whisper_teacher_frames "$grid" --seed "$seed" \
        --output_dir "$OUT/s${seed}_$grid" > "$OUT/s${seed}_$grid.log" 2>&1
done; done
python scripts/whisper_frames_probe.py "$OUT"

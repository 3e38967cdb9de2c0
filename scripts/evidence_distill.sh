#!/usr/bin/env bash
# Issue 9: the two distillation runs of docs/evidence.md, from the real Whisper tiny.en teacher
# with its targets read from the teacher cache (context crop on fixed 2 s chunks: Whisper's
# absolute position embedding rules out whole-utterance targets): the robust recipe (student on corrupted audio,
# training halves of the noises and rooms only, enhancement head) and plain DistilHuBERT
# (clean input, no enhancement head). Same seed, same student initialisation, same data order.
#
# Usage (from the repository root, after scripts/setup.sh and scripts/split_shared_data.sh):
#   STEPS=1500 bash scripts/evidence_distill.sh [robust|plain ...]   # default: both, in parallel
# Outputs: runs/ev/<variant>/ (checkpoints every SAVE_EVERY steps, all kept; metrics.jsonl;
# student/). On a GPU: CPU=false (cache built in one process, training on the GPU, fp32 as on
# the CPU); TRAIN, VALID, NOISE_DIR, RIR_DIR, TEACHER, CACHE move the inputs, EVAL_EVERY and
# SAVE_EVERY the checkpoint grid (docs/evidence.md, GPU rows); EXTRA_ARGS adds overrides to
# both runs (e.g. EXTRA_ARGS="--student.preset fast --student.init_layers null").
set -euo pipefail
# the project environment of scripts/setup.sh, unless one is active already
[[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]] && . .venv/bin/activate
STEPS=${STEPS:-1500}
OUT=${EVIDENCE_OUT:-runs/ev}
TEACHER=${TEACHER:-../shared/models/whisper-tiny.en}
CACHE=${CACHE:-runs/cache/whisper-tiny}
LS=../shared/data/librispeech-mini
TRAIN=${TRAIN:-$LS/train-clean-100}
VALID=${VALID:-$LS/test-other}
NOISE_DIR=${NOISE_DIR:-runs/data/noise_train}
RIR_DIR=${RIR_DIR:-runs/data/rir_train}
CPU=${CPU:-true}
EVAL_EVERY=${EVAL_EVERY:-250}
SAVE_EVERY=${SAVE_EVERY:-250}
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
VARIANTS=("$@")
[[ ${#VARIANTS[@]} -eq 0 ]] && VARIANTS=(robust plain)
for variant in "${VARIANTS[@]}"; do  # before the minutes the cache takes
    [[ $variant == robust || $variant == plain ]] || {
        echo "unknown variant '$variant' (robust|plain)" >&2; exit 2; }
done

common=(--teacher "$TEACHER" --objectives.layerwise.teacher_layers null
        --data.train_dir "$TRAIN" --data.validation_dir "$VALID"
        --augmentation.noise_dir "$NOISE_DIR" --augmentation.rir_dir "$RIR_DIR"
        --training.max_steps "$STEPS" --data.batch_size 4 --data.max_length_s 2
        --data.num_workers 0 --training.mixed_precision no --training.cpu "$CPU"
        --training.eval_every "$EVAL_EVERY" --training.max_eval_batches 8
        --training.save_every "$SAVE_EVERY"
        --training.keep_checkpoints 100 --training.log_every 10
        --teacher_cache.dir "$CACHE" --teacher_cache.context crop
        --teacher_cache.crop_starts chunks ${EXTRA[@]+"${EXTRA[@]}"})

# The cache is built once, in two CPU processes (about 6 min here) or on the GPU; a second call
# only checks it.
mkdir -p "$OUT"
launcher=(accelerate launch --multi_gpu --num_processes 2 -m robustdistill.cli)
[[ $CPU == true ]] || launcher=(python -m robustdistill.cli)
"${launcher[@]}" cache-teacher --config configs/robust_wavlm_base_plus.yaml "${common[@]}" \
    --output_dir "$OUT/cache-build" > "$OUT/cache.log" 2>&1 || { tail -20 "$OUT/cache.log"; exit 1; }

pids=()
for variant in "${VARIANTS[@]}"; do
    case $variant in
        robust) config=configs/robust_wavlm_base_plus.yaml ;;
        plain) config=configs/distilhubert.yaml ;;
        *) echo "unknown variant '$variant' (robust|plain)" >&2; exit 2 ;;
    esac
    python -m robustdistill.cli distill --config "$config" "${common[@]}" --teacher_cache.missing error \
        --output_dir "$OUT/$variant" > "$OUT/$variant.log" 2>&1 &
    pids+=("$!")
done
# a run that fails (e.g. one refusing an output_dir that holds an earlier run) fails the script,
# with the end of its log
failed=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { log="$OUT/${VARIANTS[$i]}.log"
        echo "${VARIANTS[$i]} failed; the end of $log:" >&2; tail -3 "$log" >&2; failed=1; }
done
exit $failed

#!/usr/bin/env bash
# A proxy for a pretrained wav2vec-style teacher, for the CNN checks (scripts/prune_check.sh,
# scripts/frozen_check.sh): no pretrained waveform CNN exists offline, so the plain DistilHuBERT
# recipe distils the real Whisper tiny.en teacher (cached targets, 2 s chunks, CPU bf16) into a
# HuBERT model (CNN 512 x 7, 2 x 384) with the CNN's gradient unscaled (feature_grad_mult 1) so
# that its CNN learns. Writes the run folder PROXY (its model: PROXY/student) and its logs
# PROXY.log, PROXY-cache.log; does nothing when PROXY is a finished run.
# The teacher cache (Whisper targets of every 2 s chunk of train-clean-100 and test-other, about
# 8 min in two CPU processes) goes to PROXY_CACHE (default runs/cache/whisper-tiny). Once
# cache-teacher has filled it, PROXY_CACHE/proxy_teacher.complete records the settings it was
# built for (the config's path and the SHA-256 of its contents, and the command-line
# settings); a later call with the same settings reuses it without running cache-teacher again
# (the distillation reads it with --teacher_cache.missing error, so an entry removed since is a
# one-line stop, never a silent recompute); one with other settings or an edited config runs
# cache-teacher (which fills in the entries it lacks). Delete that file to have cache-teacher
# check it.
# docs/performance.md, section 2.
# Usage: PROXY_STEPS=1500 PROXY=runs/proxy [PROXY_CACHE=runs/cache/whisper-tiny] \
#        bash scripts/proxy_teacher.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]] && . .venv/bin/activate
export HF_HUB_OFFLINE=1
PROXY_STEPS=${PROXY_STEPS:-1500}
PROXY=${PROXY:-runs/proxy}
PROXY_CACHE=${PROXY_CACHE:-runs/cache/whisper-tiny}
LS=../shared/data/librispeech-mini
[ -f "$PROXY/final_state.json" ] && exit 0
mkdir -p "$(dirname "$PROXY")"
data=(--data.train_dir $LS/train-clean-100 --data.validation_dir $LS/test-other
      --data.batch_size 4 --data.max_length_s 2 --data.num_workers 0 --training.cpu true
      --training.max_eval_batches 8 --training.save_every 0 --training.log_every 50
      --training.mixed_precision bf16)
whisper=(--teacher ../shared/models/whisper-tiny.en --objectives.layerwise.teacher_layers null
         --teacher_cache.dir "$PROXY_CACHE" --teacher_cache.context crop
         --teacher_cache.crop_starts chunks)
# what the cache's entries depend on (not the steps or the run folder): the config's path and
# its contents (an edited config gives other entries, which --teacher_cache.missing error would
# stop on later), and the settings given on the command line
config=configs/distilhubert.yaml
config_sha256=$(sha256sum "$config" | cut -d' ' -f1)
built_for="config $config sha256 $config_sha256 ${whisper[*]} ${data[*]}"
complete=$PROXY_CACHE/proxy_teacher.complete
if [[ -f $complete && $(cat "$complete") == "$built_for" ]]; then
    echo "reusing the complete teacher cache $PROXY_CACHE ($complete)" > "$PROXY-cache.log"
else
    OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 -m robustdistill.cli \
        cache-teacher --config "$config" "${whisper[@]}" "${data[@]}" \
        --training.max_steps "$PROXY_STEPS" --output_dir "$PROXY-cache-build" \
        > "$PROXY-cache.log" 2>&1
    mkdir -p "$PROXY_CACHE"
    printf '%s\n' "$built_for" > "$complete"
fi
python -m robustdistill.cli distill --config "$config" "${whisper[@]}" \
    "${data[@]}" --teacher_cache.missing error --training.max_steps "$PROXY_STEPS" \
    --training.eval_every "$PROXY_STEPS" --student.feature_grad_mult 1.0 \
    --output_dir "$PROXY" > "$PROXY.log" 2>&1

#!/usr/bin/env bash
# Does a CNN pruned from a trained teacher CNN (student.narrow_cnn_init: prune) start and train
# better than the same narrow CNN from random weights? No pretrained wav2vec-style CNN exists
# offline, so scripts/proxy_teacher.sh first distils a proxy teacher from the real Whisper
# tiny.en (a HuBERT model, CNN 512 x 7, 2 x 384, whose CNN learned; PROXY=runs/proxy). Then,
# per seed, three students distil that proxy's layers 1 and 2 on clean LibriSpeech: full
# (the `default` shape: the proxy's whole CNN copied), prune (the `pruned` preset's CNN, 256, 256,
# 512 x 5, sliced from the proxy's) and random (that CNN with its first three layers random).
# Every other tensor (CNN layers 3-6 in random, projection, positional convolution, both
# transformer layers) is copied from the proxy in all three. Prints each run's validation loss
# (32 held-out test-other utterances) at every EVAL_EVERY steps.
# docs/performance.md, section 2.
# Usage: PROXY_STEPS=1500 STEPS=400 SEEDS="0 1 2" bash scripts/prune_check.sh   (OUT=runs/prune)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]] && . .venv/bin/activate
export HF_HUB_OFFLINE=1
PROXY_STEPS=${PROXY_STEPS:-1500}
STEPS=${STEPS:-400}
SEEDS=${SEEDS:-0 1 2}
EVAL_EVERY=${EVAL_EVERY:-50}
OUT=${OUT:-runs/prune}
PROXY=${PROXY:-runs/proxy}
LS=../shared/data/librispeech-mini
mkdir -p "$OUT"
data=(--data.train_dir $LS/train-clean-100 --data.validation_dir $LS/test-other
      --data.batch_size 4 --data.max_length_s 2 --data.num_workers 0 --training.cpu true
      --training.max_eval_batches 8 --training.save_every 0 --training.log_every 50
      --training.mixed_precision bf16)
PROXY_STEPS=$PROXY_STEPS PROXY=$PROXY bash scripts/proxy_teacher.sh
for seed in $SEEDS; do for init in full prune random; do
    [ -f "$OUT/s${seed}_$init/final_state.json" ] && continue
    cnn=(--student.conv_dim "[256, 256, 512, 512, 512, 512, 512]" --student.narrow_cnn_init "$init")
    [ "$init" = full ] && cnn=()
    python -m robustdistill.cli distill --config configs/distilhubert.yaml "${data[@]}" \
        --teacher "$PROXY/student" --objectives.layerwise.teacher_layers null ${cnn[@]+"${cnn[@]}"} \
        --training.max_steps "$STEPS" --training.eval_every "$EVAL_EVERY" --seed "$seed" \
        --output_dir "$OUT/s${seed}_$init" > "$OUT/s${seed}_$init.log" 2>&1
done; done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for run in sorted(p for p in out.iterdir() if (p / "metrics.jsonl").is_file()):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    curve = " ".join(f"{r['step']}:{r['loss']:.4f}" for r in rows if r["split"] == "validation")
    print(f"{run.name}: validation loss by step {curve}")
PY

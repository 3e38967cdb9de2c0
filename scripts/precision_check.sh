#!/usr/bin/env bash
# fp32 against CPU bf16 autocast (training.mixed_precision bf16) for the plain DistilHuBERT
# recipe from the real Whisper tiny.en teacher: STEPS steps for each seed in SEEDS, teacher
# targets from the cache (context crop on fixed 2 s chunks, built once in two processes), batch
# 4 x 2 s, validation at the end on 32 held-out test-other utterances. Prints each run's final
# validation loss (and per layer) and its wall time. docs/performance.md, section 0.
# Usage: STEPS=400 SEEDS="0 1" bash scripts/precision_check.sh   (OUT=runs/bf16chk)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]] && . .venv/bin/activate
export HF_HUB_OFFLINE=1
STEPS=${STEPS:-400}
SEEDS=${SEEDS:-0 1}
OUT=${OUT:-runs/bf16chk}
LS=../shared/data/librispeech-mini
mkdir -p "$OUT"
common=(--teacher ../shared/models/whisper-tiny.en --objectives.layerwise.teacher_layers null
        --data.train_dir $LS/train-clean-100 --data.validation_dir $LS/test-other
        --training.max_steps "$STEPS" --data.batch_size 4 --data.max_length_s 2
        --data.num_workers 0 --training.cpu true --training.eval_every "$STEPS"
        --training.max_eval_batches 8 --training.save_every 0 --training.log_every 50
        --teacher_cache.dir runs/cache/whisper-tiny --teacher_cache.context crop
        --teacher_cache.crop_starts chunks)
OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 -m robustdistill.cli \
    cache-teacher --config configs/distilhubert.yaml "${common[@]}" \
    --output_dir "$OUT/cache-build" > "$OUT/cache.log" 2>&1
for seed in $SEEDS; do for mp in no bf16; do
    [ -f "$OUT/s${seed}_$mp/final_state.json" ] && continue
    start=$(date +%s)
    python -m robustdistill.cli distill --config configs/distilhubert.yaml "${common[@]}" \
        --teacher_cache.missing error --seed "$seed" --training.mixed_precision "$mp" \
        --output_dir "$OUT/s${seed}_$mp" > "$OUT/s${seed}_$mp.log" 2>&1
    echo "s${seed}_$mp $(( $(date +%s) - start )) s" >> "$OUT/times.txt"
done; done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
times = dict(line.split()[:2] for line in (out / "times.txt").read_text().splitlines() if " " in line)
for run in sorted(p for p in out.iterdir() if (p / "metrics.jsonl").is_file()):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["split"] == "validation"][-1]
    layers = " ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in sorted(last.items()) if k.endswith("_l1"))
    print(f"{run.name}: step {last['step']}, validation loss {last['loss']:.4f} ({layers}); "
          f"{times.get(run.name, '?')} s")
PY

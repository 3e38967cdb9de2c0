#!/usr/bin/env bash
# What does freezing the student's CNN (student.feature_grad_mult 0, a speed option: no CNN
# backward) cost in the robust recipe, where the CNN sees corrupted audio and the enhancement
# head's gradient reaches it? Per seed, two students distil the proxy teacher of
# scripts/proxy_teacher.sh (PROXY=runs/proxy) with the RobustDistiller recipe (noise, reverb,
# both or none; training halves of the noises and rooms, runs/data/*_train; enhancement head):
# full (the recipe's feature_grad_mult 0.1) and frozen (0). Same seed, same initialisation, same
# batches and corruptions. Then scripts/evidence_probe.py measures each run's final weights on
# held-out speech (24 x 4 s of test-other), noises and rooms (runs/data/*_test), and the
# summary pairs the arms by seed: frozen - full of the L1 distance to the teacher's clean layers
# (mean over layers), per condition, mean and 95 % t interval over the seeds.
# docs/performance.md, section 0.
# Usage: STEPS=1000 SEEDS="0 1 2" bash scripts/frozen_check.sh   (OUT=runs/frozen)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]] && . .venv/bin/activate
export HF_HUB_OFFLINE=1
PROXY_STEPS=${PROXY_STEPS:-1500}
STEPS=${STEPS:-1000}
SEEDS=${SEEDS:-0 1 2}
OUT=${OUT:-runs/frozen}
PROXY=${PROXY:-runs/proxy}
LS=../shared/data/librispeech-mini
mkdir -p "$OUT"
PROXY_STEPS=$PROXY_STEPS PROXY=$PROXY bash scripts/proxy_teacher.sh
runs=()
for seed in $SEEDS; do for arm in full frozen; do
    run="$OUT/s${seed}_$arm"
    runs+=("$run")
    [ -f "$run/final_state.json" ] && continue
    fgm=0.1
    [ "$arm" = frozen ] && fgm=0
    python -m robustdistill.cli distill --config configs/robust_wavlm_base_plus.yaml \
        --teacher "$PROXY/student" --objectives.layerwise.teacher_layers null \
        --data.train_dir $LS/train-clean-100 --data.validation_dir $LS/test-other \
        --data.batch_size 4 --data.max_length_s 2 --data.num_workers 0 --training.cpu true \
        --augmentation.noise_dir runs/data/noise_train --augmentation.rir_dir runs/data/rir_train \
        --training.max_eval_batches 8 --training.log_every 50 --training.mixed_precision bf16 \
        --training.max_steps "$STEPS" --training.eval_every "$((STEPS / 4))" \
        --training.save_every 0 --student.feature_grad_mult "$fgm" --seed "$seed" \
        --output_dir "$run" > "$run.log" 2>&1
done; done
probe="$OUT/probe_seeds_${SEEDS// /-}.json"  # one probe per seed list
[ -f "$probe" ] || python scripts/evidence_probe.py "${runs[@]}" --out "$probe" > "$probe.log" 2>&1
python - "$probe" <<'PY'
import json, sys
import numpy as np
from scipy import stats
probe = json.load(open(sys.argv[1]))
final = {}
for run, states in probe["runs"].items():
    seed, arm = run.rstrip("/").rsplit("/", 1)[1][1:].split("_")
    final[(arm, seed)] = states[max(states, key=int)]["conditions"]
seeds = sorted({s for _, s in final})
print(f"L1 distance to the teacher's clean layers (mean over layers), final step, seeds {seeds}")
print("| condition | full | frozen | frozen - full, mean [95 % t interval] |")
print("|---|---|---|---|")
for cond in final[("full", seeds[0])]:
    l1 = {arm: np.array([np.mean([v["l1"] for v in final[(arm, s)][cond].values()])
                         for s in seeds]) for arm in ("full", "frozen")}
    d = l1["frozen"] - l1["full"]
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan
    print(f"| {cond} | {l1['full'].mean():.4f} | {l1['frozen'].mean():.4f} | "
          f"{d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}] |")
PY

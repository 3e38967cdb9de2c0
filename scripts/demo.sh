#!/usr/bin/env bash
# Offline CPU demo: write a small random WavLM teacher, distil a 2-layer student from it on
# generated speech-like audio with on-the-fly noise and simulated reverberation, export it,
# and reload it with AutoModel.from_pretrained.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export HF_HUB_OFFLINE=1
[ -f runs/demo-teacher/config.json ] || robustdistill make-teacher --family wavlm --preset small --out runs/demo-teacher
rm -rf runs/demo  # the demo's own output: a second call starts again (a real run refuses)
accelerate launch --cpu --num_processes 1 distill.py --config configs/demo.yaml "$@"
python - <<'PY'
import torch
from transformers import AutoFeatureExtractor, AutoModel
model = AutoModel.from_pretrained("runs/demo/student")
AutoFeatureExtractor.from_pretrained("runs/demo/student")
out = model(torch.randn(1, 16000), output_hidden_states=True)
print(f"exported student: {type(model).__name__}, {len(out.hidden_states)} hidden states of "
      f"shape {tuple(out.hidden_states[-1].shape)}, "
      f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
PY

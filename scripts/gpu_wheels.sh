#!/usr/bin/env bash
# Wheels a lent GPU machine lacks for benchmarks/gpu_suite.sh, downloaded here into .whl/
# (gitignored; about 3 MB). That machine has Python 3.12 with its own torch, transformers,
# accelerate, safetensors and tqdm, and reaches no registry. Then, with the device tool:
#   run(carry=[".whl"], command=
#     "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
#      && export PYTHONPATH=/tmp/site:$PWD && OUT=$OUT bash benchmarks/gpu_suite.sh --repeats 6")
# Without runs/data (ignored, not carried) the benchmarks use generated noise and simulated rooms.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "soundfile==0.14.0" "cffi>=1.17" pycparser "soxr==0.5.0.post1" "pyroomacoustics==0.10.1" dill
ls .whl

#!/usr/bin/env bash
# SUPERB-style robustness matrix (issues 3 and 7): up to three upstreams x five task configs x
# seeds, then per task one multi-seed aggregate per upstream and one paired `compare`.
# Results: runs/superb/<task>/<upstream>/seed<N>/ (one run), runs/superb/<task>/<upstream>/
# (mean over the seeds done so far) and runs/superb/<task>/compare/ (table with intervals and
# paired tests); numbers and commands are reported in docs/downstream_results.md.
#
# Usage (from the repository root):
#   [SEEDS="0 1 2"] scripts/superb_matrix.sh TEACHER RANDOM STUDENT [TASK ...]
#   [SEEDS="0 1 2"] scripts/superb_matrix.sh NAME=UPSTREAM [NAME=UPSTREAM ...] [TASK ...]
#     TEACHER / RANDOM / STUDENT: hub ids or local model folders; "-" skips that upstream.
#     NAME=UPSTREAM: any number of named upstreams (names: letters, digits, _ and -).
#     TASK: any of kws sid sv se asr (default: all five).
#   e.g. SEEDS="0 1 2" scripts/superb_matrix.sh ../shared/models/whisper-tiny.en \
#          runs/robust-whisper-v2/student_init runs/robust-whisper-v2/student kws sid sv
#
# Noise / rooms: the project's one split (scripts/split_shared_data.sh): the SE head trains on
# runs/data/noise_train + rir_train (named in its config); every task is tested on
# runs/data/noise_test + rir_test. The seed draws the splits, the noise segment and room of each
# test utterance (the same across SNRs) and the head's initialisation and batches; all upstreams
# of a seed hear identical test audio. Seeds run outermost, so stopping early leaves complete
# seeds; after each seed the aggregates and comparisons are refreshed.
# Each task's compare/ covers every upstream aggregated under SUPERB_OUT/<task>, from this call
# or an earlier one. Set SUPERB_OUT (default runs/superb) and NOISE_TEST / RIR_TEST to move things. Runs are
# sequential, one thread each (OMP/MKL_NUM_THREADS=1: faster than two oversubscribed threads on a
# 2-core machine).
set -euo pipefail
# the project environment of scripts/setup.sh, unless one is active already
[[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]] && . .venv/bin/activate

UPSTREAMS=()  # "name:path" pairs
if [[ ${1:-} == *=* ]]; then
    while [[ $# -gt 0 && $1 == *=* ]]; do
        name=${1%%=*}
        [[ $name =~ ^[A-Za-z0-9_-]+$ ]] || { echo "bad upstream name '$name'" >&2; exit 2; }
        UPSTREAMS+=("$name:${1#*=}")
        shift
    done
else
    if [[ $# -lt 3 ]]; then
        sed -n '7,15p' "$0" >&2
        exit 2
    fi
    UPSTREAMS=("teacher:$1" "random:$2" "student:$3")
    shift 3
fi
TASKS=("$@")
[[ ${#TASKS[@]} -eq 0 ]] && TASKS=(kws sid sv se asr)
read -r -a SEED_LIST <<< "${SEEDS:-0}"

OUT=${SUPERB_OUT:-runs/superb}
NOISE_TEST=${NOISE_TEST:-runs/data/noise_test}
RIR_TEST=${RIR_TEST:-runs/data/rir_test}
CONDITIONS=(clean snr-5 snr0 snr5 snr10 snr20 reverb)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
PYTHON=${PYTHON:-python}
for d in "$NOISE_TEST" "$RIR_TEST"; do
    [[ -d $d ]] || { echo "missing $d: run scripts/split_shared_data.sh first" >&2; exit 2; }
done

task_of() {  # short name -> "--task value:config"
    case $1 in
        kws) echo "ks:downstream/tasks/utterance_classification/kws_fsdd_cpu.yaml" ;;
        sid) echo "sid:downstream/tasks/utterance_classification/sid_librispeech_cpu.yaml" ;;
        sv) echo "asv:downstream/tasks/speaker_verification/sv_librispeech_cpu.yaml" ;;
        se) echo "se:downstream/tasks/speech_enhancement/librispeech_cpu.yaml" ;;
        asr) echo "asr:downstream/tasks/asr/librispeech_cpu.yaml" ;;
        *) echo "unknown task '$1' (use kws sid sv se asr)" >&2; return 2 ;;
    esac
}

summarise() {  # aggregate this call's upstreams' seeds so far, then compare every upstream
    # aggregated under $OUT/<task> (earlier calls' too: a call with other upstreams adds to the
    # comparison instead of replacing it)
    local short=$1 name runs dir found=()
    for pair in "${UPSTREAMS[@]}"; do
        name=${pair%%:*}
        mapfile -t runs < <(ls "$OUT/$short/$name"/seed*/results.json 2>/dev/null)
        [[ ${#runs[@]} -eq 0 ]] && continue
        "$PYTHON" -m downstream.cli aggregate "${runs[@]}" --out "$OUT/$short/$name"
    done
    for dir in "$OUT/$short"/*/; do
        [[ $(basename "$dir") == compare ]] && continue
        [[ -f $dir/results.json ]] && found+=("${dir%/}/results.json")
    done
    if [[ ${#found[@]} -gt 0 ]]; then
        "$PYTHON" -m downstream.cli compare "${found[@]}" --out "$OUT/$short/compare"
    fi
}

for seed in "${SEED_LIST[@]}"; do
    for short in "${TASKS[@]}"; do
        spec=$(task_of "$short")
        task=${spec%%:*} config=${spec#*:}
        for pair in "${UPSTREAMS[@]}"; do
            name=${pair%%:*} upstream=${pair#*:}
            [[ $upstream == "-" ]] && continue
            dir=$OUT/$short/$name/seed$seed
            if [[ -f $dir/results.json ]]; then
                echo "== $short / $name / seed $seed: done already ($dir)" >&2
                continue
            fi
            mkdir -p "$dir"
            echo "== $short / $name / seed $seed: $upstream -> $dir" >&2
            "$PYTHON" -m downstream.cli evaluate --task "$task" --upstream "$upstream" \
                --config "$config" --out "$dir" --conditions "${CONDITIONS[@]}" \
                --test-noise-dir "$NOISE_TEST" --test-rir-dir "$RIR_TEST" \
                --seed "$seed" > "$dir.log" 2>&1
        done
        summarise "$short"
    done
done

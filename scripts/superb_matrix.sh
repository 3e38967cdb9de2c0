#!/usr/bin/env bash
# SUPERB-style robustness matrix (issue 3): three upstreams x five task configs, then one
# `compare` per task. Results: runs/superb/<task>/<upstream>/ and runs/superb/<task>/compare/;
# numbers and commands are reported in docs/downstream_results.md.
#
# Usage (from the repository root):
#   scripts/superb_matrix.sh TEACHER RANDOM STUDENT [TASK ...]
#     TEACHER / RANDOM / STUDENT: hub ids or local model folders; "-" skips that upstream.
#     TASK: any of kws sid sv se asr (default: all five).
#   e.g. scripts/superb_matrix.sh ../shared/models/whisper-tiny.en \
#          runs/robust-whisper-cpu/student_init runs/robust-whisper-cpu/student
#
# Noise / RIR split (folders of symlinks made here, outside git): training noise
# doing_the_dishes + exercise_bike, training rooms small_room + hall (only the SE task trains
# on corrupted audio); test noise running_tap + dude_miaowing, test rooms medium_room +
# large_room. Every run uses seed 0, so the three upstreams of a task see identical test audio.
# Set SUPERB_DATA (default ../shared/data) and SUPERB_OUT (default runs/superb) to move them.
# Runs are sequential, one thread each (OMP/MKL_NUM_THREADS=1: faster than two oversubscribed
# threads on a 2-core machine).
set -euo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '5,11p' "$0" >&2
    exit 2
fi
TEACHER=$1 RANDOM_INIT=$2 STUDENT=$3
shift 3
TASKS=("$@")
[[ ${#TASKS[@]} -eq 0 ]] && TASKS=(kws sid sv se asr)

DATA=${SUPERB_DATA:-../shared/data}
OUT=${SUPERB_OUT:-runs/superb}
CONDITIONS=(clean snr-5 snr0 snr5 snr10 snr20 reverb)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
PYTHON=${PYTHON:-python}

# Disjoint train/test noise and RIR folders (symlinks; the SE config names the train ones).
link() {  # link DIR FILE...
    local dir=$1
    shift
    mkdir -p "$dir"
    for f in "$@"; do ln -sfn "$(realpath "$f")" "$dir/$(basename "$f")"; done
}
link "$OUT/data/noise_train" "$DATA/noise/doing_the_dishes.wav" "$DATA/noise/exercise_bike.wav"
link "$OUT/data/noise_test" "$DATA/noise/running_tap.wav" "$DATA/noise/dude_miaowing.wav"
link "$OUT/data/rir_train" "$DATA/rir/small_room.wav" "$DATA/rir/hall.wav"
link "$OUT/data/rir_test" "$DATA/rir/medium_room.wav" "$DATA/rir/large_room.wav"

task_of() {  # short name -> "--task value:config"
    case $1 in
        kws) echo "utterance_classification:downstream/tasks/utterance_classification/kws_fsdd_cpu.yaml" ;;
        sid) echo "utterance_classification:downstream/tasks/utterance_classification/sid_librispeech_cpu.yaml" ;;
        sv) echo "speaker_verification:downstream/tasks/speaker_verification/sv_librispeech_cpu.yaml" ;;
        se) echo "speech_enhancement:downstream/tasks/speech_enhancement/librispeech_cpu.yaml" ;;
        asr) echo "asr:downstream/tasks/asr/librispeech_cpu.yaml" ;;
        *) echo "unknown task '$1' (use kws sid sv se asr)" >&2; return 2 ;;
    esac
}

for short in "${TASKS[@]}"; do
    spec=$(task_of "$short")
    task=${spec%%:*} config=${spec#*:}
    mkdir -p "$OUT/$short"
    for pair in "teacher:$TEACHER" "random:$RANDOM_INIT" "student:$STUDENT"; do
        name=${pair%%:*} upstream=${pair#*:}
        [[ $upstream == "-" ]] && continue
        dir=$OUT/$short/$name
        echo "== $short / $name: $upstream -> $dir" >&2
        "$PYTHON" -m downstream.cli evaluate --task "$task" --upstream "$upstream" \
            --config "$config" --out "$dir" --conditions "${CONDITIONS[@]}" \
            --test-noise-dir "$OUT/data/noise_test" --test-rir-dir "$OUT/data/rir_test" \
            --seed 0 2>&1 | tee "$dir.log"
    done
    # Compare every upstream of this task that has results (also from earlier invocations).
    mapfile -t found < <(ls "$OUT/$short"/{teacher,random,student}/results.json 2>/dev/null)
    if [[ ${#found[@]} -gt 0 ]]; then
        "$PYTHON" -m downstream.cli compare "${found[@]}" --out "$OUT/$short/compare"
    fi
done

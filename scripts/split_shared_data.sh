#!/usr/bin/env bash
# The project's one train/test split of ../shared/data's noise and rooms, as symlink folders under
# runs/data/ (gitignored). Every experiment that claims robustness to *unseen* noise or rooms
# distils and trains heads on the *_train folders and tests on the *_test folders.
#   noise: train = doing_the_dishes, dude_miaowing;  test = exercise_bike, running_tap
#   rooms: train = hall, medium_room (both Elveden Hall, OpenAIR);
#          test  = large_room (a pool), small_room (a studio live room): unseen venues.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/data}
[ -d "$shared/noise" ] || { echo "no $shared/noise: nothing to split" >&2; exit 1; }
link() {  # link DEST_DIR SRC_FILE...
  local dest=$1; shift
  rm -rf "$dest"; mkdir -p "$dest"
  for f in "$@"; do ln -s "$(realpath "$f")" "$dest/"; done
}
link runs/data/noise_train "$shared/noise/doing_the_dishes.wav" "$shared/noise/dude_miaowing.wav"
link runs/data/noise_test "$shared/noise/exercise_bike.wav" "$shared/noise/running_tap.wav"
link runs/data/rir_train "$shared/rir/hall.wav" "$shared/rir/medium_room.wav"
link runs/data/rir_test "$shared/rir/large_room.wav" "$shared/rir/small_room.wav"
echo "runs/data/{noise,rir}_{train,test} ready"

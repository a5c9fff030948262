#!/usr/bin/env bash
# Leave-one-speaker-out on FSDD: one fold per held-out speaker, each trained on the other five
# with the same recipe as `make demo`, then the held-out speakers pooled (`pvae-model pool`).
#
#   pipelines/loso.sh [--speakers "george jackson ..."] [--parallel 2] [--threads 1]
#                     [--config configs/pvae_fast.yaml] [--epochs N] [--out exp/loso] [--data DIR]
#                     [--stage N] [--stop-stage M]
#
# Per fold OUT/<speaker>/: 0 prepare --test-speakers <speaker> (its 500 takes are test; the
# others keep the official split), 1 trim, 2 perturb (speed 0.9/1.0/1.1 with a noise floor up to 50 ms where
# the file cut the trim's margin, train split only),
# 3 fbank (40-3700 Hz, the band FSDD's 8 kHz recordings hold), 4 shard, 5 train, 6 evaluate.
# --parallel folds run at a time with --threads torch threads each (2 x 1 on a 2-core machine:
# a fold then trains fewer epochs in the config's max_minutes than `make demo` does: the epochs
# are in each fold's metrics.jsonl and in the pooled table). --epochs N trains every fold exactly N
# epochs with no time budget instead, so that the folds match whatever the machine's load.
# Then: OUT/loso.md and OUT/loso.json.
# Every stage resumes, so rerunning continues; the folds can run on different machines.
set -euo pipefail
speakers="george jackson lucas nicolas theo yweweler"; parallel=2; threads=1; epochs=
root=$(cd "$(dirname "$0")/.." && pwd)
config=$root/configs/pvae_fast.yaml; out=$root/exp/loso; data=${PVAE_DATA:-}; stage=0; stop_stage=100
help_lines=2,18
. "$root/pipelines/parse_options.sh"
[ -n "$data" ] || data=$root/../shared/data
budget=(); [ -z "$epochs" ] || budget=(--set epochs="$epochs" --set max_minutes=0)
want() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

mkdir -p "$out"
"$bin/pvae-data" shard images "$data/mnist" "$out/shards_images" -q

fold() {
  local spk=$1 d=$out/$1
  want 0 && "$bin/pvae-data" prepare fsdd "$data/fsdd" "$d/prepare" --test-speakers "$spk" -j 1 -q
  want 1 && "$bin/pvae-data" trim "$d/prepare/utterances.jsonl" "$d/trim" -j 1 -q
  want 2 && "$bin/pvae-data" perturb "$d/trim/segments.jsonl" "$d/perturb" --speed 0.9,1.0,1.1 --edge-pad 0.05 -q
  want 3 && "$bin/pvae-data" fbank "$d/perturb/segments.jsonl" "$d/fbank" --low-freq 40 --high-freq 3700 -j 1 -q
  want 4 && "$bin/pvae-data" shard audio "$d/fbank" "$d/shards_audio" -q
  want 5 && "$bin/pvae-model" train --config "$config" --out "$d/pvae" --resume -q \
    --audio-shards "$d/shards_audio" --image-shards "$out/shards_images" --set num_threads="$threads" "${budget[@]}"
  want 6 && "$bin/pvae-model" evaluate "$d/pvae" --checkpoint last > "$d/pvae/evaluate.log"
  echo "[$(date +%T)] fold $spk done"
}

running=0
for spk in $speakers; do
  fold "$spk" > "$out/$spk.log" 2>&1 &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then wait -n; running=$((running - 1)); fi
done
wait
if want 6; then
  runs=(); for spk in $speakers; do runs+=("$out/$spk/pvae"); done
  "$bin/pvae-model" pool "${runs[@]}" --out "$out/loso.json" | tee "$out/loso.md"
fi

#!/usr/bin/env bash
# Leave-one-speaker-out on FSDD: one fold per held-out speaker, each trained on the other five
# with the same recipe as `make demo`, then the held-out speakers pooled (`pvae-model pool`).
#
#   pipelines/loso.sh [--speakers "george jackson ..."] [--parallel 2] [--threads 1]
#                     [--config configs/pvae_fast.yaml] [--epochs N] [--out exp/loso] [--data DIR]
#                     [--polish-epochs 24] [--stage N] [--stop-stage M]
#
# Per fold OUT/<speaker>/: 0 prepare --test-speakers <speaker> (its 500 takes are test; the
# others keep the official split), 1 trim, 2 perturb (speed 0.9/1.0/1.1 with a noise floor up to 50 ms where
# the file cut the trim's margin, train split only),
# 3 fbank (40-3700 Hz, the band FSDD's 8 kHz recordings hold), 4 shard (2-4 also make the same
# copies without the floor: shards_audio_clean), 5 train (pvae), then, as `make demo` does, the
# speech decoder alone trained --polish-epochs more on the clean copies (pvae_polished; 0: none),
# 6 evaluate (the polished run, with the first stage's shards and judges).
# --parallel folds run at a time with --threads torch threads each (2 x 1 on a 2-core machine:
# a fold then trains fewer epochs in the config's max_minutes than `make demo` does: the epochs
# are in each fold's metrics.jsonl and in the pooled table). --epochs N trains every fold exactly N
# epochs with no time budget instead, so that the folds match whatever the machine's load.
# Then: OUT/loso.md and OUT/loso.json.
# Every stage resumes, so rerunning continues; the folds can run on different machines.
set -euo pipefail
speakers="george jackson lucas nicolas theo yweweler"; parallel=2; threads=1; epochs=; polish_epochs=24
root=$(cd "$(dirname "$0")/.." && pwd)
config=$root/configs/pvae_fast.yaml; out=$root/exp/loso; data=${PVAE_DATA:-}; stage=0; stop_stage=100
help_lines=2,21
. "$root/pipelines/parse_options.sh"
[ -n "$data" ] || data=$root/../shared/data
budget=(); [ -z "$epochs" ] || budget=(--set epochs="$epochs" --set max_minutes=0)
want() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

mkdir -p "$out"
"$bin/pvae-data" shard images "$data/mnist" "$out/shards_images" -q

run_of() { if [ "$polish_epochs" -gt 0 ]; then echo "$out/$1/pvae_polished"; else echo "$out/$1/pvae"; fi; }

fold() {
  local spk=$1 d=$out/$1
  want 0 && "$bin/pvae-data" prepare fsdd "$data/fsdd" "$d/prepare" --test-speakers "$spk" -j 1 -q
  want 1 && "$bin/pvae-data" trim "$d/prepare/utterances.jsonl" "$d/trim" -j 1 -q
  local c
  for c in "" _clean; do
    want 2 && "$bin/pvae-data" perturb "$d/trim/segments.jsonl" "$d/perturb$c" --speed 0.9,1.0,1.1 \
      $([ -n "$c" ] || echo --edge-pad 0.05) -q
    want 3 && "$bin/pvae-data" fbank "$d/perturb$c/segments.jsonl" "$d/fbank$c" --low-freq 40 --high-freq 3700 -j 1 -q
    want 4 && "$bin/pvae-data" shard audio "$d/fbank$c" "$d/shards_audio$c" -q
    [ "$polish_epochs" -gt 0 ] || break
  done
  want 5 && "$bin/pvae-model" train --config "$config" --out "$d/pvae" --resume -q \
    --audio-shards "$d/shards_audio" --image-shards "$out/shards_images" --set num_threads="$threads" "${budget[@]}"
  want 5 && [ "$polish_epochs" -gt 0 ] && "$bin/pvae-model" train --config "$config" --out "$d/pvae_polished" \
    --resume -q --audio-shards "$d/shards_audio_clean" --image-shards "$out/shards_images" --set num_threads="$threads" \
    --set init_from="$d/pvae" --set 'train_only=[dec_a]' --set epochs="$polish_epochs" --set max_minutes=0 --set eval_every=0
  want 6 && "$bin/pvae-model" evaluate "$(run_of "$spk")" --checkpoint last --audio-shards "$d/shards_audio" \
    > "$(run_of "$spk")/evaluate.log"
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
  runs=(); for spk in $speakers; do runs+=("$(run_of "$spk")"); done
  "$bin/pvae-model" pool "${runs[@]}" --out "$out/loso.json" | tee "$out/loso.md"
fi

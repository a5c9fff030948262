#!/usr/bin/env bash
# FSDD + MNIST -> PVAE, stage by stage (Kaldi/ESPnet style). Every stage skips or resumes
# finished work, so rerunning after an interruption continues where it stopped.
#
#   pipelines/fsdd_mnist.sh [--stage N] [--stop-stage M] [--data DIR] [--out DIR] [--jobs J] [--config YAML]
#                           [--base-epochs E] [--speech-base-labels W] [--test-speakers S,S] [--speed F,F,F]
#                           [--edge-pad S]
#
#   0 prepare   (download FSDD/MNIST if absent) FSDD recordings -> utterances.jsonl; every take of
#               --test-speakers (george; "" = none, the official split only) is a held-out test voice
#   1 trim      energy VAD -> segments.jsonl, then speed-perturbed training copies (--speed 0.9,1.0,1.1;
#               "1.0" = none), as Kaldi's perturb_data_dir_speed.sh; each copy cut at its file's edge gets
#               up to --edge-pad seconds (0.05) of a noise floor there (docs/study/voices.md, "Silence around the word")
#   2 fbank     80-dim Kaldi FBank over 40-3700 Hz (the band of FSDD's 8 kHz recordings, so that any
#               input, whatever its rate, is seen within it) -> feats.scp, features.jsonl, CMVN
#   3 shard     audio + MNIST image shards, validated
#   4 train     PVAE (configs/pvae_fast.yaml: 30 min on 2 CPU cores)
#   5 evaluate  purity, inertia, t-SNE, generation, coherence -> OUT/pvae/eval
#   6 report    OUT/report.html
#   7 bridge    VAE-sp and VAE-im (--base-epochs, same config), the latent-translation bridge
#               between them (Tian & Engel 2019; configs/bridge.yaml), its evaluation, and the
#               report with PVAE and the bridge side by side.  The VAE-sp is trained with a
#               digit classifier on its latent (weight --speech-base-labels, 300; 0 = the paper's
#               unsupervised VAE-sp, on which image->speech stays near 75 %: docs/study/bridge.md)
set -euo pipefail
stage=0; stop_stage=100; jobs=2; base_epochs=150; speech_base_labels=300; test_speakers=george; speed=0.9,1.0,1.1
edge_pad=0.05
root=$(cd "$(dirname "$0")/.." && pwd)
data=${PVAE_DATA:-}
out=$root/exp/fsdd_mnist
config=$root/configs/pvae_fast.yaml
help_lines=2,24
. "$root/pipelines/parse_options.sh"  # --name value for each variable above; sets $bin
. "$root/pipelines/common_stages.sh"
# Data: --data or $PVAE_DATA, else ../shared/data when present, else OUT/data, where stage 0
# downloads what is missing (sha256-verified, resumable; URLs from $PVAE_FSDD_URL/$PVAE_MNIST_URL).
if [ -z "$data" ]; then
  if [ -d "$root/../shared/data/fsdd" ]; then data=$root/../shared/data; else data=$out/data; fi
fi
have() { case $1 in fsdd) [ -d "$data/fsdd/recordings" ] ;; mnist) ls "$data"/mnist/*-ubyte.gz >/dev/null 2>&1 ;; esac; }

if want 0; then
  for ds in fsdd mnist; do
    have $ds || { run 0 "download $ds -> $data/$ds"; "$bin/pvae-data" download $ds "$data" -q; }
  done
  held=(); [ -n "$test_speakers" ] && held=(--test-speakers "$test_speakers")
  run 0 prepare; "$bin/pvae-data" prepare fsdd "$data/fsdd" "$out/prepare" "${held[@]}" -j "$jobs" -q
fi
if want 1; then
  run 1 trim; "$bin/pvae-data" trim "$out/prepare/utterances.jsonl" "$out/trim" -j "$jobs" -q
  "$bin/pvae-data" perturb "$out/trim/segments.jsonl" "$out/perturb" --speed "$speed" --edge-pad "$edge_pad" -q
fi
segments="$out/perturb/segments.jsonl"
fbank_opts="--low-freq 40 --high-freq 3700"
mnist="$data/mnist"
common_stages
if want 7; then
  for m in vae-sp vae-im; do
    run 7 "train $m ($base_epochs epochs)"
    labels=(); [ $m = vae-sp ] && labels=(--set "pvae.baseline.label_weight=$speech_base_labels")
    "$bin/pvae-model" train --config "$config" --model "$m" --out "$out/$m" --resume -q \
      --audio-shards "$out/shards/audio" --image-shards "$out/shards/images" --epochs "$base_epochs" --max-minutes 0 \
      "${labels[@]}"
  done
  run 7 "bridge between $out/vae-sp and $out/vae-im"
  "$bin/pvae-model" bridge --config "$root/configs/bridge.yaml" --speech-run "$out/vae-sp" --image-run "$out/vae-im" \
    --out "$out/bridge" --resume -q
  "$bin/pvae-model" evaluate "$out/bridge" > "$out/bridge/evaluate.log"
  reported=("$out/bridge")
  [ -f "$out/pvae/eval/metrics.json" ] && reported=("$out/pvae" "${reported[@]}")
  "$bin/pvae-model" report "${reported[@]}" --out "$out/report.html"
fi

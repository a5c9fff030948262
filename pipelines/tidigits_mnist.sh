#!/usr/bin/env bash
# LDC TIDIGITS + MNIST -> PVAE, stage by stage (Kaldi/ESPnet style), for users who own TIDIGITS.
# Connected-digit strings are cut into single digits by forced alignment, as in the paper.
# Every stage skips or resumes finished work, so rerunning after an interruption continues.
#
#   pipelines/tidigits_mnist.sh --tidigits DIR [--mnist DIR] [--stage N] [--stop-stage M] [--out DIR] [--jobs J] [--config YAML]
#
#   0 prepare   TIDIGITS (SPHERE, train/ and test/) -> utterances.jsonl (MNIST downloaded if absent)
#   1 segment   whole-word HMM aligner trained on the train split; one segment per digit, VAD-trimmed
#   2 fbank     80-dim Kaldi FBank -> feats.scp, features.jsonl, CMVN
#   3 shard     audio + MNIST image shards, validated
#   4 train     PVAE (configs/pvae_fast.yaml)
#   5 evaluate  purity, inertia, t-SNE, generation, coherence -> OUT/pvae/eval
#   6 report    OUT/report.html
set -euo pipefail
stage=0; stop_stage=100; jobs=2; tidigits=""; mnist=""
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/exp/tidigits_mnist
config=$root/configs/pvae_fast.yaml
help_lines=2,16
. "$root/pipelines/parse_options.sh"  # --name value for each variable above; sets $bin
. "$root/pipelines/common_stages.sh"
[ -n "$tidigits" ] && [ -d "$tidigits" ] || { echo "--tidigits DIR (the LDC93S10 root) is required" >&2; exit 1; }
# MNIST: --mnist, else $PVAE_DATA/mnist, else ../shared/data/mnist, else downloaded into OUT/data/mnist.
if [ -z "$mnist" ]; then
  for d in "${PVAE_DATA:-/nonexistent}/mnist" "$root/../shared/data/mnist" "$out/data/mnist"; do
    if ls "$d"/*-ubyte.gz >/dev/null 2>&1; then mnist=$d; break; fi
  done
fi

if want 0; then
  if [ -z "$mnist" ]; then
    run 0 "download mnist -> $out/data/mnist"; "$bin/pvae-data" download mnist "$out/data" -q; mnist=$out/data/mnist
  fi
  run 0 prepare; "$bin/pvae-data" prepare tidigits "$tidigits" "$out/prepare" -j "$jobs" -q
fi
[ -n "$mnist" ] || mnist=$out/data/mnist
if want 1; then
  run 1 "segment (forced alignment)"  # trains OUT/segment/model once; finished chunks are reused
  "$bin/pvae-data" segment "$out/prepare/utterances.jsonl" "$out/segment" -j "$jobs" -q \
    --export-ctm "$out/segment/alignments.ctm"
fi
segments="$out/segment/segments.jsonl"
common_stages

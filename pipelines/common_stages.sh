# Stages 2-6 shared by the recipes (sourced, like ESPnet's asr.sh): the caller sets bin, out,
# jobs, config, stage, stop_stage, the manifest to featurise ($segments) and the MNIST dir ($mnist);
# optionally $fbank_opts (extra `pvae-data fbank` flags).
run() { echo "[$(date +%T)] stage $1: $2"; }
want() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

common_stages() {
  if want 2; then
    run 2 fbank; "$bin/pvae-data" fbank "$segments" "$out/fbank" -j "$jobs" -q ${fbank_opts:-}
  fi
  if want 3; then
    run 3 shard
    "$bin/pvae-data" shard audio "$out/fbank" "$out/shards/audio" -q
    "$bin/pvae-data" shard images "$mnist" "$out/shards/images" -q
    "$bin/pvae-data" validate "$out/shards/audio"
    "$bin/pvae-data" validate "$out/shards/images"
  fi
  if want 4; then
    run 4 train
    "$bin/pvae-model" train --config "$config" --out "$out/pvae" --resume -q \
      --audio-shards "$out/shards/audio" --image-shards "$out/shards/images"
  fi
  if want 5; then
    run 5 evaluate; "$bin/pvae-model" evaluate "$out/pvae" --checkpoint last > "$out/pvae/evaluate.log"
    echo "evaluation: $out/pvae/eval (metrics.json, figures, WAVs)"
  fi
  if want 6; then
    run 6 report; "$bin/pvae-model" report "$out/pvae" --out "$out/report.html"
  fi
}

#!/usr/bin/env bash
# sha256 of every file `make demo-data` writes (logs excepted: they are time-stamped), for the
# "byte-identical before and after" check of a refactoring:
#   benchmarks/demo_data_hashes.sh OUT_DIR > after.txt    (OUT_DIR is removed first)
# Run the old tree with PYTHONPATH=OLD_TREE into the *same* OUT_DIR (manifests hold absolute
# paths), then `diff before.txt after.txt`.
set -euo pipefail
out=${1:?usage: $0 OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
data=${DATA:-$root/../shared/data}
bin=${BIN:-$root/.venv/bin}
rm -rf "$out"
{
  "$bin/pvae-data" prepare fsdd "$data/fsdd" "$out/prepare" -j 2 -q
  "$bin/pvae-data" trim "$out/prepare/utterances.jsonl" "$out/trim" -j 2 -q
  "$bin/pvae-data" fbank "$out/trim/segments.jsonl" "$out/fbank" -j 2 -q
  "$bin/pvae-data" shard audio "$out/fbank" "$out/shards/audio" -q
  "$bin/pvae-data" shard images "$data/mnist" "$out/shards/images" -q
} >/dev/null
cd "$out" && find . -type f ! -name '*.log' -print0 | sort -z | xargs -0 sha256sum

#!/usr/bin/env bash
# A trained george-fold run scored on voices it never heard, the way docs/voices.md's study scores
# every arm (speech->image with the prior style, through the run's own front end):
#   benchmarks/score_new_voices.sh RUN...        (after the test sets below exist under $SETS)
# writes RUN/new_voices/: evaluate.log (+ RUN/eval: the seen speakers), george.json (his 500 FSDD
# takes), espeak.json (12 espeak-ng voices, 360 WAVs), recording.json (george recorded ten other
# ways), conditions.json (george made female / child-like / noisy by Praat and sox).
# benchmarks/new_voice_table.py reads them. The test sets, made once (espeak-ng, sox, praat-parselmouth):
#   PYTHONPATH=. python benchmarks/outside_voices.py make exp/voices
#   PYTHONPATH=. python benchmarks/voice_conditions.py make exp/conditions_george --speaker george --takes 20
#   PYTHONPATH=. python benchmarks/voice_conditions.py make exp/recording_george --speaker george --takes 20 --kind recording
#   george's 500 takes as a list: benchmarks/score_new_voices.sh makes $SETS/fsdd_lists/george500 itself.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/.venv/bin}
sets=${SETS:-exp}
data=${DATA:-$root/../shared/data}
[ $# -ge 1 ] || { echo "usage: $0 RUN..." >&2; exit 2; }
for d in "$sets/voices" "$sets/conditions_george" "$sets/recording_george"; do
  [ -f "$d/list.csv" ] || { echo "$d/list.csv: no test set (see the header of $0)" >&2; exit 2; }
done
g="$sets/fsdd_lists/george500"
if [ ! -f "$g/list.csv" ]; then
  mkdir -p "$g"
  "$bin/python" - "$data/fsdd/recordings" > "$g/list.csv.tmp" <<'PY'
import glob, os, sys
words = "zero one two three four five six seven eight nine".split()
print("path,transcript,speaker,split,id")
for p in sorted(glob.glob(os.path.join(sys.argv[1], "*_george_*.wav"))):
    d, _, t = os.path.basename(p)[:-4].split("_")
    print(f"{os.path.abspath(p)},{words[int(d)]},george,test,george-{d}-{t}")
PY
  mv "$g/list.csv.tmp" "$g/list.csv"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
score() {  # SCRIPT RUN SET > OUT: one test set through the run's front end (its work directory cleared)
  rm -rf "$2/outside_voices"
  "$bin/python" "$root/benchmarks/$1" score "$2" "$3"
}
for run in "$@"; do
  out="$run/new_voices"
  mkdir -p "$out"
  "$bin/pvae-model" evaluate "$run" --checkpoint last > "$out/evaluate.log" 2>&1
  cp "$sets/voices/voices.json" "$out/espeak.names.json"
  score outside_voices.py "$run" "$g" > "$out/george.json" 2> "$out/george.voices"
  score outside_voices.py "$run" "$sets/voices" > "$out/espeak.json" 2> "$out/espeak.voices"
  score voice_conditions.py "$run" "$sets/recording_george" > "$out/recording.json"
  score voice_conditions.py "$run" "$sets/conditions_george" > "$out/conditions.json"
  echo "$run: scored -> $out"
done

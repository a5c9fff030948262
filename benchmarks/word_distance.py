"""Is a speaker's word closer to the other speakers' same word or to another word?

For two words A and B, each speaker's mean template of each (FBank with per-utterance CMVN,
time-normalised to 10 equal segments, unperturbed utterances of every split) is compared, by RMS
distance, with the mean template of the same words over the other speakers.  A speaker whose A lies
nearer the others' B than the others' A says A the way the rest say B: a confusion the data holds,
not one the model makes up.

    PYTHONPATH=. python benchmarks/word_distance.py exp/demo/shards/audio --words two,four --exclude george
"""

from __future__ import annotations

import argparse

import numpy as np

from pvae_data.perturb import base_speaker
from pvae_data.shards.reader import AudioShards
from pvae_model.normalize import normalize_utterance

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def template(feats: np.ndarray, segments: int = 10) -> np.ndarray:
    x = normalize_utterance(feats)
    edges = np.linspace(0, len(x), segments + 1).astype(int)
    return np.concatenate([x[edges[k]:max(edges[k + 1], edges[k] + 1)].mean(0) for k in range(segments)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shards")
    ap.add_argument("--words", default="two,four")
    ap.add_argument("--exclude", default="", help="speakers left out of the others' templates (e.g. a held-out voice)")
    args = ap.parse_args()
    a, b = (WORDS.index(w) for w in args.words.split(","))
    excluded = set(filter(None, args.exclude.split(",")))
    groups: dict = {}
    for split in ("train", "test"):
        s = AudioShards(args.shards, split)
        for i in range(len(s)):
            spk, label = s.speakers[i], int(s.labels[i])
            if spk == base_speaker(spk) and label in (a, b):
                groups.setdefault((spk, label), []).append(template(s[i].feats))
    mean = {k: np.mean(v, 0) for k, v in groups.items()}
    rms = lambda p, q: float(np.sqrt(((p - q) ** 2).mean()))  # noqa: E731
    print(f"| speaker | its {WORDS[a]} to the others' {WORDS[a]} | to their {WORDS[b]} | its {WORDS[b]} to their {WORDS[b]} | to their {WORDS[a]} |")
    print("| --- | --- | --- | --- | --- |")
    for spk in sorted({k[0] for k in mean}):
        others = [o for o in sorted({k[0] for k in mean}) if o != spk and o not in excluded]
        ta, tb = (np.mean([mean[(o, w)] for o in others], 0) for w in (a, b))
        print(f"| {spk} | {rms(mean[(spk, a)], ta):.3f} | {rms(mean[(spk, a)], tb):.3f} | "
              f"{rms(mean[(spk, b)], tb):.3f} | {rms(mean[(spk, b)], ta):.3f} |")


if __name__ == "__main__":
    main()

"""How much of each word's FBank a floor raises: per kind of recording in a test set, the median
loudest value, the share of (frame, Mel bin) cells more than D dB under it (what
``fbank_floor_db: D`` raises), and the median spread from the 50th to the 99th percentile.
docs/study/voices.md, "A floor under the FBank":

    PYTHONPATH=. python benchmarks/floor_share.py exp/demo/shards/audio exp/recording_george --db 50
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict

import numpy as np
import soundfile as sf

from pvae_model.frontend import SpeechFrontEnd
from pvae_model.normalize import floor_fbank
from pvae_model.run import load_cmvn, load_fbank_config, load_vad_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("audio_shards", help="the run's audio shards (their FBank, trim and CMVN options)")
    ap.add_argument("test_set", help="a folder with list.csv (path, speaker = the kind of recording)")
    ap.add_argument("--db", type=float, default=50.0)
    args = ap.parse_args()
    a = args.audio_shards
    fe = SpeechFrontEnd(fbank=load_fbank_config(a), cmvn_mode="utterance", cmvn=load_cmvn(a), vad=load_vad_config(a))
    to_db = 10 / np.log(10)
    stats = defaultdict(lambda: ([], [], []))
    with open(f"{args.test_set}/list.csv", newline="") as f:
        for row in csv.DictReader(f):
            wave, sr = sf.read(row["path"], dtype="float32")
            feats = fe.raw_features(wave, sr, row["path"])
            peak, under, spread = stats[row["speaker"]]
            peak.append(feats.max() * to_db)
            under.append(float((floor_fbank(feats, args.db) > feats).mean()))  # the cells the floor raises
            spread.append(float(np.percentile(feats, 99) - np.percentile(feats, 50)) * to_db)
    print(f"| kind | n | loudest value, median dB | share under the {args.db:g} dB floor | p50-p99 spread, dB |")
    print("| --- | --- | --- | --- | --- |")
    for kind, (peak, under, spread) in sorted(stats.items()):
        print(f"| {kind} | {len(peak)} | {np.median(peak):.1f} | {np.mean(under):.3f} | {np.median(spread):.1f} |")


if __name__ == "__main__":
    main()

"""What a voice unlike FSDD's costs: a held-out FSDD speaker's takes made into other voices and
other rooms, then a trained run scored on each condition.

FSDD's six voices are adult men recorded close to the microphone. A voice from elsewhere may be a
woman's or a child's (higher pitch, formants of a shorter vocal tract), or recorded in noise or in
a room. This makes those conditions from one speaker's real takes, so that each is measured alone
(DEVELOPERS.md: measure generalisation with speakers held out of FSDD, and perturbations of it):

- ``praat-id``: Praat's "Change gender" with nothing changed (the resynthesis alone; the control
  for the three below);
- ``pitch200``: the pitch median moved to 200 Hz, formants kept;
- ``formant1.15``: formants x1.15 (a shorter vocal tract), pitch kept;
- ``female``: formants x1.15 and pitch 210 Hz; ``child``: formants x1.3 and pitch 280 Hz;
- ``white20`` / ``white10`` / ``pink10``: additive noise at 20 / 10 dB SNR (over the loudest 30 %
  of 10 ms frames);
- ``reverb``: sox's ``reverb 50 50 100``.

``make`` writes the WAVs and a list file (``speaker`` = the condition; the run must have held this
speaker out); ``score`` is ``outside_voices.py score`` on that list, per condition.

    pip install -e '.[bench]'     # praat-parselmouth (Praat's "Change gender"); sox from Debian
    PYTHONPATH=. python benchmarks/voice_conditions.py make exp/conditions_george --speaker george --takes 20
    PYTHONPATH=. python benchmarks/voice_conditions.py score RUN exp/conditions_george
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outside_voices import WORDS, score  # noqa: E402

# name -> ("praat", formant shift ratio, new pitch median (0: unchanged)) | ("noise", kind, SNR dB) | ("sox", effect...)
CONDITIONS = {
    "original": ("copy",),
    "praat-id": ("praat", 1.0, 0),
    "pitch200": ("praat", 1.0, 200),
    "formant1.15": ("praat", 1.15, 0),
    "female": ("praat", 1.15, 210),
    "child": ("praat", 1.3, 280),
    "white20": ("noise", "white", 20),
    "white10": ("noise", "white", 10),
    "pink10": ("noise", "pink", 10),
    "reverb": ("sox", "reverb", "50", "50", "100", "100", "0", "0"),
}


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.normal(size=n)
    if kind == "white":
        return w
    spec = np.fft.rfft(w)
    spec[1:] /= np.sqrt(np.arange(1, len(spec)))  # 1/f power
    spec[0] = 0
    return np.fft.irfft(spec, n)


def add_noise(wave: np.ndarray, kind: str, snr_db: float, rng: np.random.Generator, frame: int = 80) -> np.ndarray:
    """``wave`` plus ``kind`` noise at ``snr_db`` below the mean power of its loudest 30 % of frames."""
    frames = wave[: len(wave) // frame * frame].reshape(-1, frame)
    energy = np.sort((frames ** 2).mean(1))[::-1]
    speech = energy[: max(1, int(0.3 * len(energy)))].mean()
    noise = _noise(kind, len(wave), rng)
    noise *= np.sqrt(speech / 10 ** (snr_db / 10) / (noise ** 2).mean())
    out = wave + noise
    return out / max(1.0, np.abs(out).max() / 0.99)


def make(recordings: Path, out: Path, speaker: str, takes: int) -> None:
    import soundfile as sf

    try:
        import parselmouth
        from parselmouth.praat import call
    except ImportError:
        sys.exit("voice_conditions.py needs praat-parselmouth: pip install -e '.[bench]'")
    rng = np.random.default_rng(0)
    rows = []
    for cond, how in CONDITIONS.items():
        for d in range(10):
            for t in range(takes):
                src = recordings / f"{d}_{speaker}_{t}.wav"
                if not src.exists():
                    sys.exit(f"{src}: no such take (--speaker/--takes)")
                dst = out / "wav" / f"{cond}-{d}-{t}.wav"
                dst.parent.mkdir(parents=True, exist_ok=True)
                if how[0] == "sox":
                    subprocess.run(["sox", str(src), str(dst), *how[1:]], check=True)
                else:
                    wave, sr = sf.read(src)
                    if how[0] == "praat":
                        changed = call(parselmouth.Sound(str(src)), "Change gender", 75, 600, how[1], how[2], 1.0, 1.0)
                        wave, sr = changed.values[0], int(changed.sampling_frequency)
                        wave = wave / max(1.0, np.abs(wave).max() / 0.99)
                    elif how[0] == "noise":
                        wave = add_noise(wave, how[1], how[2], rng)
                    sf.write(dst, wave, sr)
                rows.append({"path": str(dst.resolve()), "transcript": WORDS[d], "speaker": cond, "split": "test",
                             "id": f"{cond}-{d}-{t}"})
    with open(out / "list.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "transcript", "speaker", "split", "id"])
        w.writeheader()
        w.writerows(rows)
    (out / "conditions.json").write_text(json.dumps({"speaker": speaker, "takes": takes, "conditions": CONDITIONS}))
    print(f"{len(rows)} utterances, {len(CONDITIONS)} conditions of {speaker} -> {out / 'list.csv'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out", type=Path)
    m.add_argument("--speaker", default="george")
    m.add_argument("--takes", type=int, default=20, help="takes 0..N-1 of each digit")
    m.add_argument("--recordings", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/fsdd/recordings")
    s = sub.add_parser("score")
    s.add_argument("run", type=Path)
    s.add_argument("conditions", type=Path)
    s.add_argument("--checkpoint", default="last")
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.recordings, a.out, a.speaker, a.takes)
        return
    held = json.loads((a.conditions / "conditions.json").read_text())["speaker"]
    r = score(a.run, a.conditions, a.checkpoint)
    head = {"run": str(a.run), "epoch": r["epoch"], "speaker": held, "n": r["n"]}
    if "per_voice_voice_cmvn" in r:  # a cmvn: speaker run: each condition normalised by its own statistics
        print(json.dumps({**head, "statistics": "the voice's takes",
                          **{k: round(v, 3) for k, v in r["per_voice_voice_cmvn"].items()}}))
    print(json.dumps({**head, "statistics": "one WAV", **{k: round(v, 3) for k, v in r["per_voice"].items()}}))


if __name__ == "__main__":
    main()

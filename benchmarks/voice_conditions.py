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

``--kind recording`` makes the same takes recorded otherwise (the voice unchanged), what a WAV
from elsewhere brings besides its voice:

- ``quiet40``: 40 dB quieter (a far or low-gain microphone; the energy VAD's threshold is
  Kaldi's, on an absolute scale);
- ``clipped``: 20 dB louder, clipped at full scale;
- ``padded``: 1 s of a room's noise floor (white, 55 dB under the speech) before and after, and
  under the speech (FSDD's takes are cut close); ``padded35``: the same floor 35 dB under;
- ``sr44k``: resampled to 44.1 kHz (sox ``rate``), as a WAV at a common rate comes;
- ``phone``: band-passed to 300-3400 Hz (sox ``sinc``), a telephone's channel;
- ``laptop``: a cheap microphone's tilt, bass -12 dB and treble +6 dB (sox ``bass``/``treble``);
- ``dc``: a DC offset of 10 % of full scale;
- ``hum``: 50 Hz mains hum 20 dB under the speech.

``make`` writes the WAVs and a list file (``speaker`` = the condition; the run must have held this
speaker out); ``score`` is ``outside_voices.py score`` on that list, per condition.

    pip install -e '.[bench]'     # praat-parselmouth (Praat's "Change gender"); sox from Debian
    PYTHONPATH=. python benchmarks/voice_conditions.py make exp/conditions_george --speaker george --takes 20
    PYTHONPATH=. python benchmarks/voice_conditions.py make exp/recording_george --speaker george --takes 20 --kind recording
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
# name -> ("gain", dB; clipped at full scale) | ("pad", seconds, noise dB under the speech) | ("sox", effect...) | ("dc", offset)
#         | ("hum", Hz, dB under the speech)
RECORDING = {
    "original": ("copy",),
    "quiet40": ("gain", -40.0),
    "clipped": ("gain", 20.0),
    "padded": ("pad", 1.0, 55.0),
    "padded35": ("pad", 1.0, 35.0),
    "sr44k": ("sox", "rate", "44100"),
    "phone": ("sox", "sinc", "300-3400"),
    "laptop": ("sox", "bass", "-12", "treble", "+6"),
    "dc": ("dc", 0.1),
    "hum": ("hum", 50.0, 20.0),
}
KINDS = {"voice": CONDITIONS, "recording": RECORDING}


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.normal(size=n)
    if kind == "white":
        return w
    spec = np.fft.rfft(w)
    spec[1:] /= np.sqrt(np.arange(1, len(spec)))  # 1/f power
    spec[0] = 0
    return np.fft.irfft(spec, n)


def _speech_power(wave: np.ndarray, frame: int = 80) -> float:
    """The mean power of the loudest 30 % of ``frame``-sample frames."""
    frames = wave[: len(wave) // frame * frame].reshape(-1, frame)
    energy = np.sort((frames ** 2).mean(1))[::-1]
    return float(energy[: max(1, int(0.3 * len(energy)))].mean())


def record(wave: np.ndarray, sr: int, how: tuple, rng: np.random.Generator) -> np.ndarray:
    """``wave`` (floats, full scale 1) as recorded otherwise: one ``RECORDING`` entry (not sox)."""
    if how[0] == "gain":
        return np.clip(wave * 10 ** (how[1] / 20), -1.0, 1.0)
    if how[0] == "dc":
        return np.clip(wave + how[1], -1.0, 1.0)
    level = np.sqrt(_speech_power(wave) / 10 ** (how[-1] / 10))
    if how[0] == "hum":
        out = wave + level * np.sqrt(2) * np.sin(2 * np.pi * how[1] * np.arange(len(wave)) / sr)
        return out / max(1.0, np.abs(out).max() / 0.99)
    pad = np.zeros(int(how[1] * sr))
    out = np.concatenate([pad, wave, pad])
    return out + level * rng.normal(size=len(out))


def add_noise(wave: np.ndarray, kind: str, snr_db: float, rng: np.random.Generator, frame: int = 80) -> np.ndarray:
    """``wave`` plus ``kind`` noise at ``snr_db`` below the mean power of its loudest 30 % of frames."""
    speech = _speech_power(wave, frame)
    noise = _noise(kind, len(wave), rng)
    noise *= np.sqrt(speech / 10 ** (snr_db / 10) / (noise ** 2).mean())
    out = wave + noise
    return out / max(1.0, np.abs(out).max() / 0.99)


def make(recordings: Path, out: Path, speaker: str, takes: int, kind: str = "voice") -> None:
    import soundfile as sf

    try:
        import parselmouth
        from parselmouth.praat import call
    except ImportError:
        sys.exit("voice_conditions.py needs praat-parselmouth: pip install -e '.[bench]'")
    rng = np.random.default_rng(0)
    rows = []
    conditions = KINDS[kind]
    for cond, how in conditions.items():
        for d in range(10):
            for t in range(takes):
                src = recordings / f"{d}_{speaker}_{t}.wav"
                if not src.exists():
                    sys.exit(f"{src}: no such take (--speaker/--takes)")
                dst = out / "wav" / f"{cond}-{d}-{t}.wav"
                dst.parent.mkdir(parents=True, exist_ok=True)
                if how[0] == "sox":
                    subprocess.run(["sox", "-R", str(src), str(dst), *how[1:]], check=True)
                else:
                    wave, sr = sf.read(src)
                    if how[0] == "praat":
                        changed = call(parselmouth.Sound(str(src)), "Change gender", 75, 600, how[1], how[2], 1.0, 1.0)
                        wave, sr = changed.values[0], int(changed.sampling_frequency)
                        wave = wave / max(1.0, np.abs(wave).max() / 0.99)
                    elif how[0] == "noise":
                        wave = add_noise(wave, how[1], how[2], rng)
                    elif how[0] != "copy":
                        wave = record(wave, sr, how, rng)
                    sf.write(dst, wave, sr)
                rows.append({"path": str(dst.resolve()), "transcript": WORDS[d], "speaker": cond, "split": "test",
                             "id": f"{cond}-{d}-{t}"})
    with open(out / "list.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "transcript", "speaker", "split", "id"])
        w.writeheader()
        w.writerows(rows)
    (out / "conditions.json").write_text(json.dumps({"speaker": speaker, "takes": takes, "conditions": conditions}))
    print(f"{len(rows)} utterances, {len(conditions)} conditions of {speaker} -> {out / 'list.csv'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out", type=Path)
    m.add_argument("--speaker", default="george")
    m.add_argument("--takes", type=int, default=20, help="takes 0..N-1 of each digit")
    m.add_argument("--kind", choices=sorted(KINDS), default="voice", help="other voices, or other recordings")
    m.add_argument("--recordings", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/fsdd/recordings")
    s = sub.add_parser("score")
    s.add_argument("run", type=Path)
    s.add_argument("conditions", type=Path)
    s.add_argument("--checkpoint", default="last")
    a = ap.parse_args()
    if a.cmd == "make":
        make(a.recordings, a.out, a.speaker, a.takes, a.kind)
        return
    held = json.loads((a.conditions / "conditions.json").read_text())["speaker"]
    r = score(a.run, a.conditions, a.checkpoint)
    head = {"run": str(a.run), "epoch": r["epoch"], "speaker": held, "n": r["n"]}
    if "per_voice_voice_cmvn" in r:  # a cmvn: speaker run: each condition normalised by its own statistics
        print(json.dumps({**head, "statistics": "the voice's takes",
                          **{k: round(v, 3) for k, v in r["per_voice_voice_cmvn"].items()}}))
    print(json.dumps({**head, "statistics": "one WAV", **{k: round(v, 3) for k, v in r["per_voice"].items()}}))
    if any(r["rejected"].values()):  # the front end found no speech in some: they count as wrong
        print(json.dumps({**head, "rejected": r["rejected"],
                          "listed": {k: round(v, 3) for k, v in r["per_voice_listed"].items()}}))


if __name__ == "__main__":
    main()

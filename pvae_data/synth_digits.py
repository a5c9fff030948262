"""Connected-digit utterances with known word boundaries, built from real FSDD takes.

Each utterance is 2-7 digits of one speaker.  Every take is first trimmed tightly by the energy
VAD (``speech_bounds``, no margin): that trimmed span *is* the digit, so its position in the
built utterance is the true boundary.  Takes are joined with random pauses (0-300 ms, a fraction
exactly zero), wrapped in leading/trailing silence, and light white noise is added at a random
SNR (30-40 dB) below the utterance's speech level.

The trim runs twice: on the clean take, then on that span padded with noise of the level the
utterance will carry.  Many FSDD takes end in long tails 50-65 dB below their peak (breath,
room tone over digital near-silence: ``5_lucas_1`` is 0.4 s of "five" and 0.7 s of tail) that
the VAD counts as speech in the clean file but that the added noise buries; pasting only the
span that is still speech at that noise level keeps the truth equal to what can be heard, and
the pasted samples are exactly the true span.  Everything is drawn from one seeded generator over a
sorted list of takes, so the same arguments give byte-identical files.

Used by ``tests/stages/test_segment.py``, ``benchmarks/bench_align.py`` and the TIDIGITS-layout builder
(:func:`build_tidigits`).  FSDD has no "oh": the TIDIGITS builder's ``o`` is a spoken "zero"
take transcribed "oh", so "oh" and "zero" are distinct words with the same kind of audio.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .config import ConfigMixin
from .digits import CHAR_TO_WORD
from .io_utils import atomic_path, write_jsonl
from .vad import VadConfig, speech_bounds

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
TRAIN_TAKES = tuple(range(5, 50))
TEST_TAKES = tuple(range(0, 5))


@dataclass(frozen=True)
class SynthConfig(ConfigMixin):
    min_digits: int = 2
    max_digits: int = 7
    max_pause_s: float = 0.3
    zero_pause_prob: float = 0.2  # this fraction of pauses is exactly 0 (digits abut)
    edge_silence_s: tuple = (0.1, 0.4)  # leading and trailing silence, uniform in this range
    snr_db: tuple = (30.0, 40.0)  # white noise this far below the utterance's speech RMS
    passes: int = 1  # every take is used this many times (in different utterances)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError("need 1 <= min_digits <= max_digits")


@dataclass
class SynthUtterance:
    id: str
    speaker: str
    digits: list[int]
    wave: np.ndarray  # int16
    sample_rate: int
    spans: list[tuple[float, float]]  # true [start, end) of each digit, seconds
    sources: list[str]  # FSDD file stems


def trimmed_take(recordings: Path, digit: int, speaker: str, take: int) -> tuple[np.ndarray, int] | None:
    """The take cut to its energy-VAD speech span (no margin); None when no speech is found."""
    x, sr = sf.read(Path(recordings) / f"{digit}_{speaker}_{take}.wav", dtype="int16")
    if x.ndim > 1:
        x = x.mean(axis=1).astype(np.int16)
    b = speech_bounds(x.astype(np.float64), sr, VadConfig())
    if b is None:
        return None
    return x[b[0]:b[1]].astype(np.float64), sr


def synth_utterances(recordings: str | os.PathLike, speakers: tuple[str, ...] = FSDD_SPEAKERS,
                     takes: tuple[int, ...] = TRAIN_TAKES, cfg: SynthConfig = SynthConfig(),
                     prefix: str = "syn", digits: tuple[int, ...] = tuple(range(10))) -> list[SynthUtterance]:
    """Utterances using every (digit, take) of every speaker ``cfg.passes`` times."""
    rec = Path(recordings)
    rng = np.random.default_rng(cfg.seed)
    cache: dict[tuple[int, str, int], tuple[np.ndarray, int] | None] = {}
    out: list[SynthUtterance] = []
    for spk in sorted(speakers):
        pool = [(d, t) for d in sorted(digits) for t in sorted(takes)
                if (rec / f"{d}_{spk}_{t}.wav").is_file()]
        for p in range(cfg.passes):
            order = [pool[i] for i in rng.permutation(len(pool))]
            i = 0
            while i < len(order):
                n = int(rng.integers(cfg.min_digits, cfg.max_digits + 1))
                group = order[i:i + n]
                i += n
                if len(group) < cfg.min_digits:
                    break
                parts, srcs, digs = [], [], []
                for d, t in group:
                    key = (d, spk, t)
                    if key not in cache:
                        cache[key] = trimmed_take(rec, d, spk, t)
                    if cache[key] is not None:
                        parts.append(cache[key])
                        srcs.append(f"{d}_{spk}_{t}")
                        digs.append(d)
                if len(parts) < 1:
                    continue
                uid = f"{spk}-{prefix}{p}-{len(out):05d}"
                out.append(_join(uid, spk, digs, parts, srcs, rng, cfg))
    return out


def _audible(x: np.ndarray, sr: int, noise_rms: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` cut to the span the energy VAD finds when it carries noise of ``noise_rms``."""
    pad = int(0.2 * sr)
    y = np.concatenate([np.zeros(pad), x, np.zeros(pad)]) + rng.normal(0.0, noise_rms, len(x) + 2 * pad)
    b = speech_bounds(y, sr, VadConfig())
    if b is None:
        return x
    a, e = max(0, b[0] - pad), min(len(x), b[1] - pad)
    return x[a:e] if e - a > 0.05 * sr else x


def _join(uid: str, spk: str, digits: list[int], parts: list[tuple[np.ndarray, int]], srcs: list[str],
          rng: np.random.Generator, cfg: SynthConfig) -> SynthUtterance:
    sr = parts[0][1]
    speech = np.concatenate([x for x, _ in parts])
    noise_rms = np.sqrt(np.mean(speech ** 2)) * 10 ** (-rng.uniform(*cfg.snr_db) / 20)
    parts = [(_audible(x, sr, noise_rms, rng), r) for x, r in parts]
    pieces, spans = [], []
    pos = int(round(rng.uniform(*cfg.edge_silence_s) * sr))
    pieces.append(np.zeros(pos))
    for k, (x, _) in enumerate(parts):
        if k:
            gap = 0 if rng.random() < cfg.zero_pause_prob else int(round(rng.uniform(0, cfg.max_pause_s) * sr))
            pieces.append(np.zeros(gap))
            pos += gap
        spans.append((pos / sr, (pos + len(x)) / sr))
        pieces.append(x)
        pos += len(x)
    pieces.append(np.zeros(int(round(rng.uniform(*cfg.edge_silence_s) * sr))))
    wave = np.concatenate(pieces)
    wave = wave + rng.normal(0.0, noise_rms, len(wave))
    wave = np.clip(np.round(wave), -32768, 32767).astype(np.int16)
    return SynthUtterance(uid, spk, digits, wave, sr, [(round(a, 6), round(b, 6)) for a, b in spans], srcs)


def words_of(digits: list[int], zero_words: list[str] | None = None) -> list[str]:
    """Digit words; ``zero_words[k]`` overrides the word for a 0 at position k ("zero" or "oh")."""
    return [(zero_words[k] if zero_words and d == 0 else CHAR_TO_WORD[str(d)]) for k, d in enumerate(digits)]


def write_synth(utts: list[SynthUtterance], out_dir: str | os.PathLike, split: str | None = None) -> dict:
    """WAVs under ``out_dir/wav``, ``utterances.jsonl`` (the ``prepare`` record format, so every stage
    reads it) and ``truth.jsonl`` (true spans per utterance).  Returns the two paths."""
    out = Path(out_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    recs, truth = [], []
    for u in utts:
        path = (out / "wav" / f"{u.id}.wav").resolve()
        with atomic_path(path) as tmp:
            sf.write(tmp, u.wave, u.sample_rate, format="WAV", subtype="PCM_16")
        words = words_of(u.digits)
        recs.append({"id": u.id, "audio": str(path), "speaker": u.speaker, "transcript": " ".join(words),
                     "split": split, "duration": round(len(u.wave) / u.sample_rate, 6), "sample_rate": u.sample_rate,
                     "channels": 1, "num_samples": len(u.wave), "corpus": "synth"})
        truth.append({"id": u.id, "words": words, "spans": [list(s) for s in u.spans], "sources": u.sources})
    write_jsonl(out / "utterances.jsonl", recs)
    write_jsonl(out / "truth.jsonl", truth)
    return {"utterances": out / "utterances.jsonl", "truth": out / "truth.jsonl"}


# TIDIGITS-like speaker ids and groups for the six FSDD speakers
_TIDIGITS_SPEAKERS = {"george": ("man", "ge"), "jackson": ("man", "ja"), "lucas": ("man", "lu"),
                      "nicolas": ("man", "ni"), "theo": ("man", "th"), "yweweler": ("man", "yw")}


def build_tidigits(recordings: str | os.PathLike, root: str | os.PathLike, cfg: SynthConfig = SynthConfig(),
                   speakers: tuple[str, ...] = FSDD_SPEAKERS, max_per_split: int = 0,
                   sample_rate: int = 20000, oh_prob: float = 0.5) -> dict:
    """A TIDIGITS-layout corpus ``root/tidigits/{train,test}/man/<spk>/<digits><a|b>.wav`` (NIST SPHERE,
    ``sample_rate`` Hz) from train takes (5-49) and test takes (0-4).  Digit 0 is named ``z`` (zero) or
    ``o`` (oh) at random.  Returns ``{kaldi id: {"words", "spans", "split", "path"}}``; a digit string
    already used twice by a speaker is skipped (TIDIGITS has only the a and b takes).
    """
    import soxr

    rng = np.random.default_rng(cfg.seed + 1)
    truth: dict[str, dict] = {}
    root = Path(root)
    for split, takes in (("train", TRAIN_TAKES), ("test", TEST_TAKES)):
        utts = synth_utterances(recordings, speakers, takes, cfg, prefix=split)
        if max_per_split and len(utts) > max_per_split:  # a seeded sample over all speakers
            utts = [utts[i] for i in sorted(rng.choice(len(utts), max_per_split, replace=False))]
        for u in utts:
            group, spk = _TIDIGITS_SPEAKERS.get(u.speaker, ("man", u.speaker[:2]))
            letters = [("o" if rng.random() < oh_prob else "z") if d == 0 else str(d) for d in u.digits]
            name = "".join(letters)
            for ab in "ab":
                kid = f"{spk}_{name}{ab}"
                if kid not in truth:
                    break
            else:
                continue
            path = root / "tidigits" / split / group / spk / f"{name}{ab}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            y = soxr.resample(u.wave.astype(np.float32), u.sample_rate, sample_rate, quality="HQ")
            y = np.clip(np.round(y), -32768, 32767).astype(np.int16)
            with atomic_path(path) as tmp:
                sf.write(tmp, y, sample_rate, format="NIST", subtype="PCM_16")
            truth[kid] = {"words": [CHAR_TO_WORD[c] for c in letters], "spans": [list(s) for s in u.spans],
                          "split": split, "path": str(path)}
    return truth

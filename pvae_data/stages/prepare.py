"""The ``prepare`` stage: a corpus on disk -> an utterance manifest (JSONL).

The corpus layouts (``fsdd``, ``tidigits``, ``list``, ``kaldi``) are read by
:mod:`pvae_data.corpora`, one module each; this stage checks every input's audio, accounts for
every input (``utterances.jsonl`` kept, ``rejected.jsonl`` with the reason: kept + rejected ==
total), applies a speaker-disjoint split when asked, and writes the manifest.  Every kept file has
been opened and fully read by :func:`pvae_data.audio.inspect_audio`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from ..config import ConfigMixin
from ..audio import AudioError, inspect_audio
from ..ids import id_problem
from ..corpora import LIST_FORMATS, READERS
from ..io_utils import write_json, write_jsonl
from ..stage import StageSummary, map_chunks

CORPORA = ("fsdd", "tidigits", "list", "kaldi")

UTTERANCES = "utterances.jsonl"
REJECTED = "rejected.jsonl"
CONFIG = "prepare_config.json"



@dataclass(frozen=True)
class PrepareConfig(ConfigMixin):
    corpus: str  # "fsdd" | "tidigits" | "list" | "kaldi"
    source: str  # corpus directory, the list file for corpus="list", a Kaldi data dir for "kaldi"
    list_format: str = "auto"  # list only: auto (by extension/content) | csv | tsv | jsonl
    fsdd_test_max_take: int = 4  # fsdd only: takes 0..this are "test", the rest "train"
    # A file whose header declares more samples than it holds was cut short (an interrupted
    # copy or download): "reject" it (default) or "keep" what is there, with a note.
    truncated: str = "reject"
    # Speaker-disjoint evaluation: every utterance of these speakers goes to "test" (a voice the
    # model never hears in training); the others keep their split ("train" where they had none).
    # Recorded on each record as "held_out": true and in prepare_config.json.
    test_speakers: tuple = ()
    # kaldi only: run the commands of `wav.scp` entries ending in "|" (they run as you, with your
    # permissions: only for data dirs you trust).  Off: such entries are rejected with the reason.
    allow_commands: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.test_speakers, str):
            object.__setattr__(self, "test_speakers", tuple(s for s in self.test_speakers.split(",") if s))
        object.__setattr__(self, "test_speakers", tuple(sorted({str(s).strip() for s in self.test_speakers})))
        if any(not s for s in self.test_speakers):
            raise ValueError("test_speakers: an empty speaker name")
        if self.truncated not in ("reject", "keep"):
            raise ValueError(f"truncated must be 'reject' or 'keep'; got {self.truncated!r}")
        if self.corpus not in CORPORA:
            raise ValueError(f"corpus must be one of {', '.join(CORPORA)}; got {self.corpus!r}")
        if self.list_format not in LIST_FORMATS:
            raise ValueError(f"list_format must be one of {', '.join(LIST_FORMATS)}; got {self.list_format!r}")
        if not str(self.source):
            raise ValueError("source must be given")



@dataclass
class PrepareSummary(StageSummary):
    """The stage summary plus what prepare alone knows (kept + rejected == total, as everywhere)."""

    stage: str = "prepare"
    notes: int = 0  # kept records carrying a "note"
    ignored: int = 0  # non-audio files skipped while scanning a directory (not inputs)
    speakers: int = 0
    hours: float = 0.0  # total duration of kept audio
    splits: dict = field(default_factory=dict)  # {"train": n, "test": n, "none": n} over kept
    reasons: dict = field(default_factory=dict)  # rejection category -> count
    out_dir: str = ""

    def line(self) -> str:
        s = super().line() + f"; speakers {self.speakers}; hours {self.hours:.3f}"
        if self.splits:
            s += "; " + ", ".join(f"{k} {v}" for k, v in self.splits.items())
        if self.notes:
            s += f"; notes {self.notes}"
        if self.ignored:
            s += f"; ignored {self.ignored} non-audio files"
        if self.reasons:
            s += "; rejected: " + ", ".join(f"{k} {v}" for k, v in self.reasons.items())
        return s


# --------------------------------------------------------------------------------------------
# audio checks


def _inspect_worker(path: str) -> tuple[dict | None, str | None]:
    """Top-level (picklable) wrapper: never raises, so one odd file cannot stop the run."""
    try:
        return inspect_audio(path).to_dict(), None
    except AudioError as e:
        return None, e.reason
    except Exception as e:  # noqa: BLE001 - anything else is still a per-file rejection
        return None, f"unreadable: {type(e).__name__}: {e}"


def _inspect_many(index: int, paths: list[str]) -> list[tuple[dict | None, str | None]]:
    return [_inspect_worker(p) for p in paths]


def _inspect_all(paths: list[str], jobs: int, progress: bool) -> list[tuple[dict | None, str | None]]:
    show = progress and sys.stderr.isatty()
    bar = tqdm(total=len(paths), desc="prepare", unit="file", disable=not show, leave=False)
    out: list[tuple[dict | None, str | None]] = []
    workers = max(1, min(jobs, len(paths)))
    size = max(1, min(64, len(paths) // (workers * 8)))  # small chunks: a live bar, balanced workers
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    try:
        for c, res in zip(chunks, map_chunks(_inspect_many, list(enumerate(chunks)), (), jobs)):
            out.extend(res)
            bar.update(len(c))
    finally:
        bar.close()
    return out


def _category(reason: str) -> str:
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()


# --------------------------------------------------------------------------------------------


class SplitError(ValueError):
    """A speaker-disjoint split that cannot be made (unknown speaker, a digit left untrained)."""


def hold_out_speakers(records: list[dict], test_speakers, source: str = "") -> None:
    """Move every record of ``test_speakers`` to the test split (``"held_out": true``) and give the
    others without a split "train"; raises :class:`SplitError` (nothing changed) for a speaker not
    in ``records`` or a split that leaves no training speaker or a digit with no training data."""
    held = set(test_speakers)
    speakers = {r["speaker"] for r in records}
    missing = sorted(held - speakers)
    if missing:
        raise SplitError(f"{source}: test speaker(s) {', '.join(missing)} not in the corpus "
                         f"(speakers: {', '.join(sorted(speakers)[:20])}{' ...' if len(speakers) > 20 else ''})")
    train = [r for r in records if r["speaker"] not in held and (r.get("split") or "train") == "train"]
    if not train:
        raise SplitError(f"{source}: test speakers {', '.join(sorted(held))} leave no training speaker")
    words = {w for r in records if (r.get("split") or "train") == "train" for w in str(r.get("transcript") or "").split()}
    trained = {w for r in train for w in str(r.get("transcript") or "").split()}
    if words - trained:  # words that had training data before the speakers were held out
        raise SplitError(f"{source}: test speakers {', '.join(sorted(held))} leave no training data for "
                         f"{', '.join(sorted(words - trained))}")
    for r in records:
        if r["speaker"] in held:
            r["split"], r["held_out"] = "test", True
        elif r.get("split") is None:
            r["split"] = "train"


def prepare_corpus(
    cfg: PrepareConfig, out_dir: str | os.PathLike, jobs: int = 1, progress: bool = True
) -> PrepareSummary:
    """Build ``utterances.jsonl``, ``rejected.jsonl`` and ``prepare_config.json`` in ``out_dir``.

    ``jobs > 1`` checks the audio in that many spawned processes (output is identical to
    ``jobs=1``); ``jobs <= 0`` means one per CPU.  Raises ``FileNotFoundError``/``ValueError``
    for a missing source, a list without the required columns, or a corpus with no inputs.
    """
    t0 = time.perf_counter()
    cfg = replace(cfg, source=os.path.abspath(cfg.source))
    items, ignored = READERS[cfg.corpus](cfg, Path(out_dir))
    if not items:
        raise ValueError(f"{cfg.corpus} source {cfg.source!r}: no inputs found")
    _check_ids(items)
    todo = sorted({it.path for it in items if it.reason is None and it.path is not None})
    audio = dict(zip(todo, _inspect_all(todo, jobs if jobs > 0 else os.cpu_count() or 1, progress)))
    kept, rejected = [], []
    for it in items:
        rec, reason = _record(it, audio.get(it.path, (None, None)), cfg)
        if reason is None:
            kept.append(rec)
        else:
            rejected.append({"path": it.path, "id": it.id, "reason": reason,
                             **({"line": it.line} if it.line is not None else {})})
    kept.sort(key=lambda r: r["id"])
    assert len(kept) + len(rejected) == len(items)  # every input accounted for
    if cfg.test_speakers:
        hold_out_speakers(kept, cfg.test_speakers, cfg.source)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / REJECTED, rejected)
    write_json(out / CONFIG, cfg.to_dict())
    write_jsonl(out / UTTERANCES, kept)  # last: its presence marks a finished run
    return _summary(len(items), kept, rejected, ignored, out, time.perf_counter() - t0)


def _check_ids(items: list) -> None:
    """Reject (in place) inputs whose id, speaker or recording id cannot be used (an id becomes a
    file name in some stages, a speaker a table key) and ids given twice (the first wins)."""
    first: dict[str, str | None] = {}
    for it in items:
        if it.reason is None:
            it.reason = id_problem(it.id) or id_problem(it.speaker, "speaker") or (
                id_problem(it.extra["recording_id"], "recording id") if "recording_id" in it.extra else None)
        if it.reason is not None or it.id is None:
            continue
        if it.id in first:
            it.reason = f"duplicate id: {it.id!r} already used by {first[it.id]}"
        else:
            first[it.id] = it.path


def _record(it, checked: tuple, cfg: PrepareConfig) -> tuple[dict | None, str | None]:
    """(manifest record, None) for a kept input, (None, reason) for a rejected one; ``checked``
    is its audio check (info, reason)."""
    info, reason = (None, it.reason) if it.reason is not None else checked
    if reason is not None:
        return None, reason
    cut = None
    if (info.get("declared_samples") or 0) > info["num_samples"]:
        cut = f"truncated: the header declares {info['declared_samples']} samples, the file holds {info['num_samples']}"
        if cfg.truncated == "reject":
            return None, cut
    length = info["num_samples"] / info["sample_rate"]
    seg = it.extra.get("end")
    if seg is not None and seg > length + 0.01:
        return None, f"segment ends at {seg:.3f} s, past the end of the recording ({length:.3f} s)"
    rec = {"id": it.id, "audio": it.path, "speaker": it.speaker, "transcript": it.transcript, "split": it.split,
           "duration": round(length, 6), "sample_rate": info["sample_rate"], "channels": info["channels"],
           "num_samples": info["num_samples"], "corpus": cfg.corpus, **it.extra}
    if seg is not None:  # a Kaldi segment: the utterance is [start, end) of the recording
        rec["duration"] = round(it.extra["end"] - it.extra["start"], 6)
    notes = list(it.notes) + ([cut] if cut else [])
    if info["channels"] > 1:
        notes.append(f"downmixed {info['channels']} channels to mono")
    if notes:
        rec["note"] = "; ".join(notes)
    return rec, None


def _summary(total: int, kept: list, rejected: list, ignored: int, out: Path, seconds: float) -> PrepareSummary:
    splits: dict[str, int] = {}
    for r in kept:
        splits[r["split"] or "none"] = splits.get(r["split"] or "none", 0) + 1
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[_category(r["reason"])] = reasons.get(_category(r["reason"]), 0) + 1
    return PrepareSummary(
        total=total, kept=len(kept), rejected=len(rejected), elapsed_s=round(seconds, 3),
        notes=sum(1 for r in kept if "note" in r), ignored=ignored, speakers=len({r["speaker"] for r in kept}),
        hours=round(sum(r["duration"] for r in kept) / 3600.0, 4), splits=dict(sorted(splits.items())),
        reasons=dict(sorted(reasons.items())), out_dir=str(out),
    ).check()

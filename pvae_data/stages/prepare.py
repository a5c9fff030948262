"""The ``prepare`` stage: a corpus on disk -> an utterance manifest (JSONL).

Three corpus layouts are understood:

``fsdd``
    Free Spoken Digit Dataset: ``recordings/{digit}_{speaker}_{take}.wav``.  Utterance id
    ``{speaker}-{digit}-{take:02d}`` (speaker-prefixed, as Kaldi wants); the official split puts
    takes 0-4 in ``test`` and the rest in ``train``.
``tidigits``
    LDC TIDIGITS: ``{train,test}/{man,woman,boy,girl}/<spk>/<digits><a|b>.wav`` (NIST SPHERE,
    20 kHz), possibly under ``tidigits/`` or ``data/{adults,children}/``.  Ids, speakers and
    transcripts as Kaldi's ``egs/tidigits/s5/local/tidigits_data_prep.sh``: id ``<spk>_<digits><a|b>``
    (``ae_z1oa``), transcript from the letters (``z`` -> zero, ``o`` -> oh).
``list``
    A CSV (header with ``path,transcript,speaker`` and optional ``split,id``) or JSONL file with
    those keys; relative paths are resolved against the list file's directory.

Every input is accounted for: it ends up either in ``utterances.jsonl`` (kept) or in
``rejected.jsonl`` with a reason, so ``kept + rejected == total``.  Every kept file has been
opened and fully read by :func:`pvae_data.audio.inspect_audio`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from ..config import ConfigMixin
from ..audio import AudioError, inspect_audio
from ..digits import CHAR_TO_WORD, normalize_transcript
from ..ids import id_path, id_problem
from ..io_utils import atomic_path, write_json, write_jsonl
from ..stage import StageSummary, map_chunks

CORPORA = ("fsdd", "tidigits", "list", "kaldi")
LIST_FORMATS = ("auto", "csv", "tsv", "jsonl")
SPLITS = ("train", "test")
TIDIGITS_GROUPS = ("man", "woman", "boy", "girl")
#: Files with these extensions count as inputs when scanning a corpus directory; anything else
#: (README, .txt, ...) is skipped and only counted in ``PrepareSummary.ignored``.
AUDIO_EXTENSIONS = (".wav", ".sph", ".flac", ".nist")

UTTERANCES = "utterances.jsonl"
REJECTED = "rejected.jsonl"
CONFIG = "prepare_config.json"

_FSDD_RE = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$", re.IGNORECASE)
_TIDIGITS_RE = re.compile(r"^([1-9zo]+)([ab])\.(?:wav|sph|flac)$", re.IGNORECASE)
_SPK_RE = re.compile(r"^[A-Za-z0-9]+$")


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


@dataclass
class _Item:
    """One input: what we know about it before looking at its audio."""

    path: str | None  # absolute path (None if a list entry has no usable path)
    id: str | None = None
    speaker: str | None = None
    transcript: str | None = None
    split: str | None = None
    extra: dict = field(default_factory=dict)  # corpus-specific record fields (e.g. "group")
    notes: list = field(default_factory=list)  # fix-ups made to the input
    reason: str | None = None  # set => rejected
    line: int | None = None  # list corpus: line in the list file


# --------------------------------------------------------------------------------------------
# discovery


def _abspath(p: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(p))


def _not_a_file(p: Path) -> str | None:
    """Why an entry with an audio extension cannot be read as one (None: a regular file)."""
    import errno
    import stat

    try:
        mode = p.stat().st_mode  # follows symlinks
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        return "dangling symlink (target missing)" if p.is_symlink() else f"unreadable entry ({e.strerror})"
    if stat.S_ISDIR(mode):
        return "a directory, not an audio file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def _scan(directory: Path, recursive: bool) -> tuple[list[Path], int, list[tuple[Path, str]]]:
    """Audio-extension files under ``directory`` (sorted), the count of other files, and the
    entries that look like input but are not readable files (dangling symlinks, symlink loops,
    directories named ``*.wav``...) with the reason, so that the stage can reject them."""
    found: list[Path] = []
    bad: list[tuple[Path, str]] = []
    ignored = 0
    it: Iterable[Path] = directory.rglob("*") if recursive else directory.iterdir()
    for p in it:
        rel = p.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files / dirs (.DS_Store, .git, our own .tmp files)
        looks_like_audio = p.suffix.lower() in AUDIO_EXTENSIONS
        why = _not_a_file(p)
        if why is None:
            if looks_like_audio:
                found.append(p)
            else:
                ignored += 1
        elif looks_like_audio:
            bad.append((p, why))
        elif why != "a directory, not an audio file":
            ignored += 1
    found.sort(key=lambda q: q.as_posix())
    bad.sort(key=lambda q: q[0].as_posix())
    return found, ignored, bad


def _fsdd_items(cfg: PrepareConfig) -> tuple[list[_Item], int]:
    src = Path(cfg.source)
    rec = src / "recordings" if (src / "recordings").is_dir() else src
    if not rec.is_dir():
        raise FileNotFoundError(f"FSDD source {cfg.source!r}: no such directory")
    files, ignored, bad = _scan(rec, recursive=False)
    items = [_Item(_abspath(p), reason=why) for p, why in bad]
    for p in files:
        m = _FSDD_RE.match(p.name)
        if not m:
            items.append(_Item(_abspath(p), reason="bad name: expected {digit}_{speaker}_{take}.wav"))
            continue
        digit, speaker, take = m.group(1), m.group(2), int(m.group(3))
        items.append(
            _Item(
                _abspath(p),
                id=f"{speaker}-{digit}-{take:02d}",
                speaker=speaker,
                transcript=CHAR_TO_WORD[digit],
                split="test" if take <= cfg.fsdd_test_max_take else "train",
            )
        )
    return items, ignored


def _tidigits_roots(src: Path) -> list[Path]:
    """Directories holding ``train/``/``test/`` (Kaldi's layouts, plus children)."""

    def has_split(d: Path) -> bool:
        return any((d / s).is_dir() for s in SPLITS)

    for top in (src, src / "tidigits"):
        if has_split(top):
            return [top]
        data = top / "data"
        roots = [data / sub for sub in ("adults", "children") if has_split(data / sub)]
        if roots:
            return roots
    return []


def _tidigits_items(cfg: PrepareConfig) -> tuple[list[_Item], int]:
    src = Path(cfg.source)
    if not src.is_dir():
        raise FileNotFoundError(f"TIDIGITS source {cfg.source!r}: no such directory")
    roots = _tidigits_roots(src)
    if not roots:
        raise FileNotFoundError(
            f"TIDIGITS source {cfg.source!r}: no train/ or test/ directory (also looked in tidigits/ and data/adults/)"
        )
    items: list[_Item] = []
    ignored = 0
    for root in roots:
        for split in SPLITS:
            if not (root / split).is_dir():
                continue
            files, ign, bad = _scan(root / split, recursive=True)
            ignored += ign
            items += [_Item(_abspath(p), reason=why) for p, why in bad]
            for p in files:
                rel = p.relative_to(root / split).parts
                m = _TIDIGITS_RE.match(p.name)
                if len(rel) != 3 or rel[0].lower() not in TIDIGITS_GROUPS or not _SPK_RE.match(rel[1]) or not m:
                    items.append(
                        _Item(_abspath(p), reason=f"bad name: expected {split}/{{man,woman,boy,girl}}/<spk>/<digits><a|b>.wav")
                    )
                    continue
                group, spk = rel[0].lower(), rel[1].lower()
                digits, ab = m.group(1).lower(), m.group(2).lower()
                items.append(
                    _Item(
                        _abspath(p),
                        id=f"{spk}_{digits}{ab}",
                        speaker=spk,
                        transcript=" ".join(CHAR_TO_WORD[c] for c in digits),
                        split=split,
                        extra={"group": group},
                    )
                )
    return items, ignored


def _list_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    ext = path.suffix.lower()
    if ext in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if ext == ".tsv":
        return "tsv"
    if ext == ".csv":
        return "csv"
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                return "jsonl" if line.lstrip().startswith("{") else "csv"
    return "csv"


def _list_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield ``(line, row, error)`` for each entry of the list file."""
    if fmt == "jsonl":
        with open(path, encoding="utf-8-sig") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    yield i, None, f"bad list entry: not valid JSON ({e.msg})"
                    continue
                if not isinstance(row, dict):
                    yield i, None, "bad list entry: not a JSON object"
                    continue
                yield i, row, None
        return
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
        if reader.fieldnames is None:
            return
        reader.fieldnames = [(h or "").strip().lower() for h in reader.fieldnames]
        missing = [k for k in ("path", "transcript", "speaker") if k not in reader.fieldnames]
        if missing:
            raise ValueError(f"{path}: header lacks column(s) {', '.join(missing)} (has {', '.join(reader.fieldnames)})")
        for row in reader:
            if None in row:  # more cells than header columns
                yield reader.line_num, None, f"bad list entry: {len(reader.fieldnames) + len(row[None])} cells for {len(reader.fieldnames)} columns"
                continue
            yield reader.line_num, row, None


def _str_field(row: dict, key: str) -> str:
    v = row.get(key)
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError(f"{key} must be a string")
    return str(v).strip()


def _list_item(row: dict, line: int, base: Path) -> _Item:
    item = _Item(None, line=line)
    try:
        raw_path = _str_field(row, "path")
    except ValueError as e:
        item.reason = f"bad list entry: {e}"
        return item
    if raw_path:
        item.path = _abspath(base / os.path.expanduser(raw_path))
    try:
        speaker = _str_field(row, "speaker")
        transcript = _str_field(row, "transcript")
        split = _str_field(row, "split")
        uid = _str_field(row, "id")
    except ValueError as e:
        item.reason = f"bad list entry: {e}"
        return item
    if not raw_path:
        item.reason = "bad list entry: no path"
        return item
    item.speaker = speaker
    item.id = uid or f"{speaker}-{Path(raw_path).stem}"
    item.reason = id_problem(speaker, "speaker") or id_problem(item.id)
    if item.reason:
        return item
    try:
        item.transcript = " ".join(normalize_transcript(transcript))
    except ValueError as e:
        item.reason = f"bad transcript: {e}"
        return item
    if item.transcript != " ".join(transcript.lower().split()):
        item.notes.append(f"transcript normalised from {transcript!r}")
    split = split.lower()
    if split in ("", "none", "null"):
        item.split = None
    elif split in SPLITS:
        item.split = split
    else:
        item.reason = f"bad split: {split!r} (expected train, test or empty)"
        return item
    if not os.path.exists(item.path):
        item.reason = "file not found"
    return item


def _list_items(cfg: PrepareConfig) -> tuple[list[_Item], int]:
    path = Path(cfg.source)
    if not path.is_file():
        raise FileNotFoundError(f"list file {cfg.source!r} not found")
    fmt = _list_format(path, cfg.list_format)
    base = path.resolve().parent
    items = []
    for line, row, err in _list_rows(path, fmt):
        items.append(_Item(None, reason=err, line=line) if err else _list_item(row, line, base))
    return items, 0


def _kaldi_table(path: Path) -> dict[str, str]:
    """``key rest-of-line`` per line of a Kaldi table file.  A key given twice is an error naming
    the file and line (Kaldi's validate_data_dir.sh refuses it too): which line to believe is
    not ours to guess, and dropping one would lose an input silently."""
    table: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, *rest = line.strip().split(maxsplit=1)  # any whitespace, as Kaldi: tabs too
        rest = rest[0] if rest else ""
        if key in table:
            raise ValueError(f"{path}:{i}: duplicate key {key!r} (first on an earlier line)")
        table[key] = rest.strip()
    return table


def _run_pipe(rec: str, command: str, out_dir: Path) -> tuple[str | None, str | None]:
    """Kaldi's ``wav.scp`` command form (``sox x.sph -t wav - |``): run it once, its standard
    output saved as ``OUT/wav/<rec>.wav`` (atomically; reused by a rerun).  (path, None) or
    (None, reason) -- a missing program (sox, ffmpeg, flac...) or a failing command is a reason."""
    import shlex
    import shutil
    import subprocess

    cmd = command.rstrip()[:-1].strip()
    try:
        prog = shlex.split(cmd)[0]
    except (ValueError, IndexError):
        return None, f"wav.scp command {cmd[:60]!r} cannot be parsed"
    if shutil.which(prog) is None:
        return None, (f"wav.scp entry is a command and {prog!r} is not installed (e.g. `apt install sox` "
                      f"or ffmpeg), or convert to audio files first")
    path = id_path(out_dir / "wav", rec, ".wav")  # the caller has checked the id
    if path.is_file():
        return str(path), None
    path.parent.mkdir(parents=True, exist_ok=True)

    class _Failed(Exception):
        pass

    try:
        with atomic_path(path) as tmp:  # an exception leaves no file behind
            with open(tmp, "wb") as f:
                try:
                    p = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], stdout=f,
                                       stderr=subprocess.PIPE, timeout=600)
                except subprocess.TimeoutExpired:
                    raise _Failed(f"wav.scp command timed out: {cmd[:60]!r}") from None
            if p.returncode != 0:
                err = p.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
                raise _Failed(f"wav.scp command failed (exit {p.returncode}): {cmd[:60]!r}: {err[0][:120]}")
    except _Failed as e:
        return None, str(e)
    return str(path), None


def _kaldi_items(cfg: PrepareConfig, out_dir: Path) -> tuple[list[_Item], int]:
    """A Kaldi data dir: ``wav.scp`` (paths, or commands ending in ``|`` that write WAV to stdout,
    run once into ``OUT/wav/``), ``text``, ``utt2spk``, optional ``segments`` (then each
    utterance is ``[start, end)`` of a recording).  The split is the directory's name when it is
    ``train`` or ``test``."""
    d = Path(cfg.source)
    for need in ("wav.scp", "text", "utt2spk"):
        if not (d / need).is_file():
            raise FileNotFoundError(f"{d}: not a Kaldi data dir (no {need})")
    wav = _kaldi_table(d / "wav.scp")
    text = _kaldi_table(d / "text")
    spk = _kaldi_table(d / "utt2spk")
    segs = _kaldi_table(d / "segments") if (d / "segments").is_file() else None
    split = d.name.lower() if d.name.lower() in SPLITS else None
    items = []
    piped: dict[str, tuple[str | None, str | None]] = {}
    for utt in sorted(set(text) | set(spk) | (set(segs) if segs else set(wav))):
        it = _Item(None, id=utt, split=split)
        rec, start, end = utt, None, None
        if segs is not None:
            f = segs.get(utt, "").split()
            try:
                rec, start, end = f[0], float(f[1]), float(f[2])
                if not 0 <= start < end:
                    raise ValueError
            except (IndexError, ValueError):
                it.reason = f"bad segments entry for {utt!r}: {segs.get(utt)!r} (want: recording start end)"
                items.append(it)
                continue
            it.extra = {"start": start, "end": end, "recording_id": rec}
        src = wav.get(rec)
        it.reason = id_problem(utt) or id_problem(rec, "recording id")
        if it.reason:
            pass
        elif src is None:
            it.reason = f"recording {rec!r} not in wav.scp"
        elif utt not in text:
            it.reason = "no transcript in text"
        elif utt not in spk:
            it.reason = "no speaker in utt2spk"
        if it.reason:
            items.append(it)
            continue
        if src.endswith("|") and not cfg.allow_commands:
            it.reason = ("wav.scp entry is a command: commands run only with --allow-commands "
                         "(they run with your permissions; use it for data dirs you trust)")
            items.append(it)
            continue
        if src.endswith("|"):
            if rec not in piped:
                piped[rec] = _run_pipe(rec, src, Path(out_dir))
            it.path, it.reason = piped[rec]
            if it.reason:
                items.append(it)
                continue
        else:
            it.path = _abspath(d / os.path.expanduser(src)) if not os.path.isabs(src) else src
        it.speaker = spk[utt]
        try:
            it.transcript = " ".join(normalize_transcript(text[utt]))
        except ValueError as e:
            it.reason = f"bad transcript: {e}"
        if it.reason is None and not os.path.exists(it.path):
            it.reason = "file not found"
        items.append(it)
    return items, 0


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
    if jobs <= 0:
        jobs = os.cpu_count() or 1
    cfg = replace(cfg, source=_abspath(cfg.source))
    if cfg.corpus == "kaldi":
        items, ignored = _kaldi_items(cfg, Path(out_dir))
    else:
        items, ignored = {"fsdd": _fsdd_items, "tidigits": _tidigits_items, "list": _list_items}[cfg.corpus](cfg)
    if not items:
        raise ValueError(f"{cfg.corpus} source {cfg.source!r}: no inputs found")

    for it in items:  # an id becomes a file name in some stages, a speaker a table key
        if it.reason is None:
            it.reason = id_problem(it.id) or id_problem(it.speaker, "speaker") or (
                id_problem(it.extra["recording_id"], "recording id") if "recording_id" in it.extra else None)

    # duplicate ids: the first (in input order) wins
    first: dict[str, str | None] = {}
    for it in items:
        if it.reason is not None or it.id is None:
            continue
        if it.id in first:
            it.reason = f"duplicate id: {it.id!r} already used by {first[it.id]}"
        else:
            first[it.id] = it.path

    todo = sorted({it.path for it in items if it.reason is None and it.path is not None})
    results = dict(zip(todo, _inspect_all(todo, jobs, progress)))

    kept: list[dict] = []
    rejected: list[dict] = []
    for it in items:
        info, reason = (None, it.reason) if it.reason is not None else results[it.path]
        cut = None
        if reason is None and (info.get("declared_samples") or 0) > info["num_samples"]:
            cut = (f"truncated: the header declares {info['declared_samples']} samples, "
                   f"the file holds {info['num_samples']}")
            if cfg.truncated == "reject":
                reason = cut
        seg = it.extra.get("end")
        if reason is None and seg is not None and seg > info["num_samples"] / info["sample_rate"] + 0.01:
            reason = (f"segment ends at {seg:.3f} s, past the end of the recording "
                      f"({info['num_samples'] / info['sample_rate']:.3f} s)")
        if reason is not None:
            rec = {"path": it.path, "id": it.id, "reason": reason}
            if it.line is not None:
                rec["line"] = it.line
            rejected.append(rec)
            continue
        rec = {
            "id": it.id,
            "audio": it.path,
            "speaker": it.speaker,
            "transcript": it.transcript,
            "split": it.split,
            "duration": round(info["num_samples"] / info["sample_rate"], 6),
            "sample_rate": info["sample_rate"],
            "channels": info["channels"],
            "num_samples": info["num_samples"],
            "corpus": cfg.corpus,
            **it.extra,
        }
        if seg is not None:  # a Kaldi segment: the utterance is [start, end) of the recording
            rec["duration"] = round(it.extra["end"] - it.extra["start"], 6)
        notes = list(it.notes)
        if cut:
            notes.append(cut)
        if info["channels"] > 1:
            notes.append(f"downmixed {info['channels']} channels to mono")
        if notes:
            rec["note"] = "; ".join(notes)
        kept.append(rec)
    kept.sort(key=lambda r: r["id"])
    assert len(kept) + len(rejected) == len(items)  # every input accounted for
    if cfg.test_speakers:
        hold_out_speakers(kept, cfg.test_speakers, cfg.source)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / REJECTED, rejected)
    write_json(out / CONFIG, cfg.to_dict())
    write_jsonl(out / UTTERANCES, kept)  # last: its presence marks a finished run

    splits: dict[str, int] = {}
    for r in kept:
        k = r["split"] or "none"
        splits[k] = splits.get(k, 0) + 1
    reasons: dict[str, int] = {}
    for r in rejected:
        k = _category(r["reason"])
        reasons[k] = reasons.get(k, 0) + 1
    return PrepareSummary(
        total=len(items),
        kept=len(kept),
        rejected=len(rejected),
        elapsed_s=round(time.perf_counter() - t0, 3),
        notes=sum(1 for r in kept if "note" in r),
        ignored=ignored,
        speakers=len({r["speaker"] for r in kept}),
        hours=round(sum(r["duration"] for r in kept) / 3600.0, 4),
        splits=dict(sorted(splits.items())),
        reasons=dict(sorted(reasons.items())),
        out_dir=str(out),
    ).check()

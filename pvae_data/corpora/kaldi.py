"""A Kaldi data dir: ``wav.scp`` (paths, or commands ending in ``|``: run only with
``allow_commands``), ``text``, ``utt2spk``, optional ``segments``."""

from __future__ import annotations

import os
from pathlib import Path

from ..digits import normalize_transcript
from ..ids import id_path, id_problem
from ..io_utils import atomic_path
from ..kaldi_io import read_table
from .common import SPLITS, Item, abspath


def run_pipe(rec: str, command: str, out_dir: Path) -> tuple[str | None, str | None]:
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


def kaldi_items(cfg, out_dir: Path) -> tuple[list[Item], int]:
    """A Kaldi data dir: ``wav.scp`` (paths, or commands ending in ``|`` that write WAV to stdout,
    run once into ``OUT/wav/``), ``text``, ``utt2spk``, optional ``segments`` (then each
    utterance is ``[start, end)`` of a recording).  The split is the directory's name when it is
    ``train`` or ``test``."""
    d = Path(cfg.source)
    for need in ("wav.scp", "text", "utt2spk"):
        if not (d / need).is_file():
            raise FileNotFoundError(f"{d}: not a Kaldi data dir (no {need})")
    wav = read_table(d / "wav.scp")
    text = read_table(d / "text")
    spk = read_table(d / "utt2spk")
    segs = read_table(d / "segments") if (d / "segments").is_file() else None
    split = d.name.lower() if d.name.lower() in SPLITS else None
    items = []
    piped: dict[str, tuple[str | None, str | None]] = {}
    for utt in sorted(set(text) | set(spk) | (set(segs) if segs else set(wav))):
        it = Item(None, id=utt, split=split)
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
                piped[rec] = run_pipe(rec, src, Path(out_dir))
            it.path, it.reason = piped[rec]
            if it.reason:
                items.append(it)
                continue
        else:
            it.path = abspath(d / os.path.expanduser(src)) if not os.path.isabs(src) else src
        it.speaker = spk[utt]
        try:
            it.transcript = " ".join(normalize_transcript(text[utt]))
        except ValueError as e:
            it.reason = f"bad transcript: {e}"
        if it.reason is None and not os.path.exists(it.path):
            it.reason = "file not found"
        items.append(it)
    return items, 0

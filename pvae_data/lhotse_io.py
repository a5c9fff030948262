"""lhotse, both ways (optional extra: ``pip install pvae[lhotse]``).

* :func:`import_lhotse`: a lhotse ``RecordingSet`` + ``SupervisionSet`` (or a ``CutSet``; ``.jsonl``
  or ``.jsonl.gz``) -> our utterance manifest, one record per supervision with its ``start`` /
  ``end`` kept, so ``trim`` / ``segment`` / ``fbank`` read it like ``prepare``'s output.  A
  recording that is not a local file (URL, shell command, in-memory) is rejected with the reason.
* :func:`export_lhotse`: an ``fbank`` stage directory -> ``cuts.jsonl.gz`` whose
  ``cut.load_features()`` returns our matrices exactly (stored uncompressed in lhotse's
  ``numpy_hdf5`` format, not lilcom, which is lossy), each cut with its recording and supervision.

The lhotse package itself does the (de)serialisation; nothing here re-implements its formats.
"""

from __future__ import annotations

import os
from pathlib import Path

from .ids import id_problem
from .io_utils import read_jsonl, write_jsonl
from .stage import StageSummary, Timer

UTTERANCES = "utterances.jsonl"
REJECTED = "rejected.jsonl"
CUTS = "cuts.jsonl.gz"
FEATS_H5 = "feats.h5"


def _load_manifest(lhotse, path):
    """``lhotse.load_manifest``, its failures one line naming the file (garbage, a truncated
    ``.gz``, a manifest of the wrong shape)."""
    try:
        return lhotse.load_manifest(path)
    except Exception as e:  # json, gzip, zlib, EOF, lhotse's own ValueError/KeyError...
        msg = (str(e).splitlines() or [""])[0][:160]
        raise ValueError(f"{path}: not a readable lhotse manifest ({type(e).__name__}: {msg})") from None


def _with_id(rec, rec_id: str):
    from dataclasses import replace

    return replace(rec, id=rec_id)


def _lhotse():
    try:
        import lhotse
    except ImportError:
        raise ValueError("lhotse is not installed: pip install 'pvae[lhotse]' (or pip install lhotse)") from None
    return lhotse


def import_lhotse(manifests: list[str | os.PathLike], out_dir: str | os.PathLike, split: str | None = None) -> StageSummary:
    """``manifests`` is ``[cuts]`` or ``[recordings, supervisions]``; writes ``OUT/utterances.jsonl``
    and ``OUT/rejected.jsonl`` (kept + rejected = supervisions)."""
    lhotse = _lhotse()
    timer = Timer()
    if len(manifests) == 1:
        cuts = _load_manifest(lhotse, manifests[0])
        if not isinstance(cuts, lhotse.CutSet):
            raise ValueError(f"{manifests[0]}: a single manifest must be a CutSet (else give recordings and supervisions)")
        # a supervision's start is relative to its cut: made relative to the recording here
        pairs = [(sup.with_offset(c.start) if c.start else sup, c.recording) for c in cuts for sup in c.supervisions]
    elif len(manifests) == 2:
        recs = _load_manifest(lhotse, manifests[0])
        sups = _load_manifest(lhotse, manifests[1])
        if not isinstance(recs, lhotse.RecordingSet) or not isinstance(sups, lhotse.SupervisionSet):
            raise ValueError("give a RecordingSet and a SupervisionSet, in that order")
        pairs = [(s, recs[s.recording_id] if s.recording_id in recs else None) for s in sups]
    else:
        raise ValueError("give one CutSet, or a RecordingSet and a SupervisionSet")
    kept, rejected, seen = [], [], set()
    for sup, rec in pairs:
        reason = id_problem(sup.id) or (sup.speaker is not None and id_problem(sup.speaker, "speaker")) or None
        if reason:
            pass
        elif sup.id in seen:
            reason = f"duplicate id: {sup.id!r} (an earlier supervision has it)"
        elif rec is None:
            reason = f"recording {sup.recording_id!r} is not in the RecordingSet"
        elif id_problem(rec.id, "recording id"):
            reason = id_problem(rec.id, "recording id")
        elif len(rec.sources) != 1 or rec.sources[0].type != "file":
            reason = f"recording {rec.id!r} is not one local file (source type {rec.sources[0].type!r})"
        elif not Path(rec.sources[0].source).is_file():
            reason = f"{rec.sources[0].source}: no such file"
        elif not (sup.text or "").strip():
            reason = "empty transcript"
        elif not (sup.start >= 0 and sup.duration > 0):
            reason = f"bad span: start {sup.start} s, duration {sup.duration} s (want start >= 0, duration > 0)"
        elif sup.start >= rec.duration or sup.end > rec.duration + 0.01:
            reason = (f"bad span: {sup.start:.3f}-{sup.end:.3f} s lies past the end of recording {rec.id!r} "
                      f"({rec.duration:.3f} s)")
        if sup.id is not None:
            seen.add(sup.id)
        if reason:
            rejected.append({"id": sup.id, "reason": reason})
            continue
        kept.append({"id": sup.id, "audio": str(Path(rec.sources[0].source).resolve()),
                     "speaker": sup.speaker or rec.id, "transcript": sup.text.strip(),
                     **({"split": sp} if (sp := split or (sup.custom or {}).get("split")) else {}),
                     "duration": round(sup.duration, 6), "sample_rate": rec.sampling_rate,
                     "channels": rec.num_channels, "start": round(sup.start, 6), "end": round(sup.end, 6),
                     "corpus": "lhotse", "recording_id": rec.id})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / UTTERANCES, kept)
    write_jsonl(out / REJECTED, rejected)
    return StageSummary("lhotse import", total=len(pairs), kept=len(kept), rejected=len(rejected),
                        elapsed_s=timer.elapsed).check()


def export_lhotse(fbank_dir: str | os.PathLike, out_dir: str | os.PathLike) -> StageSummary:
    """``OUT/cuts.jsonl.gz`` + ``OUT/feats.h5`` from an ``fbank`` stage directory.  The matrices
    are read from the stage's arks through ``features.jsonl``'s relative references (as ``shard
    audio`` does): never through ``feats.scp``, whose entries could be commands, and wherever the
    directory has been moved."""
    from .stages.shard import ArkReader

    lhotse = _lhotse()
    from lhotse.features.io import NumpyHdf5Writer

    timer = Timer()
    src = Path(fbank_dir)
    if not (src / "features.jsonl").is_file():
        raise ValueError(f"{src}: not an fbank stage directory (no features.jsonl)")
    import json

    fcfg = json.loads((src / "fbank_config.json").read_text())
    fb = fcfg.get("config", fcfg).get("fbank", {})
    shift = float(fb.get("frame_shift_ms", 10.0)) / 1000.0
    rate = int(fb.get("sample_rate", 16000))
    records = read_jsonl(src / "features.jsonl")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cuts = []
    recordings: dict[str, object] = {}
    with NumpyHdf5Writer(out / FEATS_H5) as writer, ArkReader(src) as arks:
        for r in records:
            m = arks.load(r)
            key = writer.write(r["id"], m)
            # The cut lasts exactly num_frames * shift (what lhotse's own Kaldi import gives Kaldi
            # features: snip_edges frames cover up to 1.5 frames less than the segment); the
            # segment's own duration is kept in the supervision's custom "segment_duration".
            dur = round(m.shape[0] * shift, 6)
            speed = float(r.get("speed") or 1.0)  # a `perturb` copy: lhotse's own speed transform
            base_id = r.get("recording_id") or Path(r["audio"]).stem
            rec_id = base_id if speed == 1.0 else f"{base_id}_sp{speed:g}"
            if rec_id not in recordings:
                rec = lhotse.Recording.from_file(r["audio"], recording_id=base_id)
                if rec.sampling_rate != rate:  # the features were computed at `rate`: say so
                    rec = rec.resample(rate)
                if speed != 1.0:
                    rec = _with_id(rec.perturb_speed(speed, affix_id=False), rec_id)
                recordings[rec_id] = rec
            start = round(float(r.get("start") or 0.0) / speed, 6)
            f = lhotse.Features(type="kaldi-fbank", num_frames=m.shape[0], num_features=m.shape[1], frame_shift=shift,
                                sampling_rate=rate, start=start, duration=dur,
                                storage_type=writer.name, storage_path=str((out / FEATS_H5).resolve()),
                                storage_key=key, recording_id=rec_id, channels=0)
            custom = {k: r[k] for k in ("split", "label", "vtln_warp", "perturbed_from") if k in r}
            if r.get("duration") is not None:
                custom["segment_duration"] = float(r["duration"])
            sup = lhotse.SupervisionSegment(id=r["id"], recording_id=rec_id, start=0.0,  # relative to the cut
                                            duration=dur, channel=0, text=r.get("transcript"),
                                            speaker=r.get("speaker"), custom=custom or None)
            cuts.append(lhotse.MonoCut(id=r["id"], start=start, duration=dur, channel=0,
                                       supervisions=[sup], features=f, recording=recordings[rec_id]))
    lhotse.CutSet.from_cuts(cuts).to_file(out / CUTS)
    return StageSummary("lhotse export", total=len(records), kept=len(cuts), rejected=0,
                        elapsed_s=timer.elapsed).check()

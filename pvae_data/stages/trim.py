"""The ``trim`` stage: cut leading/trailing silence off every utterance with a VAD.

Input: an utterance (or segment) manifest.  Output: a segment manifest whose records are the
inputs plus ``start``/``end`` (seconds in the source audio) and ``duration``; the audio is not
rewritten, the ``fbank`` stage reads just the span.  An input in which the VAD finds no speech
is rejected with its reason: trimming never silently empties an utterance.

Cluster job arrays (``job=JobSlice(N, i)``, CLI ``--array-size N --array-index i``): the manifest is
cut into fixed chunks of ``chunk_size`` records; member ``i`` trims the chunks ``c`` with
``c % N == i`` and writes each as ``OUT/parts/trim.NNNNN.json`` (kept and rejected records, a key
of config + manifest + chunk size; written atomically).  A plain run reuses every part whose key
matches, trims whatever is missing, and writes the outputs in manifest order: the same bytes as
one run without the array.  A plain run writes its parts too, so a killed run resumes.  The
chunk loop and the parts are the ones every chunked stage shares (``stage.run_chunks``,
``stage.ChunkParts``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..io_utils import read_jsonl, write_json, write_jsonl
from ..stage import PLAIN_RUN, ChunkParts, JobSlice, StageSummary, Timer, run_chunks
from ..vad import NoSpeechError, VadConfig, trim_bounds


def trim_record(record: dict, cfg: VadConfig, audio: tuple | None = None) -> tuple[dict | None, dict | None]:
    """(trimmed record, None) or (None, rejection) for one manifest record; ``audio`` is its
    ``(wave, rate)`` when the caller has loaded it already."""
    from ..audio import AudioError, load_audio

    start0 = float(record.get("start") or 0.0)
    try:
        wave, rate = audio or load_audio(record["audio"], start=record.get("start"), end=record.get("end"))
        a, b = trim_bounds(wave, rate, cfg)
    except (AudioError, NoSpeechError, ValueError) as e:  # ValueError: e.g. non-finite samples
        return None, {"id": record.get("id"), "audio": record.get("audio"), "reason": getattr(e, "reason", str(e))}
    start, end = start0 + a / rate, start0 + b / rate
    out = {**record, "start": round(start, 6), "end": round(end, 6), "duration": round(end - start, 6)}
    return out, None


def _trim_many(index: int, records: list[dict], cfg_dict: dict) -> list[tuple[dict | None, dict | None]]:
    cfg = VadConfig.from_dict(cfg_dict)
    return [trim_record(r, cfg) for r in records]


def trim_manifest(manifest: str | Path, out_dir: str | Path, cfg: VadConfig = VadConfig(),
                  jobs: int = 1, show_progress: bool = True, chunk_size: int = 200,
                  job: JobSlice = PLAIN_RUN) -> StageSummary:
    """Write ``segments.jsonl``, ``rejected.jsonl`` and ``vad_config.json`` in ``out_dir``.

    As one member of a job array (``job``), trim only this member's chunks into ``OUT/parts/``
    and return their counts; the plain run that follows merges (see the module docstring).
    """
    timer = Timer()
    manifest_bytes = Path(manifest).read_bytes()
    records = read_jsonl(manifest)
    out = Path(out_dir)
    key = hashlib.sha256(json.dumps({"config": cfg.to_dict(), "chunk_size": chunk_size,
                                     "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest()},
                                    sort_keys=True).encode()).hexdigest()
    chunks = [records[i:i + chunk_size] for i in range(0, len(records), chunk_size)]
    parts = ChunkParts(out, "trim", key)
    parts.remove_temps(job, len(chunks))
    run = run_chunks(chunks, _trim_many, (cfg.to_dict(),), done=lambda i: parts.read(i, len(chunks[i])),
                     finish=parts.write, job=job, jobs=jobs, desc="trim", show_progress=show_progress)
    results = run.flat()
    kept = [k for k, _ in results if k is not None]
    rejected = [r for _, r in results if r is not None]
    reused = run.reused
    if job.is_member:
        return StageSummary("trim", total=len(results), kept=len(kept), rejected=len(rejected),
                            elapsed_s=timer.elapsed, skipped_done=reused,
                            extra={"job": job.label(), "chunks": len(run.owned)}).check()
    write_jsonl(out / "segments.jsonl", kept)
    write_jsonl(out / "rejected.jsonl", rejected)
    write_json(out / "vad_config.json", {"config": cfg.to_dict(), "manifest": str(Path(manifest).resolve())})
    return StageSummary("trim", total=len(records), kept=len(kept), rejected=len(rejected),
                        elapsed_s=timer.elapsed, skipped_done=reused).check()


TRIM_CONFIG = "vad_config.json"
_LINEAGE_HOPS = 8  # stages between a trim and the features (perturb, ...); a loop ends here too


def upstream_vad_config(manifest: str | Path) -> dict | None:
    """The VAD config of the ``trim`` stage a manifest descends from, or ``None``: its own
    directory's ``vad_config.json``, else the one beside the manifest that a stage config there
    (``perturb_config.json``, ``*_config.json``: ``"manifest"``) names, and so on up the chain; a
    stage that trims with its own VAD (``segment``, ``"config"`` -> ``"vad"``) ends the search with it.
    A model's front end must trim a new recording as its training data were trimmed; the shards
    record what this finds (``index.json`` ``"trim"``).  Reads JSON only."""
    d = Path(manifest).resolve().parent
    for _ in range(_LINEAGE_HOPS):
        if (d / TRIM_CONFIG).is_file():
            try:
                cfg = json.loads((d / TRIM_CONFIG).read_text()).get("config")
                return VadConfig.from_dict(cfg).to_dict()
            except (OSError, ValueError, TypeError, AttributeError):
                return None
        parent = None
        for p in sorted(d.glob("*_config.json")):
            try:
                saved = json.loads(p.read_text())
                up, vad = saved.get("manifest"), (saved.get("config") or {}).get("vad")
                if isinstance(vad, dict):  # a stage that trims itself (segment): its VAD, not one further up
                    return VadConfig.from_dict(vad).to_dict()
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            if isinstance(up, str) and up:
                parent = Path(up).parent
                break
        if parent is None or parent == d:
            return None
        d = parent
    return None

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
one run without the array.  A plain run on its own writes no parts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .io_utils import atomic_open, read_jsonl, write_json, write_jsonl
from .stage import PLAIN_RUN, JobSlice, StageSummary, Timer, progress, worker_pool
from .vad import NoSpeechError, VadConfig, trim_bounds


def trim_record(record: dict, cfg: VadConfig, audio: tuple | None = None) -> tuple[dict | None, dict | None]:
    """(trimmed record, None) or (None, rejection) for one manifest record; ``audio`` is its
    ``(wave, rate)`` when the caller has loaded it already."""
    from .audio import AudioError, load_audio

    start0 = float(record.get("start") or 0.0)
    try:
        wave, rate = audio or load_audio(record["audio"], start=record.get("start"), end=record.get("end"))
        a, b = trim_bounds(wave, rate, cfg)
    except (AudioError, NoSpeechError, ValueError) as e:  # ValueError: e.g. non-finite samples
        return None, {"id": record.get("id"), "audio": record.get("audio"), "reason": getattr(e, "reason", str(e))}
    start, end = start0 + a / rate, start0 + b / rate
    out = {**record, "start": round(start, 6), "end": round(end, 6), "duration": round(end - start, 6)}
    return out, None


def _trim_many(records: list[dict], cfg_dict: dict) -> list[tuple[dict | None, dict | None]]:
    cfg = VadConfig.from_dict(cfg_dict)
    return [trim_record(r, cfg) for r in records]


def _part_path(out: Path, index: int) -> Path:
    return out / "parts" / f"trim.{index:05d}.json"


def _read_part(out: Path, index: int, key: str, n: int) -> list[tuple[dict | None, dict | None]] | None:
    """A finished part's results, or None if absent, unreadable or made for other inputs."""
    try:
        part = json.loads(_part_path(out, index).read_text())
    except (OSError, ValueError):
        return None
    if part.get("key") != key or len(part.get("results", ())) != n:
        return None
    return [(k, r) for k, r in part["results"]]


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
    owned = job.mine(len(chunks)) if job.is_member else list(range(len(chunks)))
    done = {i: r for i in owned if (r := _read_part(out, i, key, len(chunks[i]))) is not None}
    todo = [i for i in owned if i not in done]
    bar = progress(sum(len(chunks[i]) for i in owned), "trim", show_progress)
    bar.update(sum(len(chunks[i]) for i in done))

    def finished(i: int, res: list) -> None:
        done[i] = res
        bar.update(len(chunks[i]))
        if job.is_member:
            # Not write_json: it sorts keys, and the records must keep their order to merge byte-identically.
            with atomic_open(_part_path(out, i), "w", encoding="utf-8") as f:
                json.dump({"chunk": i, "key": key, "results": [list(x) for x in res]}, f, ensure_ascii=False)

    if jobs <= 1 or len(todo) <= 1:
        for i in todo:
            finished(i, _trim_many(chunks[i], cfg.to_dict()))
    else:
        with worker_pool(jobs) as ex:
            for i, res in zip(todo, ex.map(_trim_many, [chunks[i] for i in todo], [cfg.to_dict()] * len(todo))):
                finished(i, res)
    bar.close()
    results = [x for i in owned for x in done[i]]
    kept = [k for k, _ in results if k is not None]
    rejected = [r for _, r in results if r is not None]
    reused = sum(len(chunks[i]) for i in owned if i not in todo)
    if job.is_member:
        return StageSummary("trim", total=len(results), kept=len(kept), rejected=len(rejected),
                            elapsed_s=timer.elapsed, skipped_done=reused,
                            extra={"job": job.label(), "chunks": len(owned)}).check()
    write_jsonl(out / "segments.jsonl", kept)
    write_jsonl(out / "rejected.jsonl", rejected)
    write_json(out / "vad_config.json", {"config": cfg.to_dict(), "manifest": str(Path(manifest).resolve())})
    return StageSummary("trim", total=len(records), kept=len(kept), rejected=len(rejected),
                        elapsed_s=timer.elapsed, skipped_done=reused).check()

"""The ``trim`` stage: cut leading/trailing silence off every utterance with a VAD.

Input: an utterance (or segment) manifest.  Output: a segment manifest whose records are the
inputs plus ``start``/``end`` (seconds in the source audio) and ``duration``; the audio is not
rewritten, the ``fbank`` stage reads just the span.  An input in which the VAD finds no speech
is rejected with its reason: trimming never silently empties an utterance.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .io_utils import read_jsonl, write_json, write_jsonl
from .stage import StageSummary, Timer, progress, worker_context
from .vad import NoSpeechError, VadConfig, trim_bounds


def trim_record(record: dict, cfg: VadConfig) -> tuple[dict | None, dict | None]:
    """(trimmed record, None) or (None, rejection) for one manifest record."""
    from .audio import AudioError, load_audio

    start0 = float(record.get("start") or 0.0)
    try:
        wave, rate = load_audio(record["audio"], start=record.get("start"), end=record.get("end"))
        a, b = trim_bounds(wave, rate, cfg)
    except (AudioError, NoSpeechError, ValueError) as e:  # ValueError: e.g. non-finite samples
        return None, {"id": record.get("id"), "audio": record.get("audio"), "reason": getattr(e, "reason", str(e))}
    start, end = start0 + a / rate, start0 + b / rate
    out = {**record, "start": round(start, 6), "end": round(end, 6), "duration": round(end - start, 6)}
    return out, None


def _trim_many(records: list[dict], cfg_dict: dict) -> list[tuple[dict | None, dict | None]]:
    cfg = VadConfig.from_dict(cfg_dict)
    return [trim_record(r, cfg) for r in records]


def trim_manifest(manifest: str | Path, out_dir: str | Path, cfg: VadConfig = VadConfig(),
                  jobs: int = 1, show_progress: bool = True, chunk_size: int = 200) -> StageSummary:
    """Write ``segments.jsonl``, ``rejected.jsonl`` and ``vad_config.json`` in ``out_dir``."""
    timer = Timer()
    records = read_jsonl(manifest)
    out = Path(out_dir)
    chunks = [records[i:i + chunk_size] for i in range(0, len(records), chunk_size)]
    bar = progress(len(records), "trim", show_progress)
    results: list[tuple[dict | None, dict | None]] = []
    if jobs <= 1 or len(chunks) <= 1:
        for c in chunks:
            results.extend(_trim_many(c, cfg.to_dict()))
            bar.update(len(c))
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context()) as ex:
            for c, res in zip(chunks, ex.map(_trim_many, chunks, [cfg.to_dict()] * len(chunks))):
                results.extend(res)
                bar.update(len(c))
    bar.close()
    kept = [k for k, _ in results if k is not None]
    rejected = [r for _, r in results if r is not None]
    write_jsonl(out / "segments.jsonl", kept)
    write_jsonl(out / "rejected.jsonl", rejected)
    write_json(out / "vad_config.json", {"config": cfg.to_dict(), "manifest": str(Path(manifest).resolve())})
    return StageSummary("trim", total=len(records), kept=len(kept), rejected=len(rejected),
                        elapsed_s=timer.elapsed).check()

"""The ``segment`` stage: connected-digit utterances -> one segment per spoken digit.

For every utterance of a manifest the time span of each word comes from the forced aligner
(:mod:`pvae_data.align`) or from an imported CTM; the span is then trimmed by the energy VAD,
and a segment record is written per word.  Single-word utterances are trimmed as the ``trim``
stage does (:func:`pvae_data.stages.trim.trim_record`), but when an aligner is at hand their transcript
is checked by it too (a two-digit recording labelled with one digit is rejected, not kept as
that digit).  The output ``segments.jsonl`` has the shape of the ``trim`` stage's, so ``fbank``
and ``shard`` read it unchanged.

Trimming a word inside connected speech: the VAD estimates the background as its input's 10th
energy percentile, but a word's window may hold no background at all (digits that abut).  Each
window is therefore shown to the VAD between two copies of the utterance's background: the
quietest 100 ms of the stretches the aligner put *outside* every word (its silences and pauses),
kept away from the words by ``ref_guard_s``.  A recording cut tight around abutting words has no
such stretch; one that is not ``ref_min_snr_db`` below the words is speech, not background.  The
words then keep the aligner's edges (a VAD whose floor is speech cuts into the words).  The
window reaches ``slack_s`` into an adjacent pause (at most half-way to the neighbouring word),
so a word edge the aligner left in the pause is recovered, and it never crosses into a
neighbour.  Measured effect on the benchmark (``docs/alignment.md``): digits with IoU >= 0.8 go
from 81 % (aligner spans) to 98 %.

An utterance is kept whole or rejected whole, with the reason: no speech, a failed alignment
(see :mod:`pvae_data.align.aligner`), a CTM that disagrees with the transcript, or a word span
in which the VAD finds no speech.  kept + rejected == total utterances.

Resume and cluster job arrays (``job=JobSlice(N, i)``, CLI ``--array-size N --array-index i``): the
manifest is cut into fixed chunks of ``chunk_size`` utterances and every finished chunk is written
as ``OUT/parts/segment.NNNNN.json`` (its results and a key: sha256 of the segment config, the
chunk size, the manifest, the aligner's ``model.json``/``model.npz`` or the CTM, and the cut-audio
directory; written atomically).  Member ``i`` of an array does only the chunks ``c % N == i`` and
writes no final outputs; a plain run reuses every part whose key matches (also those of its own
earlier, interrupted attempt), aligns whatever is missing and writes the outputs in manifest
order: the same bytes as one uninterrupted run.  Members never train an aligner: they need
``model`` or an existing ``OUT/model`` (e.g. from ``pvae-data align-train MANIFEST OUT/model``).
An aligner that a plain run trained into ``OUT/model`` is reused by later runs on the same
manifest (``OUT/model/segment_train.json`` records which), retrained for another manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..align.adapt import AdaptConfig
from ..align.aligner import AlignConfig, align_words
from ..align.ctm import read_ctm, write_ctm
from ..align.hmm import MODEL_JSON, WordHMMs, cached_model, load_model, model_sha256
from ..align.train import AlignTrainConfig
from ..audio import AudioError, load_audio
from ..config import ConfigMixin
from ..digits import transcript_words, word_to_label
from ..ids import id_path, id_problem
from ..io_utils import atomic_path, read_jsonl, remove_stale_temps, sha256_file, write_json, write_jsonl
from ..stage import PLAIN_RUN, ChunkParts, JobSlice, StageSummary, Timer, run_chunks, single_thread_blas
from ..vad import NoSpeechError, VadConfig, trim_bounds
from ..word_edges import refine_junctions, trim_words
from .align_train import REJECTED, reject, train_aligner
from .segment_adapt import adapt_speakers
from .trim import trim_record

SEGMENTS = "segments.jsonl"
CONFIG = "segment_config.json"
MODEL_SUBDIR = "model"
TRAIN_MARKER = "segment_train.json"  # in OUT/model when segment trained it: on which manifest and config



@dataclass(frozen=True)
class SegmentConfig(ConfigMixin):
    align: AlignConfig = field(default_factory=AlignConfig)
    vad: VadConfig = field(default_factory=lambda: VadConfig(margin_s=0.0))  # margin: context kept per segment
    slack_s: float = 0.2  # a word's VAD window reaches this far into an adjacent pause
    noise_ref_s: float = 0.1  # background reference shown to the VAD on both sides of a window
    # The reference is taken only from outside the words' spans (the aligner's silence and pauses),
    # `ref_guard_s` away from any word, from a stretch of >= `ref_min_s`, and only when it lies
    # >= `ref_min_snr_db` below the speech; otherwise the words keep the aligner's edges.
    ref_guard_s: float = 0.02
    ref_min_s: float = 0.02
    ref_min_snr_db: float = 12.0
    # Where two words abut (no pause between their spans), move their common edge to the
    # quietest 10 ms within this many seconds of the aligner's: 0 = keep the aligner's edge.
    # 0.02 (issue 13): tight + abutting digits 92.5 -> 93.6 % IoU >= 0.8 with 4 Gaussians per state.
    junction_search_s: float = 0.02
    # Speaker adaptation (pvae_data.align.adapt): before segmenting, the aligner is MAP-adapted to
    # each speaker (the records' ``speaker``) on that speaker's utterances whose transcripts it
    # accepts, and every utterance is then aligned with its speaker's model.  Records without a
    # speaker use the unadapted model.
    adapt: AdaptConfig = field(default_factory=lambda: AdaptConfig(iterations=3, tau=10.0))
    word_labels: dict = field(default_factory=dict)  # word -> label for non-English vocabularies


def word_label(word: str, extra: dict) -> int | None:
    if word in extra:
        return int(extra[word])
    try:
        return word_to_label(word)
    except ValueError:
        return None


# --------------------------------------------------------------------------------- one utterance


def _segment(rec: dict, k: int, word: str, start: float, end: float, cfg: SegmentConfig) -> dict:
    out = {key: v for key, v in rec.items() if key not in ("note",)}
    out.update({"id": f"{rec['id']}-d{k}", "utterance": rec["id"], "position": k, "word": word, "transcript": word,
                "label": word_label(word, cfg.word_labels), "start": round(start, 6), "end": round(end, 6),
                "duration": round(end - start, 6)})
    return out


def segment_utterance(rec: dict, model: WordHMMs | None, cfg: SegmentConfig,
                      ctm_words: list[tuple[str, float, float]] | None = None,
                      use_ctm: bool = False) -> tuple[list[dict], dict | None, list[tuple]]:
    """(segments, None, CTM rows) or ([], rejection, []) for one manifest record."""
    bad = id_problem(rec.get("id"))  # its segments' ids become file names with --write-audio
    if bad:
        return [], reject(rec, bad), []
    words = transcript_words(rec)
    if not words:
        return [], reject(rec, "empty transcript"), []
    uid = rec.get("id")
    if len(words) == 1:
        checked = model is not None and not use_ctm
        audio = None
        if checked:  # read once, for the trim and the aligner
            try:
                wave, rate = load_audio(rec["audio"], start=rec.get("start"), end=rec.get("end"))
            except AudioError as e:
                return [], reject(rec, e.reason), []
            audio = (wave, rate)
        trimmed, rej = trim_record(rec, cfg.vad, audio)
        if rej is not None:
            return [], reject(rec, rej["reason"]), []
        conf = 1.0
        if checked:
            # The transcript can be wrong here too (a two-digit recording labelled with one digit):
            # the aligner's checks run on single words, the span stays the trim stage's.
            al = _align(rec, model, cfg, words, wave.astype(np.float64), rate)
            if isinstance(al, dict):
                return [], al, []
            conf = float(np.exp(-max(0.0, al.word_deficits[0]))) if al.word_deficits else 1.0
        seg = _segment(rec, 0, words[0], trimmed["start"], trimmed["end"], cfg)
        return [seg], None, [(uid, words[0], 0.0, round(float(rec.get("duration") or 0.0), 3), conf)]
    try:
        wave, rate = load_audio(rec["audio"], start=rec.get("start"), end=rec.get("end"))
    except AudioError as e:
        return [], reject(rec, e.reason), []
    wave = wave.astype(np.float64)
    try:
        trim_bounds(wave, rate, cfg.vad)
    except (NoSpeechError, ValueError) as e:
        return [], reject(rec, getattr(e, "reason", str(e))), []
    confs: list[float | None]
    if use_ctm:
        if ctm_words is None:
            return [], reject(rec, "no alignment for this utterance in the CTM"), []
        got = [w for w, _, _ in ctm_words]
        if got != words:
            return [], reject(rec, f"CTM words {' '.join(got)!r} differ from the transcript {' '.join(words)!r}"), []
        spans = [(s, e) for _, s, e in ctm_words]
        if any(e <= s for s, e in spans) or any(spans[i + 1][0] < spans[i][1] - 1e-6 for i in range(len(spans) - 1)):
            return [], reject(rec, "CTM word spans are empty or overlap"), []
        if spans[-1][1] > len(wave) / rate + 0.05:
            return [], reject(rec, f"CTM ends at {spans[-1][1]:.2f} s, past the audio ({len(wave) / rate:.2f} s)"), []
        confs = [None] * len(words)
    else:
        if model is None:
            return [], reject(rec, "no aligner model for a multi-word utterance"), []
        al = _align(rec, model, cfg, words, wave, rate)
        if isinstance(al, dict):
            return [], al, []
        spans = [(round(a, 3), round(b, 3)) for a, b in al.spans]
        confs = [float(np.exp(-max(0.0, d))) for d in al.word_deficits] or [None] * len(words)
    trimmed = trim_words(wave, rate, refine_junctions(wave, rate, spans, cfg.junction_search_s), cfg)
    offset = float(rec.get("start") or 0.0)
    segs = []
    for k, (w, t, (a, b)) in enumerate(zip(words, trimmed, spans)):
        if t is None:
            return [], reject(rec, f"no speech in word {k + 1} {w!r} at {a:.2f}-{b:.2f} s"), []
        segs.append(_segment(rec, k, w, offset + t[0] / rate, offset + t[1] / rate, cfg))
    rows = [(uid, w, a, b, c) for w, (a, b), c in zip(words, spans, confs)]
    return segs, None, rows


def _align(rec: dict, model: WordHMMs, cfg: SegmentConfig, words: list[str], wave: np.ndarray, rate: int):
    """The aligner's result for ``rec`` (``wave`` at ``rate``), or its rejection record."""
    mrate = model.features.sample_rate
    mwave = wave if rate == mrate else _resample(wave, rate, mrate)
    al = align_words(model, mwave, words, cfg.align)
    return al if al.ok else reject(rec, al.reason)


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    import soxr

    return soxr.resample(wave.astype(np.float32), rate, target, quality="HQ").astype(np.float64)


# --------------------------------------------------------------------------------- workers

def _segment_many(index: int, records: list[dict], model_dir: str | None, cfg_dict: dict, ctm: dict | None,
                  audio_dir: str | None, speaker_models: dict | None = None) -> list[tuple[list[dict], dict | None, list[tuple]]]:
    cfg = SegmentConfig.from_dict(cfg_dict)
    out = []
    with single_thread_blas():
        for r in records:
            model = cached_model((speaker_models or {}).get(r.get("speaker"), model_dir))
            try:
                res = segment_utterance(r, model, cfg, None if ctm is None else ctm.get(r.get("id")), ctm is not None)
            except (KeyError, TypeError, ValueError) as e:  # a malformed record is a rejection, not a crash
                res = ([], reject(r, f"bad record: {type(e).__name__}: {e}"), [])
            if audio_dir and res[0]:
                _write_cuts(res[0], Path(audio_dir))
            out.append(res)
    return out


def _write_cuts(segs: list[dict], audio_dir: Path) -> None:
    import soundfile as sf

    audio_dir.mkdir(parents=True, exist_ok=True)
    for s in segs:
        wave, rate = load_audio(s["audio"], start=s["start"], end=s["end"])
        path = id_path(audio_dir, s["id"], ".wav")
        with atomic_path(path) as tmp:
            sf.write(tmp, np.clip(np.round(wave), -32768, 32767).astype(np.int16), rate, format="WAV", subtype="PCM_16")
        s["cut_audio"] = str(path.resolve())


# --------------------------------------------------------------------------------- the stage


def _own_model(out: Path, want: dict) -> tuple[bool, bool]:
    """(usable, trained by segment) for ``OUT/model``: usable when it is a model and was either put
    there by the user (no marker) or trained by segment for this manifest and config."""
    own = out / MODEL_SUBDIR
    if not (own / MODEL_JSON).is_file():
        return False, False
    try:
        marker = json.loads((own / TRAIN_MARKER).read_text())
    except FileNotFoundError:
        return True, False
    except (OSError, ValueError):
        return False, True
    return marker == want, True


def _aligner(model, records: list[dict], out: Path, manifest_sha: str, train_cfg: AlignTrainConfig, job: JobSlice,
             jobs: int, show_progress: bool) -> tuple[str, object, bool, str | None]:
    """(model dir, training summary or None, trained by segment, note) of the aligner to use:
    ``model`` when given, else ``OUT/model``, trained on the manifest's train split when it is
    missing or was trained by segment for another manifest or config."""
    trained, own_trained, note = None, False, None
    if model is None:
        want = json.loads(json.dumps({"manifest_sha256": manifest_sha, "split": "train",
                                      "train_config": train_cfg.to_dict()}))
        usable, own_trained = _own_model(out, want)
        if not usable and job.is_member:
            why = "was trained by `segment` for another manifest or config" if own_trained else "does not exist"
            raise ValueError(f"job-array members need an existing aligner, and {out / MODEL_SUBDIR} {why}: "
                             f"give --model DIR, or train one first with `pvae-data align-train MANIFEST "
                             f"{out / MODEL_SUBDIR}` (members do not train their own into the same OUT)")
        if not usable:
            trained = train_aligner(records, out / MODEL_SUBDIR, train_cfg, jobs=jobs, show_progress=show_progress)
            write_json(out / MODEL_SUBDIR / TRAIN_MARKER, want)
            own_trained = True
        elif not job.is_member:
            note = f"{out / MODEL_SUBDIR} (already there, reused)"
        model = out / MODEL_SUBDIR
    if not (Path(model) / MODEL_JSON).is_file():
        raise ValueError(f"{model}: not an aligner model directory (no {MODEL_JSON})")
    load_model(model)  # fail early, with the reason, on a broken model
    return str(Path(model).resolve()), trained, own_trained, note


def segment_manifest(manifest: str | os.PathLike, out_dir: str | os.PathLike, model: str | os.PathLike | None = None,
                     cfg: SegmentConfig = SegmentConfig(), jobs: int = 1, ctm: str | os.PathLike | None = None,
                     export_ctm: str | os.PathLike | None = None, write_audio: bool = False,
                     train_cfg: AlignTrainConfig = AlignTrainConfig(), show_progress: bool = True,
                     chunk_size: int = 50, job: JobSlice = PLAIN_RUN) -> StageSummary:
    """Write ``segments.jsonl``, ``rejected.jsonl`` and ``segment_config.json`` in ``out_dir``.

    Word spans come from ``ctm`` if given, else from the aligner in ``model`` (a directory written
    by :func:`train_aligner`); with neither, the aligner in ``out_dir/model`` is used, trained
    first on the manifest's train split if there is none (or one trained for another manifest).
    ``export_ctm`` writes the word spans (before VAD trimming) as CTM.  ``write_audio`` also
    writes each segment as ``out_dir/audio/<id>.wav``.

    Finished chunks of ``chunk_size`` utterances are kept in ``out_dir/parts`` and reused by a
    rerun.  As one member of a job array (``job``), segment only this member's chunks, write no
    final outputs and return their counts; the aligner must exist already (see the module docstring).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    timer = Timer()
    manifest_sha = sha256_file(manifest)
    records = read_jsonl(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctm_map, ctm_bad = None, []
    trained, own_trained, model_dir, model_note = None, False, None, None
    if ctm is not None:
        ctm_map, ctm_bad = read_ctm(ctm)
        if not ctm_map:
            raise ValueError(f"{ctm}: no word lines" + (f" ({ctm_bad[0]})" if ctm_bad else ""))
    elif model is not None or any(len(transcript_words(r)) > 1 for r in records):
        model_dir, trained, own_trained, model_note = _aligner(model, records, out, manifest_sha, train_cfg, job,
                                                               jobs, show_progress)
    audio_dir = str((out / "audio").resolve()) if write_audio else None
    cfg_d = cfg.to_dict()
    speaker_models = None
    if model_dir is not None and ctm_map is None and cfg.adapt.iterations > 0:
        speaker_models = adapt_speakers(records, model_dir, out, cfg, jobs=jobs, show_progress=show_progress)
    key = hashlib.sha256(json.dumps({
        "config": cfg_d, "chunk_size": chunk_size, "manifest_sha256": manifest_sha,
        "model_sha256": model_sha256(model_dir) if model_dir else None,
        "ctm_sha256": sha256_file(ctm) if ctm is not None else None, "audio_dir": audio_dir,
    }, sort_keys=True).encode()).hexdigest()
    chunks = [records[i:i + chunk_size] for i in range(0, len(records), chunk_size)]
    parts = ChunkParts(out, "segment", key)
    parts.remove_temps(job, len(chunks))
    if audio_dir and not job.is_member:
        remove_stale_temps(audio_dir)
    run = run_chunks(chunks, _segment_many, (model_dir, cfg_d, ctm_map, audio_dir, speaker_models),
                     done=lambda i: parts.read(i, len(chunks[i])), finish=parts.write, job=job, jobs=jobs,
                     desc="segment", show_progress=show_progress)
    results = run.flat()
    segments = [s for segs, _, _ in results for s in segs]
    rejected = [r for _, r, _ in results if r is not None]
    kept = sum(1 for segs, r, _ in results if r is None)
    reused = run.reused
    if job.is_member:
        return StageSummary("segment", total=len(results), kept=kept, rejected=len(rejected), elapsed_s=timer.elapsed,
                            skipped_done=reused,
                            extra={"job": job.label(), "chunks": len(run.owned), "segments": len(segments)}).check()
    write_jsonl(out / SEGMENTS, segments)
    write_jsonl(out / REJECTED, rejected)
    extra: dict = {"segments": len(segments)}
    if model_note:
        extra["model"] = model_note
    if export_ctm is not None:
        extra["ctm words"] = write_ctm(export_ctm, [row for _, _, rows in results for row in rows])
    if ctm_map is not None:
        ids = {r.get("id") for r in records}
        extra["ctm utterances not in manifest"] = sum(1 for u in ctm_map if u not in ids)
        if ctm_bad:
            extra["malformed ctm lines"] = len(ctm_bad)
    write_json(out / CONFIG, {"config": cfg_d, "manifest": str(Path(manifest).resolve()), "model": model_dir,
                              "ctm": str(Path(ctm).resolve()) if ctm else None,
                              "trained_here": own_trained})
    if trained is not None:
        extra["trained on"] = f"{trained.kept} utterances"
    return StageSummary("segment", total=len(records), kept=kept, rejected=len(rejected), elapsed_s=timer.elapsed,
                        skipped_done=reused, extra=extra).check()

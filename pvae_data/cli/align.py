"""``pvae-data``: forced alignment: `align-train`, `segment`."""

from __future__ import annotations

from pathlib import Path

import click

from .base import CONTEXT, _config_dict, _config_option, _fail, _job_array_options, _job_slice, _jobs_option, _manifest_argument, _quiet_option, _run_stage, main


@main.command("align-train", context_settings=CONTEXT)
@_manifest_argument
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--split", default="train", help="Train on this split (all utterances when none has it).")
@_config_option("AlignTrainConfig", "align-train")
@click.option("--mixtures", type=click.IntRange(1), default=None, help="Gaussians per state, at most [default: 16; fewer on a small corpus].")
@click.option("--iterations", type=click.IntRange(1), default=None, help="Viterbi passes per mixture size [default: 4].")
@click.option("--frames-per-state", type=float, default=None, help="Word length / states [default: 3].")
@click.option("--sample-rate", type=int, default=None, help="Feature sample rate [default: 8000].")
@_jobs_option
@_quiet_option
def align_train(manifest: Path, model_dir: Path, split: str, config_file, mixtures, iterations, frames_per_state,
                sample_rate, jobs: int, quiet: bool) -> None:
    """Train the forced aligner (whole-word HMMs, flat start) on MANIFEST -> MODEL_DIR.

    Needs only transcripts, no boundaries. Writes model.npz + model.json
    (vocabulary, config, calibrated rejection thresholds) and rejected.jsonl.
    """
    from ..align.train import AlignTrainConfig
    from ..stages.align_train import train_aligner

    def run():
        d = _config_dict(config_file)
        cfg = AlignTrainConfig.from_dict(d)
        over = {"mixtures": mixtures, "iterations": iterations, "frames_per_state": frames_per_state}
        cfg = AlignTrainConfig.from_dict({**cfg.to_dict(), **{k: v for k, v in over.items() if v is not None}})
        if sample_rate is not None:
            cfg = AlignTrainConfig.from_dict({**cfg.to_dict(),
                                              "features": {**cfg.features.to_dict(), "sample_rate": sample_rate}})
        log = None if quiet else (lambda m: click.echo(f"  {m}", err=True))
        return train_aligner(manifest, model_dir, cfg, split=split, jobs=jobs, show_progress=not quiet, log=log)

    _run_stage(model_dir, run)


@main.command(context_settings=CONTEXT)
@_manifest_argument
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Aligner from `align-train` [default: train one on MANIFEST's train split into OUT/model].")
@_config_option("SegmentConfig", "segment")
@click.option("--ctm", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Take word spans from this CTM (Kaldi/MFA) instead of aligning.")
@click.option("--export-ctm", type=click.Path(dir_okay=False, path_type=Path), help="Also write the word spans as CTM.")
@click.option("--write-audio", is_flag=True, help="Also write every segment as OUT/audio/<id>.wav.")
@click.option("--margin", type=float, default=None, help="Seconds of context kept around each digit [default: 0].")
@click.option("--slack", type=float, default=None, help="How far a word's VAD window reaches into a pause [default: 0.2].")
@click.option("--ref-min-snr-db", type=float, default=None, help="The background taken outside the words must lie this "
              "far below them, else the words keep the aligner's edges [default: 12].")
@click.option("--junction-search", type=float, default=None, help="Move the edge between two abutting words to the "
              "quietest 10 ms within this many seconds [default: 0.02; 0 = off].")
@click.option("--min-score", type=float, default=None, help="Reject below this log-likelihood/frame [default: calibrated].")
@click.option("--max-deficit", type=float, default=None, help="Reject when free recognition beats the transcript by more "
              "than this per frame [default: calibrated].")
@click.option("--max-word-deficit", type=float, default=None, help="The same over one word [default: calibrated].")
@click.option("--recognition-check/--no-recognition-check", default=None,
              help="Run the free-recognition mismatch check  [default: the config's, on]")
@click.option("--speaker-adapt/--no-speaker-adapt", default=None,
              help="MAP-adapt the aligner to each speaker of the manifest before segmenting [default: on; "
                   "rounds and prior weight: --set adapt.iterations=N, adapt.tau=T].")
@click.option("--chunk-size", type=click.IntRange(1), default=50,
              help="Utterances per unit of work (resume and job-array granularity).")
@_job_array_options
@_jobs_option
@_quiet_option
def segment(manifest: Path, out: Path, model_dir, config_file, ctm, export_ctm, write_audio: bool, margin, slack, ref_min_snr_db,
            junction_search, min_score, max_deficit, max_word_deficit, recognition_check: bool, speaker_adapt,
            chunk_size: int, array_size: int, job_index, jobs: int, quiet: bool) -> None:
    """Cut connected-digit utterances into one segment per digit: MANIFEST -> OUT/segments.jsonl.

    Word spans come from the forced aligner (or --ctm), then each is trimmed
    by the energy VAD. Single-word utterances are trimmed as `trim` does, and
    their transcript is checked by the aligner when there is one. An utterance
    whose alignment fails is rejected whole, with the reason. Finished chunks
    are kept in OUT/parts: a rerun resumes. With --array-size N --array-index I,
    segments only chunk c % N == I (the aligner must exist: --model or
    OUT/model); a plain run afterwards merges.
    """
    from ..stages.segment import SegmentConfig, segment_manifest
    from ..vad import VadConfig

    if model_dir is not None and ctm is not None:
        _fail(ValueError("give --model or --ctm, not both"))
    job = _job_slice(array_size, job_index)

    def run():
        from dataclasses import replace

        base = SegmentConfig.from_dict(_config_dict(config_file))
        align = {k: v for k, v in (("min_score", min_score), ("max_deficit", max_deficit),
                                   ("max_word_deficit", max_word_deficit)) if v is not None}
        cfg = replace(
            base,
            align=replace(base.align, **align, **({} if recognition_check is None else {"check_recognition": recognition_check})),
            vad=VadConfig.from_dict({**base.vad.to_dict(), **({"margin_s": margin} if margin is not None else {})}),
            slack_s=base.slack_s if slack is None else slack,
            ref_min_snr_db=base.ref_min_snr_db if ref_min_snr_db is None else ref_min_snr_db,
            junction_search_s=base.junction_search_s if junction_search is None else junction_search,
            adapt=(base.adapt if speaker_adapt is None or (speaker_adapt and base.adapt.iterations)
                   else replace(base.adapt, iterations=SegmentConfig().adapt.iterations if speaker_adapt else 0)))
        return segment_manifest(manifest, out, model=model_dir, cfg=cfg, jobs=jobs, ctm=ctm, export_ctm=export_ctm,
                                write_audio=write_audio, show_progress=not quiet, chunk_size=chunk_size, job=job)

    _run_stage(out, run, job=job)

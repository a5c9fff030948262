"""``pvae-data``: audio to features: `trim`, `perturb`, `fbank`."""

from __future__ import annotations

from pathlib import Path

import click

from .base import CONTEXT, _config_dict, _config_option, _job_array_options, _job_slice, _jobs_option, _manifest_argument, _quiet_option, _run_stage, main


@main.command(context_settings=CONTEXT)
@_manifest_argument
@click.argument("out", type=click.Path(path_type=Path))
@_config_option("VadConfig", "vad")
@click.option("--backend", type=click.Choice(["energy", "webrtc"]), default=None,
              help="energy: Kaldi compute-vad style; webrtc: the WebRTC VAD [default: energy].")
@click.option("--margin", type=float, default=None, help="Seconds of context kept on each side [default: VadConfig's].")
@click.option("--energy-threshold", type=float, default=None, help="Kaldi --vad-energy-threshold.")
@click.option("--energy-mean-scale", type=float, default=None, help="Kaldi --vad-energy-mean-scale.")
@click.option("--webrtc-mode", type=click.IntRange(0, 3), default=None, help="WebRTC aggressiveness.")
@click.option("--chunk-size", type=click.IntRange(1), default=200, help="Records per unit of work (job-array granularity).")
@_job_array_options
@_jobs_option
@_quiet_option
def trim(manifest: Path, out: Path, config_file, backend, margin, energy_threshold, energy_mean_scale,
         webrtc_mode, chunk_size: int, array_size: int, job_index, jobs: int, quiet: bool) -> None:
    """Trim leading/trailing silence: MANIFEST -> OUT/segments.jsonl.

    Inputs in which no speech is found are rejected with the reason, never
    emptied silently. With --array-size N --array-index I, trims only chunk
    c % N == I into OUT/parts/; a plain run afterwards merges.
    """
    from ..stages.trim import trim_manifest
    from ..vad import VadConfig

    job = _job_slice(array_size, job_index)
    overrides = {"backend": backend, "margin_s": margin, "energy_threshold": energy_threshold,
                 "energy_mean_scale": energy_mean_scale, "webrtc_mode": webrtc_mode}

    def run():
        cfg = VadConfig.from_dict({**VadConfig().to_dict(), **_config_dict(config_file),
                                   **{k: v for k, v in overrides.items() if v is not None}})
        return trim_manifest(manifest, out, cfg, jobs=jobs, show_progress=not quiet, chunk_size=chunk_size,
                             job=job)

    _run_stage(out, run, job=job)


@main.command(context_settings=CONTEXT)
@_manifest_argument
@click.argument("out", type=click.Path(path_type=Path))
@_config_option("PerturbConfig", "perturb")
@click.option("--speed", default=None, metavar="F,F,...",
              help="Speed factors in (0, 2]; 1.0 is the record itself (Kaldi's 3-way: 0.9,1.0,1.1) [default: 0.9,1.0,1.1].")
@click.option("--vtlp", default=None, metavar="W,W,...",
              help="VTLN warp factors in (0, 2] of extra copies, e.g. 0.9,1.1 [default: none].")
@click.option("--splits", default=None, metavar="S,S", help="Splits that get copies [default: train].")
@click.option("--edge-pad", "edge_pad_s", type=float, default=None, metavar="SECONDS",
              help="A copy cut at its file's edge gets up to this much white noise floor there, "
                   "35-65 dB under it (edge_pad_db) [default: 0, none].")
@_quiet_option
def perturb(manifest: Path, out: Path, config_file, speed, vtlp, splits, edge_pad_s, quiet: bool) -> None:
    """Speed / VTLN-warp perturbed training copies: MANIFEST -> OUT/segments.jsonl.

    As Kaldi's perturb_data_dir_speed.sh: copies get ids and speakers prefixed
    sp0.9- (vtlp1.1- for a warp) and a speed / vtln_warp field the fbank stage
    applies. The test split is never perturbed. No audio is written.
    """
    from ..stages.perturb import PerturbConfig, perturb_manifest

    def run():
        d = {**PerturbConfig().to_dict(), **_config_dict(config_file)}
        for k, v in (("speed", speed), ("vtlp", vtlp), ("splits", splits), ("edge_pad_s", edge_pad_s)):
            if v is not None:
                d[k] = v
        return perturb_manifest(manifest, out, PerturbConfig.from_dict(d))

    _run_stage(out, run)


@main.command(context_settings=CONTEXT)
@_manifest_argument
@click.argument("out", type=click.Path(path_type=Path))
@_config_option("FbankConfig", "fbank")
@click.option("--sample-rate", type=int, default=None, help="Audio is resampled to this rate [default: 16000].")
@click.option("--num-mel-bins", type=int, default=None, help="[default: 80]")
@click.option("--dither", type=float, default=None, help="Kaldi dither (int16 scale) [default: 0, deterministic].")
@click.option("--snip-edges/--no-snip-edges", default=None, help="Kaldi --snip-edges [default: snip].")
@click.option("--low-freq", type=float, default=None, help="Kaldi --low-freq, Hz [default: 20].")
@click.option("--high-freq", type=float, default=None,
              help="Kaldi --high-freq, Hz (<= 0: offset from Nyquist) [default: 0]. A corpus recorded at 8 kHz: "
                   "3700 keeps every input, whatever its rate, within the band training saw.")
@click.option("--chunk-size", type=click.IntRange(1), default=500, help="Utterances per ark (unit of resume).")
@click.option("--overwrite", is_flag=True, help="Recompute even if OUT holds features of another config.")
@_job_array_options
@_jobs_option
@_quiet_option
def fbank(manifest: Path, out: Path, config_file, sample_rate, num_mel_bins, dither, snip_edges, low_freq,
          high_freq, chunk_size: int, overwrite: bool, array_size: int, job_index, jobs: int, quiet: bool) -> None:
    """Kaldi-exact log-Mel filter banks: MANIFEST -> OUT/feats.scp + features.jsonl.

    Reads utterance or segment manifests (start/end honoured), writes Kaldi
    ark/scp, per-speaker and global CMVN stats, and the config. Resumes: a rerun
    keeps finished chunks. With --array-size N --array-index I, computes only chunk
    c % N == I; a plain run afterwards merges.
    """
    from ..stages.fbank import FbankStageConfig, StageConfigMismatch, compute_features
    from ..fbank import FbankConfig

    job = _job_slice(array_size, job_index)

    def run():
        base = _config_dict(config_file)
        overrides = {"sample_rate": sample_rate, "num_mel_bins": num_mel_bins, "dither": dither,
                     "snip_edges": snip_edges, "low_freq": low_freq, "high_freq": high_freq}
        fb = FbankConfig.from_dict({**FbankConfig().to_dict(), **base,
                                    **{k: v for k, v in overrides.items() if v is not None}})
        return compute_features(manifest, out, FbankStageConfig(fbank=fb, chunk_size=chunk_size),
                                jobs=jobs, show_progress=not quiet, overwrite=overwrite, job=job)

    _run_stage(out, run, errors=(StageConfigMismatch,), job=job)

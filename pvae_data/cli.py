"""``pvae-data``: the data pipeline's command line, a thin shell over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def _jobs_option(f):
    return click.option("-j", "--jobs", default=1, type=click.IntRange(1), help="Parallel worker processes.")(f)


def _quiet_option(f):
    return click.option("-q", "--quiet", is_flag=True, help="No progress bar.")(f)


def _finish(summary, out: Path | None = None) -> None:
    """Print the summary line; exit non-zero when there was input but nothing was kept."""
    click.echo(summary.line())
    if out is not None and summary.rejected:
        click.echo(f"  rejected inputs and reasons: {out / 'rejected.jsonl'}")
    if summary.total == 0:
        raise click.ClickException("no input found")
    if summary.kept == 0:
        raise click.ClickException("nothing succeeded: every input was rejected")


def _fail(e: Exception) -> None:
    raise click.ClickException(str(e)) from None


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="pvae-data")
def main() -> None:
    """Spoken-digit data pipeline: prepare -> trim -> fbank (-> shard).

    Every stage reads and writes JSONL manifests, accounts for every input
    (kept + rejected = total) and can be rerun safely.
    """


@main.command(context_settings=CONTEXT)
@click.argument("corpus", type=click.Choice(["fsdd", "tidigits", "list"]))
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@_jobs_option
@_quiet_option
def prepare(corpus: str, source: Path, out: Path, jobs: int, quiet: bool) -> None:
    """Corpus -> utterance manifest OUT/utterances.jsonl (+ rejected.jsonl).

    CORPUS is fsdd (a checkout of free-spoken-digit-dataset), tidigits (LDC
    layout with NIST SPHERE files) or list (a CSV/JSONL with path, transcript,
    speaker and optional split). Every audio file is opened and checked.
    """
    from .prepare import PrepareConfig, prepare_corpus

    try:
        summary = prepare_corpus(PrepareConfig(corpus=corpus, source=str(source)), out, jobs=jobs, progress=not quiet)
    except (ValueError, OSError) as e:
        _fail(e)
    _finish(summary, out)


@main.command(context_settings=CONTEXT)
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["energy", "webrtc"]), default="energy",
              help="energy: Kaldi compute-vad style; webrtc: the WebRTC VAD.")
@click.option("--margin", type=float, default=None, help="Seconds of context kept on each side [default: VadConfig's].")
@click.option("--energy-threshold", type=float, default=None, help="Kaldi --vad-energy-threshold.")
@click.option("--energy-mean-scale", type=float, default=None, help="Kaldi --vad-energy-mean-scale.")
@click.option("--webrtc-mode", type=click.IntRange(0, 3), default=None, help="WebRTC aggressiveness.")
@_jobs_option
@_quiet_option
def trim(manifest: Path, out: Path, backend: str, margin, energy_threshold, energy_mean_scale,
         webrtc_mode, jobs: int, quiet: bool) -> None:
    """Trim leading/trailing silence: MANIFEST -> OUT/segments.jsonl.

    Inputs in which no speech is found are rejected with the reason, never
    emptied silently.
    """
    from .trim import trim_manifest
    from .vad import VadConfig

    overrides = {"backend": backend, "margin_s": margin, "energy_threshold": energy_threshold,
                 "energy_mean_scale": energy_mean_scale, "webrtc_mode": webrtc_mode}
    try:
        cfg = VadConfig.from_dict({**VadConfig().to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
        summary = trim_manifest(manifest, out, cfg, jobs=jobs, show_progress=not quiet)
    except (ValueError, OSError) as e:
        _fail(e)
    _finish(summary, out)


@main.command(context_settings=CONTEXT)
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON FbankConfig (see `pvae-data default-config fbank`); flags override it.")
@click.option("--sample-rate", type=int, default=None, help="Audio is resampled to this rate [default: 16000].")
@click.option("--num-mel-bins", type=int, default=None, help="[default: 80]")
@click.option("--dither", type=float, default=None, help="Kaldi dither (int16 scale) [default: 0, deterministic].")
@click.option("--snip-edges/--no-snip-edges", default=None, help="Kaldi --snip-edges [default: snip].")
@click.option("--chunk-size", type=click.IntRange(1), default=500, help="Utterances per ark (unit of resume).")
@click.option("--overwrite", is_flag=True, help="Recompute even if OUT holds features of another config.")
@_jobs_option
@_quiet_option
def fbank(manifest: Path, out: Path, config_file, sample_rate, num_mel_bins, dither, snip_edges,
          chunk_size: int, overwrite: bool, jobs: int, quiet: bool) -> None:
    """Kaldi-exact log-Mel filter banks: MANIFEST -> OUT/feats.scp + features.jsonl.

    Reads utterance or segment manifests (start/end honoured), writes Kaldi
    ark/scp, per-speaker and global CMVN stats, and the config. Resumes: a rerun
    keeps finished chunks.
    """
    from .features import FbankStageConfig, StageConfigMismatch, compute_features
    from .fbank import FbankConfig

    try:
        base = json.loads(config_file.read_text()) if config_file else {}
        overrides = {"sample_rate": sample_rate, "num_mel_bins": num_mel_bins, "dither": dither,
                     "snip_edges": snip_edges}
        fb = FbankConfig.from_dict({**FbankConfig().to_dict(), **base,
                                    **{k: v for k, v in overrides.items() if v is not None}})
        summary = compute_features(manifest, out, FbankStageConfig(fbank=fb, chunk_size=chunk_size),
                                   jobs=jobs, show_progress=not quiet, overwrite=overwrite)
    except (ValueError, OSError, StageConfigMismatch) as e:
        _fail(e)
    _finish(summary, out)


@main.command("default-config", context_settings=CONTEXT)
@click.argument("what", type=click.Choice(["fbank", "vad"]))
def default_config(what: str) -> None:
    """Print a stage's default config as JSON (edit it and pass --config)."""
    if what == "fbank":
        from .fbank import FbankConfig

        d = FbankConfig().to_dict()
    else:
        from .vad import VadConfig

        d = VadConfig().to_dict()
    json.dump(d, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

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


def _run_stage(out: Path, call, errors: tuple = ()) -> None:
    """Run a stage; input errors become one-line messages; print the summary, set the exit code."""
    try:
        summary = call()
    except (ValueError, OSError, KeyError, *errors) as e:  # bad input, missing files, bad configs
        _fail(e)
    _finish(summary, out)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="pvae-data")
def main() -> None:
    """Spoken-digit data pipeline: prepare -> trim -> fbank -> shard.

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

    _run_stage(out, lambda: prepare_corpus(PrepareConfig(corpus=corpus, source=str(source)), out, jobs=jobs,
                                           progress=not quiet))


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

    def run():
        cfg = VadConfig.from_dict({**VadConfig().to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
        return trim_manifest(manifest, out, cfg, jobs=jobs, show_progress=not quiet)

    _run_stage(out, run)


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

    def run():
        base = json.loads(config_file.read_text()) if config_file else {}
        overrides = {"sample_rate": sample_rate, "num_mel_bins": num_mel_bins, "dither": dither,
                     "snip_edges": snip_edges}
        fb = FbankConfig.from_dict({**FbankConfig().to_dict(), **base,
                                    **{k: v for k, v in overrides.items() if v is not None}})
        return compute_features(manifest, out, FbankStageConfig(fbank=fb, chunk_size=chunk_size),
                                jobs=jobs, show_progress=not quiet, overwrite=overwrite)

    _run_stage(out, run, errors=(StageConfigMismatch,))


def _shard_options(f):
    opts = [
        click.option("--max-items", type=click.IntRange(0), default=0, help="Items per shard (0 = no limit)."),
        click.option("--max-mb", type=float, default=256.0, help="Payload megabytes per shard."),
        click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", help="Audio feature storage type."),
        click.option("--compression", type=click.Choice(["none", "gzip", "lzf"]), default="none",
                     help="none keeps feats contiguous (memory-mapped reads); gzip/lzf chunk it."),
        click.option("--shuffle/--no-shuffle", default=True, help="Seeded permutation of items before packing."),
        click.option("--seed", type=int, default=0),
    ]
    for o in reversed(opts):
        f = o(f)
    return _quiet_option(f)


def _shard_config(max_items, max_mb, dtype, compression, shuffle, seed):
    from .shards import ShardConfig

    return ShardConfig(max_items=max_items, max_bytes=int(max_mb * 2**20), dtype=dtype,
                       compression=compression, shuffle=shuffle, seed=seed)


@main.group(context_settings=CONTEXT)
def shard() -> None:
    """Pack features or images into HDF5 shards + index.json (see docs/shards.md).

    Shards are written under a temporary name and renamed; index.json is
    written last. A rerun verifies and keeps finished shards.
    """


@shard.command("audio", context_settings=CONTEXT)
@click.argument("features_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@_shard_options
def shard_audio_cmd(features_dir: Path, out: Path, quiet: bool, **kw) -> None:
    """Output of `pvae-data fbank` (FEATURES_DIR) -> audio shards in OUT."""
    from .shards import shard_audio

    _run_stage(out, lambda: shard_audio(features_dir, out, _shard_config(**kw), show_progress=not quiet))


@shard.command("kaldi", context_settings=CONTEXT)
@click.argument("feats_scp", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--utt2spk", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Kaldi utt2spk.")
@click.option("--split", default=None, help="Split name for every utterance (else from LABELS JSONL, else 'all').")
@_shard_options
def shard_kaldi_cmd(feats_scp: Path, labels: Path, out: Path, utt2spk, split, quiet: bool, **kw) -> None:
    """Any Kaldi FEATS_SCP (e.g. compute-fbank-feats output) + LABELS -> audio shards.

    LABELS is a Kaldi `text` file (utt word) or JSONL with id and label or
    transcript (optional speaker, split).
    """
    from .shards import shard_kaldi

    _run_stage(out, lambda: shard_kaldi(feats_scp, labels, out, _shard_config(**kw), utt2spk=utt2spk,
                                        split=split, show_progress=not quiet))


@shard.command("images", context_settings=CONTEXT)
@click.argument("mnist_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@_shard_options
def shard_images_cmd(mnist_dir: Path, out: Path, quiet: bool, **kw) -> None:
    """The four MNIST IDX files in MNIST_DIR (gzipped or not) -> image shards in OUT."""
    from .shards import shard_mnist  # IDX errors are ValueErrors

    _run_stage(out, lambda: shard_mnist(mnist_dir, out, _shard_config(**kw), show_progress=not quiet))


@main.command(context_settings=CONTEXT)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(directory: Path, as_json: bool) -> None:
    """Counts per split, label and speaker; frames, hours and bytes of a shard set."""
    from .shard_tools import shard_info

    try:
        d = shard_info(directory)
    except (OSError, ValueError, KeyError) as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(f"{directory}: {d['modality']} shards, schema {d['schema_version']}, "
               f"{d['shards']} files, {d['bytes'] / 2**20:.1f} MiB")
    for name, sp in d["splits"].items():
        line = f"  {name}: {sp['items']} items"
        if sp["frames"]:
            line += f", {sp['frames']} frames ({sp['hours']} h), {len(sp['speakers'])} speakers"
        click.echo(line)
        click.echo("    labels: " + " ".join(f"{k}:{v}" for k, v in sp["labels"].items()))
        if sp["speakers"]:
            click.echo("    speakers: " + " ".join(f"{k}:{v}" for k, v in sp["speakers"].items()))


@main.command(context_settings=CONTEXT)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def validate(directory: Path) -> None:
    """Check schema, checksums, every record, label ranges; non-zero exit on any problem."""
    from .shard_tools import validate_shards

    problems = validate_shards(directory)
    for path, reason in problems:
        click.echo(f"{path}: {reason}", err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {directory}")
    click.echo(f"{directory}: OK")


@main.command(context_settings=CONTEXT)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["kaldi"]), default="kaldi")
@click.option("--split", default=None, help="Export one split only.")
def export(directory: Path, out: Path, fmt: str, split) -> None:
    """Audio shards back to Kaldi ark/scp (+ utt2label, utt2spk) in OUT."""
    from .shard_tools import export_kaldi

    try:
        n = export_kaldi(directory, out, split)
    except (OSError, ValueError) as e:
        _fail(e)
    click.echo(f"export: wrote {n} utterances to {out}")


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

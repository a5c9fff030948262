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


def _job_array_options(f):
    """--array-size/--array-index: one member of a cluster job array (see docs/scaling.md).  The
    former names --num-jobs/--job-index still work (lhotse and Kaldi use "jobs" for parallel
    workers, which is -j here)."""
    f = click.option("--array-index", "--job-index", "job_index", type=click.IntRange(0), default=None,
                     help="This member's 0-based index [default with --array-size > 1: $SLURM_ARRAY_TASK_ID].")(f)
    return click.option("--array-size", "--num-jobs", "num_jobs", type=click.IntRange(1), default=1,
                        help="Job-array size N: this run does only its share of the chunks (chunk % N == "
                             "job index) and writes no merged outputs; a run without these options "
                             "afterwards merges.")(f)


def _job_slice(num_jobs: int, job_index: int | None):
    """The JobSlice of the options; the index falls back to $SLURM_ARRAY_TASK_ID for arrays."""
    import os

    from .stage import JobSlice

    if num_jobs > 1 and job_index is None:
        env = os.environ.get("SLURM_ARRAY_TASK_ID", "")
        if not env.isdigit():
            raise click.UsageError("--array-size > 1 needs --array-index (or $SLURM_ARRAY_TASK_ID)")
        job_index = int(env)
    try:
        return JobSlice(num_jobs, job_index or 0)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


# What each stage writes as its manifest: a stage given the previous stage's *directory* (as Kaldi
# passes data dirs) reads the first of these it finds there.
STAGE_MANIFESTS = ("segments.jsonl", "utterances.jsonl", "segments.jsonl.gz", "utterances.jsonl.gz")


def _manifest_path(ctx, param, value: Path) -> Path:
    """A manifest file, or a stage's output directory holding one (click callback)."""
    if value is None or not value.is_dir():
        return value
    for name in STAGE_MANIFESTS:
        if (value / name).is_file():
            return value / name
    raise click.BadParameter(f"{value} is a directory without a manifest ({', '.join(STAGE_MANIFESTS[:2])})",
                             param=param)


def _manifest_argument(f):
    return click.argument("manifest", type=click.Path(exists=True, path_type=Path), callback=_manifest_path)(f)


def _config_option(cls_name: str, what: str):
    """``--config FILE``: a stage's config as YAML or JSON (``pvae-data default-config WHAT``
    prints one), and ``--set KEY=VALUE`` (dotted for nested fields: ``--set vad.aggressiveness=3``)
    on top of it; flags given on the command line override both.  ``pvae-model`` reads its
    ``--config``/``--set`` through the same helpers (``pvae_data.config``)."""

    def keep_sets(ctx, param, value):
        ctx.meta["config_sets"] = value
        return value

    def decorate(f):
        f = click.option("--set", "sets", multiple=True, expose_value=False, callback=keep_sets,
                         help="KEY=VALUE on top of --config (repeatable; dotted for nested fields).")(f)
        return click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                            help=f"YAML/JSON {cls_name} (see `pvae-data default-config {what}`); flags override it.")(f)

    return decorate


def _config_dict(path: Path | None) -> dict:
    """A stage's config: its ``--config`` file (YAML or JSON; {} when none is given) with the
    command's ``--set`` overrides applied."""
    from .config import apply_overrides, parse_set, read_config_file

    try:
        d = read_config_file(path)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--config") from None
    ctx = click.get_current_context(silent=True)
    try:
        sets = parse_set(ctx.meta.get("config_sets", ()) if ctx else ())
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("--set: "), param_hint="--set") from None
    return apply_overrides(d, sets)


def _finish(summary, out: Path | None = None) -> None:
    """Print the summary line; exit non-zero when there was input but nothing was kept."""
    if "job" in summary.extra:  # one member of a job array
        if summary.total == 0:
            click.echo(f"{summary.stage}: job {summary.extra['job']}: no chunk to do (fewer chunks than jobs)")
            return
        click.echo(summary.line())
        click.echo("  merge: once every member has finished, rerun the same command without --array-size/--array-index")
        if summary.kept == 0:
            raise click.ClickException("nothing succeeded: every input of this member was rejected")
        return
    click.echo(summary.line())
    if out is not None and summary.rejected:
        click.echo(f"  rejected inputs and reasons: {out / 'rejected.jsonl'}")
    if summary.total == 0:
        raise click.ClickException("no input found")
    if summary.kept == 0:
        raise click.ClickException("nothing succeeded: every input was rejected")


def _fail(e: Exception) -> None:
    raise click.ClickException(str(e)) from None


def _run_stage(out: Path, call, errors: tuple = (), job=None) -> None:
    """Run a stage holding the lock on OUT (shared between the members of a job array, which
    write disjoint chunks; exclusive otherwise); input errors become one-line messages; print the
    summary, set the exit code."""
    from .stage import StageLocked, lock_output

    name = click.get_current_context().command_path.split()[-1]
    fresh = not out.exists()
    try:
        with lock_output(out, shared=bool(job is not None and job.is_member)):
            summary = call()
    except (ValueError, OSError, KeyError, StageLocked, *errors) as e:  # bad input, missing files, bad configs
        left = {p.name for p in out.iterdir()} if out.is_dir() else set()
        if fresh and left <= {".stage.lock"}:  # refused before anything was made: leave nothing behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        else:
            _stage_log(out, name, f"failed: {e}")
        _fail(e)
    _stage_log(out, name, summary.line())
    _finish(summary, out)


def _stage_log(out: Path, name: str, outcome: str) -> None:
    """Append the command line and its outcome, time-stamped, to ``OUT/<stage>.log``: a data
    directory keeps the history of what made it, however the terminal output was redirected."""
    import shlex
    import sys
    import time

    try:
        if not out.is_dir():
            return
        with open(out / f"{name}.log", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(['pvae-data', *sys.argv[1:]])}\n"
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')} {outcome}\n")
    except OSError:
        pass


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="pvae-data")
def main() -> None:
    """Spoken-digit data pipeline: prepare -> trim -> fbank -> shard.

    Every stage reads and writes JSONL manifests, accounts for every input
    (kept + rejected = total) and can be rerun safely.
    """


@main.command(context_settings=CONTEXT)
@click.argument("corpus", type=click.Choice(["fsdd", "tidigits", "list", "kaldi"]))
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@_config_option("PrepareConfig", "prepare")
@click.option("--truncated", type=click.Choice(["reject", "keep"]), default=None,
              help="Files whose header declares more samples than they hold: reject, or keep with a note "
                   "[default: reject].")
@click.option("--test-speakers", default=None, metavar="A,B",
              help="Speaker-disjoint split: every utterance of these speakers is test (held out), the "
                   "others keep their split [default: none].")
@click.option("--allow-commands", is_flag=True, default=None,
              help="kaldi: run the commands of wav.scp entries ending in '|' (they run with your "
                   "permissions: only for data dirs you trust). Without it they are rejected.")
@_jobs_option
@_quiet_option
def prepare(corpus: str, source: Path, out: Path, config_file, truncated, test_speakers, allow_commands,
            jobs: int, quiet: bool) -> None:
    """Corpus -> utterance manifest OUT/utterances.jsonl (+ rejected.jsonl).

    CORPUS is fsdd (a checkout of free-spoken-digit-dataset), tidigits (LDC
    layout with NIST SPHERE files), list (a CSV/JSONL with path, transcript,
    speaker and optional split) or kaldi (a data dir: wav.scp with paths or
    `cmd |` entries, text, utt2spk, optional segments; split from the dir name).
    Every audio file is opened and checked; every id is checked before it is
    used (no whitespace, no path separator, not '..'). A `cmd |` entry runs
    only with --allow-commands.
    """
    from .stages.prepare import PrepareConfig, prepare_corpus

    def run():
        d = {k: v for k, v in _config_dict(config_file).items() if k not in ("corpus", "source")}
        if truncated is not None:
            d["truncated"] = truncated
        if test_speakers is not None:
            d["test_speakers"] = test_speakers
        if allow_commands:
            d["allow_commands"] = True
        return prepare_corpus(PrepareConfig.from_dict({"corpus": corpus, "source": str(source), **d}),
                              out, jobs=jobs, progress=not quiet)

    _run_stage(out, run)


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
         webrtc_mode, chunk_size: int, num_jobs: int, job_index, jobs: int, quiet: bool) -> None:
    """Trim leading/trailing silence: MANIFEST -> OUT/segments.jsonl.

    Inputs in which no speech is found are rejected with the reason, never
    emptied silently. With --array-size N --array-index I, trims only chunk
    c % N == I into OUT/parts/; a plain run afterwards merges.
    """
    from .stages.trim import trim_manifest
    from .vad import VadConfig

    job = _job_slice(num_jobs, job_index)
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
@_quiet_option
def perturb(manifest: Path, out: Path, config_file, speed, vtlp, splits, quiet: bool) -> None:
    """Speed / VTLN-warp perturbed training copies: MANIFEST -> OUT/segments.jsonl.

    As Kaldi's perturb_data_dir_speed.sh: copies get ids and speakers prefixed
    sp0.9- (vtlp1.1- for a warp) and a speed / vtln_warp field the fbank stage
    applies. The test split is never perturbed. No audio is written.
    """
    from .stages.perturb import PerturbConfig, perturb_manifest

    def run():
        d = {**PerturbConfig().to_dict(), **_config_dict(config_file)}
        for k, v in (("speed", speed), ("vtlp", vtlp), ("splits", splits)):
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
          high_freq, chunk_size: int, overwrite: bool, num_jobs: int, job_index, jobs: int, quiet: bool) -> None:
    """Kaldi-exact log-Mel filter banks: MANIFEST -> OUT/feats.scp + features.jsonl.

    Reads utterance or segment manifests (start/end honoured), writes Kaldi
    ark/scp, per-speaker and global CMVN stats, and the config. Resumes: a rerun
    keeps finished chunks. With --array-size N --array-index I, computes only chunk
    c % N == I; a plain run afterwards merges.
    """
    from .stages.fbank import FbankStageConfig, StageConfigMismatch, compute_features
    from .fbank import FbankConfig

    job = _job_slice(num_jobs, job_index)

    def run():
        base = _config_dict(config_file)
        overrides = {"sample_rate": sample_rate, "num_mel_bins": num_mel_bins, "dither": dither,
                     "snip_edges": snip_edges, "low_freq": low_freq, "high_freq": high_freq}
        fb = FbankConfig.from_dict({**FbankConfig().to_dict(), **base,
                                    **{k: v for k, v in overrides.items() if v is not None}})
        return compute_features(manifest, out, FbankStageConfig(fbank=fb, chunk_size=chunk_size),
                                jobs=jobs, show_progress=not quiet, overwrite=overwrite, job=job)

    _run_stage(out, run, errors=(StageConfigMismatch,), job=job)


def _shard_options(f):
    opts = [
        _config_option("ShardConfig", "shard"),
        click.option("--max-items", type=click.IntRange(0), default=None, help="Items per shard (0 = no limit) [default: 0]."),
        click.option("--max-mb", type=float, default=None, help="Payload megabytes per shard [default: 256]."),
        click.option("--dtype", type=click.Choice(["float32", "float16"]), default=None,
                     help="Feature storage type (audio shards; images are uint8) [default: float32]."),
        click.option("--compression", type=click.Choice(["none", "gzip", "lzf"]), default=None,
                     help="none keeps feats contiguous (memory-mapped reads); gzip/lzf chunk it [default: none]."),
        click.option("--shuffle/--no-shuffle", default=None, help="Seeded permutation of items before packing [default: on]."),
        click.option("--seed", type=int, default=None, help="[default: 0]"),
    ]
    for o in reversed(opts):
        f = o(f)
    return _quiet_option(f)


def _shard_config(config_file=None, max_items=None, max_mb=None, dtype=None, compression=None, shuffle=None, seed=None):
    """ShardConfig from the defaults, then the --config file, then the flags given."""
    from .shards.writer import ShardConfig

    flags = {"max_items": max_items, "max_bytes": None if max_mb is None else int(max_mb * 2**20), "dtype": dtype,
             "compression": compression, "shuffle": shuffle, "seed": seed}
    return ShardConfig.from_dict({**ShardConfig().to_dict(), **_config_dict(config_file),
                                  **{k: v for k, v in flags.items() if v is not None}})


@main.group(context_settings=CONTEXT)
def shard() -> None:
    """Pack features or images into HDF5 shards + index.json (see docs/shards.md).

    Shards are written under a temporary name and renamed; index.json is
    written last. A rerun verifies and keeps finished shards.
    """


@shard.command("audio", context_settings=CONTEXT)
@click.argument("features_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--no-cmvn", is_flag=True, help="Shard features that have no global CMVN statistics (not advised).")
@_shard_options
def shard_audio_cmd(features_dir: Path, out: Path, quiet: bool, no_cmvn: bool, **kw) -> None:
    """Output of `pvae-data fbank` (FEATURES_DIR) -> audio shards in OUT."""
    from .stages.shard import shard_audio

    _run_stage(out, lambda: shard_audio(features_dir, out, _shard_config(**kw), show_progress=not quiet,
                                        allow_no_cmvn=no_cmvn))


_allow_commands_option = click.option(
    "--allow-commands", is_flag=True,
    help="Run the commands of `cmd |` entries in feats.scp (they run with your permissions: only for "
         "data you trust). Without it such entries are refused.")


@shard.command("kaldi", context_settings=CONTEXT)
@click.argument("feats_scp", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("labels", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--utt2spk", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Kaldi utt2spk.")
@click.option("--split", default=None, help="Split name for every utterance (else from LABELS JSONL, else 'all').")
@click.option("--cmvn-split", default="train", show_default=True, help="Split the global CMVN statistics come from.")
@click.option("--no-cmvn", "no_cmvn", is_flag=True, help="Shard even when that split has no frames (no CMVN).")
@_allow_commands_option
@_shard_options
def shard_kaldi_cmd(feats_scp: Path, labels: Path, out: Path, utt2spk, split, cmvn_split: str, no_cmvn: bool,
                    allow_commands: bool, quiet: bool, **kw) -> None:
    """Any Kaldi FEATS_SCP (e.g. compute-fbank-feats output) + LABELS -> audio shards.

    LABELS is a Kaldi `text` file (utt word) or JSONL with id and label or
    transcript (optional speaker, split).
    """
    from .stages.shard import shard_kaldi

    _run_stage(out, lambda: shard_kaldi(feats_scp, labels, out, _shard_config(**kw), utt2spk=utt2spk,
                                        split=split, show_progress=not quiet, cmvn_split=cmvn_split,
                                        allow_no_cmvn=no_cmvn, allow_commands=allow_commands))


@shard.command("kaldi-dirs", context_settings=CONTEXT)
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("data_dirs", nargs=-1, required=True, metavar="SPLIT=DATA_DIR...")
@click.option("--cmvn-split", default="train", show_default=True, help="Split the global CMVN statistics come from.")
@click.option("--no-cmvn", "no_cmvn", is_flag=True, help="Shard even when that split has no frames (no CMVN).")
@_allow_commands_option
@_shard_options
def shard_kaldi_dirs_cmd(out: Path, data_dirs, cmvn_split: str, no_cmvn: bool, allow_commands: bool, quiet: bool,
                         **kw) -> None:
    """Kaldi data dirs (feats.scp, text, utt2spk), one per split, -> one audio shard set.

    e.g. `pvae-data shard kaldi-dirs exp/shards/audio train=data/train test=data/test`;
    global CMVN statistics are computed over --cmvn-split, per-speaker ones over all.
    """
    from .stages.shard import shard_kaldi_dirs

    pairs = []
    for item in data_dirs:
        sp, sep, d = item.partition("=")
        if not sep or not sp or not Path(d).is_dir():
            raise click.BadParameter(f"expected SPLIT=DATA_DIR with an existing directory, got {item!r}",
                                     param_hint="SPLIT=DATA_DIR")
        pairs.append((sp, Path(d)))
    _run_stage(out, lambda: shard_kaldi_dirs(pairs, out, _shard_config(**kw), cmvn_split=cmvn_split,
                                             allow_no_cmvn=no_cmvn, show_progress=not quiet,
                                             allow_commands=allow_commands))


@shard.command("images", context_settings=CONTEXT)
@click.argument("mnist_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@_shard_options
def shard_images_cmd(mnist_dir: Path, out: Path, quiet: bool, **kw) -> None:
    """The four MNIST IDX files in MNIST_DIR (gzipped or not) -> image shards in OUT."""
    from .stages.shard import shard_mnist  # IDX errors are ValueErrors

    _run_stage(out, lambda: shard_mnist(mnist_dir, out, _shard_config(**kw), show_progress=not quiet))


@main.command(context_settings=CONTEXT)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(directory: Path, as_json: bool) -> None:
    """Counts per split, label and speaker; frames, hours and bytes of a shard set."""
    from .shards.tools import shard_info

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
    v = d.get("voices")
    if v:
        click.echo(f"  voices: training hears {', '.join(v.get('train') or []) or 'none'}"
                   + (f" ({v['perturbed']} perturbed copies)" if v.get("perturbed") else "")
                   + f"; held out: {', '.join(v.get('held_out') or []) or 'none'}")


@main.command(context_settings=CONTEXT)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def validate(directory: Path) -> None:
    """Check schema, checksums, every record, label ranges; non-zero exit on any problem."""
    from .shards.tools import validate_shards

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
@click.option("--split", default=None, help="Export one split only (the others' directories are left as they are).")
def export(directory: Path, out: Path, fmt: str, split) -> None:
    """An fbank stage directory or audio shards -> a Kaldi data dir per split, OUT/<split>/.

    From an fbank directory: wav.scp + segments + reco2dur (the source audio), text, utt2spk,
    spk2utt, feats.scp, cmvn.scp. From shards: feats.scp/.ark, cmvn.scp/.ark, utt2spk,
    spk2utt, text, utt2label (no audio). LC_ALL=C sorted, utterance ids prefixed with their speaker.
    """
    from .kaldi_io import export_fbank_data_dirs
    from .shards.tools import export_kaldi

    try:
        if (directory / "features.jsonl").is_file():
            n = export_fbank_data_dirs(directory, out, split)
        else:
            n = export_kaldi(directory, out, split)
    except (OSError, ValueError) as e:
        _fail(e)
    click.echo(f"export: wrote {n} utterances to {out}")


@main.command(context_settings=CONTEXT)
@click.argument("dataset", type=click.Choice(["fsdd", "mnist"]))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--url", "urls", multiple=True, metavar="URL",
              help="fsdd: archive URL; mnist: base URL the file names are appended to. Repeat for "
                   "mirrors tried in order [default: $PVAE_FSDD_URL / $PVAE_MNIST_URL, else the official locations].")
@click.option("--checksums", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="sha256sum file replacing the shipped list (pvae_data/checksums/): the files to install.")
@click.option("--retries", type=click.IntRange(0), default=3, help="Retries per URL after a failed transfer.")
@click.option("--backoff", type=click.FloatRange(0), default=1.0, envvar="PVAE_DOWNLOAD_BACKOFF", show_envvar=True, help="Seconds before the first retry; doubles each time.")
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, help="Seconds without data before a transfer counts as failed.")
@_quiet_option
def download(dataset: str, dest: Path, urls: tuple, checksums, retries: int, backoff: float, timeout: float,
             quiet: bool) -> None:
    """Fetch DATASET into DEST/DATASET, verified against shipped sha256 lists.

    fsdd: the v1.0.10 archive -> DEST/fsdd/recordings/*.wav (all 3,000 must
    match); mnist: the four IDX .gz files -> DEST/mnist (uncompressed content
    checked). Interrupted transfers resume (HTTP Range); *.completed markers
    make a rerun skip finished work without any network request. A file that
    fails verification is listed with the reason and the exit status is 1.
    """
    from .stages.download import DownloadError, DownloadOptions, download as run_download

    opts = DownloadOptions(retries=retries, backoff_s=backoff, timeout_s=timeout, show_progress=not quiet)
    try:
        report = run_download(dataset, dest, urls=list(urls) or None, checksums=checksums, opts=opts)
    except (DownloadError, ValueError, OSError) as e:
        _fail(e)
    for note in report.notes:
        click.echo(note, err=True)
    click.echo(report.line())
    for name, reason in report.rejected:
        click.echo(f"{name}: {reason}", err=True)
    if report.rejected:
        raise click.ClickException(f"{len(report.rejected)} file(s) failed verification; nothing marked complete "
                                   "for them, rerun to fetch them again")


@main.group(context_settings=CONTEXT)
def lhotse() -> None:
    """lhotse manifests both ways (pip install 'pvae[lhotse]')."""


@lhotse.command("import", context_settings=CONTEXT)
@click.argument("manifests", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--split", default=None, help="Split name for every utterance [default: the supervision's custom 'split'].")
def lhotse_import(manifests, out: Path, split) -> None:
    """CUTS, or RECORDINGS SUPERVISIONS (.jsonl[.gz]) -> OUT/utterances.jsonl (start/end kept).

    Then trim, segment or fbank OUT as after `prepare`.
    """
    from .lhotse_io import import_lhotse

    _run_stage(out, lambda: import_lhotse(list(manifests), out, split=split))


@lhotse.command("export", context_settings=CONTEXT)
@click.argument("fbank_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
def lhotse_export(fbank_dir: Path, out: Path) -> None:
    """An fbank stage directory -> OUT/cuts.jsonl.gz + OUT/feats.h5: cut.load_features() returns
    our matrices exactly (numpy_hdf5 storage), each cut with its recording (resampled and
    speed-perturbed as the features were) and supervision; lhotse.qa.validate passes."""
    from .lhotse_io import export_lhotse

    _run_stage(out, lambda: export_lhotse(fbank_dir, out))


@main.command("default-config", context_settings=CONTEXT)
@click.argument("what", type=click.Choice(["prepare", "fbank", "vad", "trim", "perturb", "align-train", "segment",
                                           "shard"]))
def default_config(what: str) -> None:
    """Print a stage's default config as YAML (edit it and pass --config; JSON is read too).

    fbank: `fbank --config`; vad or trim: `trim --config`; align-train:
    `align-train --config`; segment: `segment --config`. Training configs:
    `pvae-model default-config`.
    """
    import yaml

    if what == "fbank":
        from .fbank import FbankConfig

        d = FbankConfig().to_dict()
    elif what == "perturb":
        from .stages.perturb import PerturbConfig

        d = PerturbConfig().to_dict()
    elif what == "align-train":
        from .align.train import AlignTrainConfig

        d = AlignTrainConfig().to_dict()
    elif what == "segment":
        from .stages.segment import SegmentConfig

        d = SegmentConfig().to_dict()
    elif what == "shard":
        from .shards.writer import ShardConfig

        d = ShardConfig().to_dict()
    elif what == "prepare":
        from .stages.prepare import PrepareConfig

        d = {k: v for k, v in PrepareConfig("fsdd", ".").to_dict().items() if k not in ("corpus", "source")}
    else:
        from .vad import VadConfig

        d = VadConfig().to_dict()
    sys.stdout.write(yaml.safe_dump(d, sort_keys=False))



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
    from .align.train import AlignTrainConfig
    from .stages.align_train import train_aligner

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
@click.option("--recognition-check/--no-recognition-check", default=True, help="Run the free-recognition mismatch check.")
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
            chunk_size: int, num_jobs: int, job_index, jobs: int, quiet: bool) -> None:
    """Cut connected-digit utterances into one segment per digit: MANIFEST -> OUT/segments.jsonl.

    Word spans come from the forced aligner (or --ctm), then each is trimmed
    by the energy VAD. Single-word utterances are trimmed as `trim` does, and
    their transcript is checked by the aligner when there is one. An utterance
    whose alignment fails is rejected whole, with the reason. Finished chunks
    are kept in OUT/parts: a rerun resumes. With --array-size N --array-index I,
    segments only chunk c % N == I (the aligner must exist: --model or
    OUT/model); a plain run afterwards merges.
    """
    from .stages.segment import SegmentConfig, segment_manifest
    from .vad import VadConfig

    if model_dir is not None and ctm is not None:
        _fail(ValueError("give --model or --ctm, not both"))
    job = _job_slice(num_jobs, job_index)

    def run():
        from dataclasses import replace

        base = SegmentConfig.from_dict(_config_dict(config_file))
        align = {k: v for k, v in (("min_score", min_score), ("max_deficit", max_deficit),
                                   ("max_word_deficit", max_word_deficit)) if v is not None}
        cfg = replace(
            base,
            align=replace(base.align, check_recognition=recognition_check and base.align.check_recognition, **align),
            vad=VadConfig.from_dict({**base.vad.to_dict(), **({"margin_s": margin} if margin is not None else {})}),
            slack_s=base.slack_s if slack is None else slack,
            ref_min_snr_db=base.ref_min_snr_db if ref_min_snr_db is None else ref_min_snr_db,
            junction_search_s=base.junction_search_s if junction_search is None else junction_search,
            adapt=(base.adapt if speaker_adapt is None or (speaker_adapt and base.adapt.iterations)
                   else replace(base.adapt, iterations=SegmentConfig().adapt.iterations if speaker_adapt else 0)))
        return segment_manifest(manifest, out, model=model_dir, cfg=cfg, jobs=jobs, ctm=ctm, export_ctm=export_ctm,
                                write_audio=write_audio, show_progress=not quiet, chunk_size=chunk_size, job=job)

    _run_stage(out, run, job=job)

if __name__ == "__main__":
    main()

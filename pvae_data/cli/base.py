"""What every ``pvae-data`` command shares: the ``main`` group, option decorators, config
merging, and ``_run_stage`` (one-line errors, the summary line, the stage log)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__

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
    return click.option("--array-size", "--num-jobs", "array_size", type=click.IntRange(1), default=1,
                        help="Job-array size N: this run does only its share of the chunks (chunk % N == "
                             "job index) and writes no merged outputs; a run without these options "
                             "afterwards merges.")(f)


def _job_slice(array_size: int, job_index: int | None):
    """The JobSlice of the options; the index falls back to $SLURM_ARRAY_TASK_ID for arrays."""
    import os

    from ..stage import JobSlice

    if array_size > 1 and job_index is None:
        env = os.environ.get("SLURM_ARRAY_TASK_ID", "")
        if not env.isdigit():
            raise click.UsageError("--array-size > 1 needs --array-index (or $SLURM_ARRAY_TASK_ID)")
        job_index = int(env)
    try:
        return JobSlice(array_size, job_index or 0)
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
    command's ``--set`` overrides applied; the command then applies its flags on top
    (``pvae_data.config.merge_config``'s rule)."""
    from ..config import merge_config, parse_set

    ctx = click.get_current_context(silent=True)
    try:
        sets = parse_set(ctx.meta.get("config_sets", ()) if ctx else ())
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("--set: "), param_hint="--set") from None
    try:
        return merge_config(path, sets)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--config") from None


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
    from ..stage import StageLocked, lock_output

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

"""``pvae-data``: corpora in: `prepare`, `download`, `lhotse import|export`."""

from __future__ import annotations

from pathlib import Path

import click

from .base import CONTEXT, _config_dict, _config_option, _fail, _jobs_option, _quiet_option, _run_stage, main


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
    from ..stages.prepare import PrepareConfig, prepare_corpus

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
    from ..stages.download import DownloadError, DownloadOptions, download as run_download

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
    from ..lhotse_io import import_lhotse

    _run_stage(out, lambda: import_lhotse(list(manifests), out, split=split))


@lhotse.command("export", context_settings=CONTEXT)
@click.argument("fbank_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
def lhotse_export(fbank_dir: Path, out: Path) -> None:
    """An fbank stage directory -> OUT/cuts.jsonl.gz + OUT/feats.h5: cut.load_features() returns
    our matrices exactly (numpy_hdf5 storage), each cut with its recording (resampled and
    speed-perturbed as the features were) and supervision; lhotse.qa.validate passes."""
    from ..lhotse_io import export_lhotse

    _run_stage(out, lambda: export_lhotse(fbank_dir, out))

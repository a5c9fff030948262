"""``pvae-data``: features to shards and back out: `shard audio|kaldi|kaldi-dirs|images`, `info`, `validate`, `export`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .base import CONTEXT, _config_dict, _config_option, _fail, _quiet_option, _run_stage, main


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
    from ..shards.writer import ShardConfig

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
    from ..stages.shard import shard_audio

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
    from ..stages.shard import shard_kaldi

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
    from ..stages.shard import shard_kaldi_dirs

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
    from ..stages.shard import shard_mnist  # IDX errors are ValueErrors

    _run_stage(out, lambda: shard_mnist(mnist_dir, out, _shard_config(**kw), show_progress=not quiet))


@main.command(context_settings=CONTEXT)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(directory: Path, as_json: bool) -> None:
    """Counts per split, label and speaker; frames, hours and bytes of a shard set."""
    from ..shards.tools import shard_info

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
    from ..shards.tools import validate_shards

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
    from ..kaldi_io import export_fbank_data_dirs
    from ..shards.tools import export_kaldi

    try:
        if (directory / "features.jsonl").is_file():
            n = export_fbank_data_dirs(directory, out, split)
        else:
            n = export_kaldi(directory, out, split)
    except (OSError, ValueError) as e:
        _fail(e)
    click.echo(f"export: wrote {n} utterances to {out}")

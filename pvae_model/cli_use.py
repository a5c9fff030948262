"""``pvae-model`` commands that use a trained model (generate, export, serve) and train the
vocoder it speaks with; registered on the group in :mod:`pvae_model.cli`."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import CONTEXT, EXISTING_DIR, _command_errors, _parse_set, run_options

COMMANDS = []


def command(f):
    COMMANDS.append(f)
    return f


@command
@click.command(context_settings=CONTEXT)
@click.option("--segments", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A pvae-data manifest of the corpus (the trim stage's segments.jsonl).")
@click.option("--audio-shards", type=EXISTING_DIR, default=None,
              help="The audio shards the models train on: their FBank configuration is the vocoder's input.")
@run_options("Vocoder run", "VocoderTrainConfig", "max_minutes=20")
def vocoder(segments, audio_shards, out: Path, config_file, epochs, resume: bool, sets, quiet: bool) -> None:
    """Train a vocoder (FBank -> STFT magnitude and phase -> waveform) on a corpus's training split.

    Then `evaluate --vocoder OUT`, `generate --vocoder OUT` and `export --vocoder OUT` speak with it
    instead of Griffin-Lim.
    """
    from pvae_data.config import merge_config
    from .run import load_fbank_config

    from .vocoder_train import VocoderTrainConfig, fit

    given: dict = {}
    if segments is not None:
        given["segments"] = str(segments.resolve())
    if epochs is not None:
        given.update(epochs=epochs, max_minutes=0)
    if resume and config_file is None and (out / "config.yaml").exists():
        config_file = out / "config.yaml"
    with _command_errors():
        if audio_shards is not None:
            given["fbank"] = load_fbank_config(audio_shards)
        cfg = VocoderTrainConfig.from_dict(merge_config(config_file, _parse_set(sets), given))
        m = fit(cfg, out, resume=resume, show_progress=not quiet)
    if m:
        click.echo(f"vocoder: epoch {m['epoch']}, loss {m['loss']:.4g}, {m['minutes']:.2f} min; "
                   f"checkpoint {out / 'checkpoints' / 'last.pt'}")


@command
@click.command(context_settings=CONTEXT)
@click.argument("source", type=EXISTING_DIR)
@click.option("--speech", "speech", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A recording of a spoken digit (repeatable) -> a written digit (PNG).")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A picture of a written digit (repeatable) -> a spoken digit (WAV).")
@click.option("--list", "list_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A file with one recording or picture per line (told apart by suffix).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
@click.option("--style", default=None, help="prior (the prior's mean), seed:N (drawn with seed N), voice or voice:NAME "
              "(speech in the typical training voice, or a training speaker's), or a reference file: a picture sets "
              "the style of written digits, a recording that of spoken ones.  Default: speech in the typical "
              "voice, written digits in the prior's mean.")
@click.option("--num", type=click.IntRange(1, 100), default=1, help="Outputs per input (needs --style seed:N).")
@click.option("--same-voice", is_flag=True, help="The recordings are all one speaker's: normalise them by "
              "their joint statistics (Kaldi's per-speaker CMVN; a run trained with cmvn: speaker; from about "
              "ten words on it beats reading each alone).")
@click.option("--checkpoint", default="last", help="For a run directory: last, best or a .pt file.")
@click.option("--vocoder", "vocoder_run", type=EXISTING_DIR, default=None,
              help="A vocoder run (`pvae-model vocoder`) to speak with instead of Griffin-Lim.")
def generate(source: Path, speech, images, list_file, out: Path, style: str, num: int, same_voice: bool,
             checkpoint: str, vocoder_run) -> None:
    """Your own digits through a trained model: SOURCE is a run directory or a bundle (`export`).

    The same front end as the pipeline (VAD trim, resample, FBank, the run's CMVN); pictures as
    MNIST's (28 x 28, white on black: what is done to others is said in OUT/generate.jsonl).
    """
    from .frontend import InputError
    from .generate import generate_files, load, parse_style, read_list

    with _command_errors():
        speech, images = list(speech), list(images)
        if list_file is not None:
            more_speech, more_images = read_list(list_file)
            speech, images = speech + more_speech, images + more_images
        if not speech and not images:
            raise ValueError("nothing to generate: give --speech, --image or --list")
        try:
            r = generate_files(load(source, checkpoint, vocoder_run), speech, images, out, parse_style(style), num,
                               same_voice)
        except InputError as e:
            raise ValueError(str(e)) from None
    for row in r["rejected"]:
        click.echo(f"rejected: {row['rejected']}", err=True)
    click.echo(f"generate: {r['written']} written, {len(r['rejected'])} rejected of {r['total']}; {r['manifest']}")
    if r["rejected"]:
        raise SystemExit(1)


@command
@click.command(context_settings=CONTEXT)
@click.argument("run_dir", type=EXISTING_DIR)
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--checkpoint", default="last", help="last, best or a .pt file.")
@click.option("--vocoder", "vocoder_run", type=EXISTING_DIR, default=None,
              help="A vocoder run (`pvae-model vocoder`) to put in the bundle (vocoder.safetensors).")
def export(run_dir: Path, out: Path, checkpoint: str, vocoder_run) -> None:
    """A bundle of a trained PVAE run: safetensors weights, one config, a model card (README.md)."""
    from .bundle import export_bundle

    with _command_errors():
        path = export_bundle(run_dir, out, checkpoint, vocoder_run)
    extra = ", vocoder.safetensors" if vocoder_run is not None else ""
    click.echo(f"bundle: {path} (model.safetensors{extra}, config.json, README.md)")


@command
@click.command(context_settings=CONTEXT)
@click.argument("source", type=EXISTING_DIR)
@click.option("--host", default="127.0.0.1", help="Address to listen on (127.0.0.1: this machine only).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, help="0: any free port.")
@click.option("--checkpoint", default="last", help="For a run directory: last, best or a .pt file.")
@click.option("--vocoder", "vocoder_run", type=EXISTING_DIR, default=None,
              help="A vocoder run (`pvae-model vocoder`) to speak with instead of Griffin-Lim.")
def serve(source: Path, host: str, port: int, checkpoint: str, vocoder_run) -> None:
    """A local page to try a model (run or bundle): draw a digit and hear it, say one and see it."""
    from .generate import load
    from .serve import serve as make_server

    with _command_errors():
        server = make_server(load(source, checkpoint, vocoder_run), host, port)
    click.echo(f"serving {source} on http://{host}:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

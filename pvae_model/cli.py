"""``pvae-model``: train, evaluate and report the Partitioned VAE, its baselines and the
latent-translation bridge; a thin shell over the Python API."""

from __future__ import annotations

import os
from pathlib import Path

import click
import yaml

from . import __version__
from .cli_common import CONTEXT, EXISTING_DIR, _command_errors, _parse_set, _refuse_given, run_options
from .cli_use import COMMANDS

@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="pvae-model")
def main() -> None:
    """The Partitioned VAE of Hsu & Glass (2018) on spoken + written digits."""


@main.command(context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, type=EXISTING_DIR)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the pooled figures as JSON here.")
def pool(runs, out) -> None:
    """Leave-one-speaker-out: pool the held-out speakers of evaluated fold RUNS (a table per fold)."""
    import json

    from .eval.pool import markdown, pool_folds

    with _command_errors():
        p = pool_folds(runs)
        if out is not None:
            out.write_text(json.dumps(p, indent=2))
    click.echo(markdown(p))


@main.command("default-config", context_settings=CONTEXT)
@click.argument("what", type=click.Choice(["train", "bridge"]), default="train")
def default_config(what: str) -> None:
    """Print the default TrainConfig (or BridgeTrainConfig) as YAML: edit it and pass --config."""
    if what == "train":
        from .config import TrainConfig

        d = TrainConfig().to_dict()
    else:
        from .bridge import BridgeTrainConfig

        d = BridgeTrainConfig().to_dict()
    click.echo(yaml.safe_dump(d, sort_keys=False), nl=False)


@main.command(context_settings=CONTEXT)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML TrainConfig (configs/pvae_fast.yaml, configs/pvae_paper.yaml).")
@click.option("--out", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--audio-shards", type=click.Path(path_type=Path), default=None)
@click.option("--image-shards", type=click.Path(path_type=Path), default=None)
@click.option("--epochs", type=click.IntRange(1), default=None)
@click.option("--batch-size", type=click.IntRange(2), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ...")
@click.option("--model", type=click.Choice(["pvae", "vae-sp", "vae-im", "jmvae-kl"]), default=None,
              help="PVAE or a baseline of the paper's Table 1 ('PVAE (no beta)' is pvae with --beta 0).")
@click.option("--beta", type=float, default=None, help="Contrastive weight (0 = 'PVAE (no beta)').")
@click.option("--max-minutes", type=float, default=None, help="Stop cleanly after this much training time.")
@click.option("--set", "sets", multiple=True, help="Any config field, e.g. --set pvae.gamma=0.3 --set eval_every=2")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def train(config_file, run_dir: Path, resume: bool, sets, quiet: bool, **flags) -> None:
    """Train PVAE on audio + image shards; RUN_DIR gets config, metrics.jsonl, tb/, checkpoints/.

    Multi-process (DDP): torchrun --nproc-per-node N -m pvae_model.cli train ...
    (gloo on CPU, NCCL on GPU).
    """
    from pvae_data.config import merge_config

    from .config import TrainConfig
    from .train import train as run_train

    names = {"audio_shards": "audio_shards", "image_shards": "image_shards", "epochs": "epochs",
             "batch_size": "batch_size", "lr": "lr", "seed": "seed", "device": "device",
             "beta": "pvae.beta", "max_minutes": "max_minutes", "model": "model"}
    given = {names[k]: (str(v) if isinstance(v, Path) else v) for k, v in flags.items() if v is not None}
    if resume and config_file is None and (run_dir / "config.yaml").exists():
        config_file = run_dir / "config.yaml"
    with _command_errors("bad config: "):
        cfg = TrainConfig.from_dict(merge_config(config_file, _parse_set(sets), given))
    dist = _init_distributed(cfg.device)
    try:
        with _command_errors():
            run_train(cfg, run_dir, resume=resume, show_progress=not quiet)
    finally:
        if dist:
            dist.destroy_process_group()


def _run_options(f):
    """The options of every command that reads a trained run: which checkpoint, and where its
    shards are when the run directory moved."""
    f = click.option("--image-shards", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Image shards, instead of the path saved in RUN_DIR/config.yaml.")(f)
    f = click.option("--audio-shards", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Audio shards, instead of the path saved in RUN_DIR/config.yaml.")(f)
    f = click.option("--checkpoint", default="best", show_default=True,
                     help="best, last, or a path to a .pt file (best falls back to last, with a warning).")(f)
    return f


@main.command(context_settings=CONTEXT)
@click.argument("run_dir", type=EXISTING_DIR)
@_run_options
@click.option("--seeds", type=click.IntRange(1), default=5, help="k-means initialisations (mean +- std).")
@click.option("--device", default="cpu")
def purity(run_dir: Path, checkpoint: str, audio_shards, image_shards, seeds: int, device: str) -> None:
    """k-means purity (k = 10) of z_s, z_a, z_i on the full test split (the paper's Table 1 metric)."""
    import json

    from .eval.metrics import zs_purity

    with _command_errors():
        r = zs_purity(run_dir, checkpoint, seeds, device, audio_shards=audio_shards, image_shards=image_shards)
    click.echo(json.dumps(r, indent=2))


@main.command(context_settings=CONTEXT)
@click.argument("run_dir", type=EXISTING_DIR)
@_run_options
@click.option("--seeds", type=click.IntRange(1), default=5, help="k-means initialisations (mean +- std).")
@click.option("--vocoder", "vocoder_run", type=EXISTING_DIR, default=None,
              help="A vocoder run (`pvae-model vocoder`) for the WAVs evaluate writes, instead of Griffin-Lim.")
def evaluate(run_dir: Path, checkpoint: str, audio_shards, image_shards, seeds: int, vocoder_run) -> None:
    """Purity of every latent, inertia, t-SNE, style transfer, cross-modal generation -> RUN_DIR/eval/."""
    import json

    from .eval.evaluate import EvalConfig
    from .eval.evaluate import evaluate as run_eval

    from .run import run_kind

    with _command_errors():
        if run_kind(run_dir) == "vocoder":
            raise ValueError(f"{run_dir} is a vocoder run: evaluate a model run with --vocoder {run_dir}")
        if run_kind(run_dir) == "bridge":
            from .eval.bridge_eval import evaluate_bridge

            _refuse_given(("checkpoint", "seeds", "audio_shards", "image_shards"),
                          "does not apply to a bridge (it reads its last checkpoint, and its base runs' shards)")
            m = evaluate_bridge(run_dir, vocoder=str(vocoder_run) if vocoder_run else "")
        else:
            m = run_eval(run_dir, EvalConfig(checkpoint=checkpoint, seeds=seeds, audio_shards=audio_shards,
                                             image_shards=image_shards, vocoder=str(vocoder_run) if vocoder_run else ""))
    click.echo(json.dumps({k: m[k] for k in ("purity", "coherence", "diversity") if k in m}, indent=2))
    sp = m.get("speakers") or {}
    if sp:
        click.echo(f"speakers training saw: {', '.join(sp.get('train') or [])}; held out: "
                   f"{', '.join(sp.get('held_out') or []) or 'none'}")
    for name, g in (m.get("speaker_groups") or {}).items():
        click.echo(f"  {name} ({', '.join(g['speakers'])}, {g['n']} utterances): z_s purity {100 * g['purity']:.1f} %, "
                   f"speech->image {100 * g['speech_to_image']:.1f} %, own speech {100 * g['speech_own']:.1f} %, "
                   f"speech judge {100 * g['judge']:.1f} %")
    click.echo(f"evaluated epoch {m['epoch']} in {m['seconds']} s; figures and WAVs in {run_dir / 'eval'}")


@main.command(context_settings=CONTEXT)
@click.option("--speech-run", type=EXISTING_DIR, default=None,
              help="A trained vae-sp run directory.")
@click.option("--image-run", type=EXISTING_DIR, default=None,
              help="A trained vae-im run directory.")
@run_options("Bridge", "BridgeTrainConfig", "bridge.beta_cls=0")
def bridge(speech_run, image_run, out: Path, config_file, epochs, resume: bool, sets, quiet: bool) -> None:
    """Latent translation (Tian & Engel 2019): a bridging VAE between a frozen VAE-sp and VAE-im.

    Then `pvae-model evaluate OUT` judges the translations both ways.
    """
    from pvae_data.config import merge_config

    from .bridge import BridgeTrainConfig, fit

    given = {k: str(v) for k, v in (("speech_run", speech_run), ("image_run", image_run)) if v is not None}
    if epochs is not None:
        given["epochs"] = epochs
    if resume and config_file is None:
        saved = [p for p in (out / "config.yaml", out / "bridge.yaml") if p.exists()]  # bridge.yaml: older bridges
        config_file = saved[0] if saved else None
    with _command_errors():
        cfg = BridgeTrainConfig.from_dict(merge_config(config_file, _parse_set(sets), given))
        if not cfg.speech_run or not cfg.image_run:
            raise ValueError("--speech-run and --image-run are required (or a config that names them)")
        m = fit(cfg, out, resume=resume, show_progress=not quiet)
    if m:
        click.echo(f"bridge: epoch {m['epoch']}, loss {m['loss']:.4g}, swd {m['swd']:.3g}, "
                   f"{m['minutes']:.2f} min; checkpoint {out / 'checkpoints' / 'last.pt'}")


@main.command(context_settings=CONTEXT)
@click.argument("run_dir", type=EXISTING_DIR)
@_run_options
@click.option("--images", "n_images", type=click.IntRange(10), default=1000, help="Test images used.")
def diagnose(run_dir: Path, checkpoint: str, audio_shards, image_shards, n_images: int) -> None:
    """Which latent each decoder reads the digit from (judged generations, JSON)."""
    import json

    from .eval.diagnose import diagnose as run_diagnose

    with _command_errors():
        r = run_diagnose(run_dir, checkpoint, n_images, audio_shards=audio_shards, image_shards=image_shards)
    click.echo(json.dumps(r, indent=2))


@main.command(context_settings=CONTEXT)
@click.argument("run_dirs", nargs=-1, required=True, type=EXISTING_DIR)
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"))
def report(run_dirs, out: Path) -> None:
    """One self-contained HTML page: metrics vs the paper's Table 1, figures, audio players."""
    from .eval.report import build_report, load_runs, markdown_table

    with _command_errors():
        path = build_report(list(run_dirs), out)
        table = markdown_table(load_runs(list(run_dirs)))
    click.echo("k-means purity (%, mean ± std over seeds) and cross-modal coherence (%), test split:")
    click.echo(table)
    click.echo(f"report: {path.resolve()}")


for _command in COMMANDS:
    main.add_command(_command)


def _init_distributed(device: str):
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist


if __name__ == "__main__":
    main()

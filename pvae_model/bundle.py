"""A bundle: the whole trained model in one directory, loadable without running any code it holds.

BUNDLE/
  model.safetensors   the weights the run delivers (its last or best checkpoint), in the
                      ecosystem's code-free format: reading it never unpickles
  config.json         ``format`` / ``format_version``; ``kind``; the model's config (the run's
                      TrainConfig); the speech front end (FBank, CMVN mode and statistics, VAD);
                      the image policy; the vocoder; every departure and size change; the speakers
                      training heard; the voices it speaks in (each training speaker's mean z_a,
                      :mod:`pvae_model.voices`; absent from bundles written before them, which
                      speak in the prior's style); the run's evaluated metrics when it has them
  README.md           the model card: data, protocol, seen / held-out speaker figures, departures,
                      how to load

``pvae-model export RUN OUT`` writes one, of a PVAE run or of a bridge (its two frozen base VAEs
and the bridge in one ``model.safetensors``, :mod:`pvae_model.bundle_bridge`);
:func:`pvae_model.load` and ``pvae-model generate`` read bundles and run directories alike.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


from .bundle_format import (CARD, CONFIG, FORMAT, FORMAT_VERSION, MAX_CONFIG_BYTES, VOCODER, VOCODER_WEIGHTS,  # noqa: F401
                            WEIGHTS, image_policy, pct, run_metrics)
from .checkpoints import RunIOError

def is_bundle(path) -> bool:
    return (Path(path) / CONFIG).is_file() and (Path(path) / WEIGHTS).is_file()


def export_bundle(run_dir, out, checkpoint: str = "last", vocoder_run=None) -> Path:
    """Write the bundle of a trained PVAE run or bridge to ``out`` (which must not exist), all or
    nothing; with ``vocoder_run`` (a ``pvae-model vocoder`` run), its vocoder goes in as
    ``vocoder.safetensors``."""
    from .run import run_kind

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; export to a new directory")
    if run_kind(run_dir) == "bridge":
        from .bundle_bridge import bridge_card, bridge_contents

        cfg, state, fbank = bridge_contents(run_dir)
        card = bridge_card
    else:
        cfg, state, fbank = _pvae_contents(run_dir, checkpoint)
        card = model_card
    vocoder, cfg["vocoder"] = _vocoder_contents(vocoder_run, fbank)
    _write_bundle(out, cfg, state, vocoder, card(cfg, run_dir))
    return out


def _pvae_contents(run_dir, checkpoint: str) -> tuple[dict, dict, dict]:
    """(config, weights, FBank config) of a PVAE run's bundle."""
    from .provenance import provenance
    from .run_parts import load_run_parts
    from .voices import voices_to_json

    parts = load_run_parts(run_dir, checkpoint)
    metrics = run_metrics(run_dir)
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": parts["kind"],
           "train_config": parts["cfg"].to_dict(), "epoch": parts["epoch"],
           "speech": parts["frontend"].__dict__, "speech_frames": parts["speech_frames"],
           "image": image_policy(), "vocoder": VOCODER,
           "deviations": parts["cfg"].deviations(), "size_changes": parts["cfg"].pvae.size_changes(),
           "speakers": metrics.get("speakers") or parts["speakers"],
           "voices": voices_to_json(parts["voices"]) if parts["voices"] else None,
           "metrics": {k: metrics[k] for k in ("epoch", "purity", "coherence", "speaker_groups") if k in metrics},
           "provenance": {"exported": provenance({"audio_shards": parts["cfg"].audio_shards,
                                                  "image_shards": parts["cfg"].image_shards}),
                          "evaluated": metrics.get("provenance")}}
    return cfg, parts["model"].state_dict(), parts["frontend"].fbank


def _vocoder_contents(vocoder_run, fbank: dict):
    """(the vocoder, its entry in config.json): Griffin-Lim's without a vocoder run."""
    from .vocoder import speaking_vocoder

    vocoder = speaking_vocoder(vocoder_run, fbank)
    if vocoder is None:
        return None, VOCODER
    return vocoder, {"kind": "vocos", "file": VOCODER_WEIGHTS, "config": vocoder.cfg.to_dict(),
                     "fbank": vocoder.fbank.to_dict(), "run": str(Path(vocoder_run).resolve())}


def _write_bundle(out: Path, cfg: dict, state: dict, vocoder, card: str) -> None:
    """The bundle's files under a temporary name, then renamed into place: all or nothing."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / WEIGHTS),
                  metadata={"format": FORMAT, "kind": cfg["kind"]})
        files = [WEIGHTS, CONFIG, CARD]
        if vocoder is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in vocoder.state_dict().items()},
                      str(tmp / VOCODER_WEIGHTS), metadata={"format": FORMAT, "kind": "vocos"})
            files.append(VOCODER_WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=1))
        (tmp / CARD).write_text(card)
        umask = os.umask(0)
        os.umask(umask)
        for f in files:
            os.chmod(tmp / f, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 is for the temporary name only
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_bundle(path) -> tuple[dict, dict]:
    """(config, state dict) of a bundle; a one-line ``RunIOError`` for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, w_path = path / CONFIG, path / WEIGHTS
    if not cfg_path.is_file() or not w_path.is_file():
        raise RunIOError(f"{path}: not a bundle (it needs {CONFIG} and {WEIGHTS}; `pvae-model export RUN OUT` makes one)")
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise RunIOError(f"{cfg_path}: {cfg_path.stat().st_size} bytes is not a bundle config")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RunIOError(f"{cfg_path}: not JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise RunIOError(f"{cfg_path}: not a {FORMAT} config")
    version = cfg.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RunIOError(f"{cfg_path}: bundle format {version!r} was written by a newer pvae; "
                         f"this one reads up to {FORMAT_VERSION} (upgrade pvae)")
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RunIOError(f"{w_path}: not a safetensors file ({str(e).splitlines()[0][:120]}); "
                         "a bundle's weights are never unpickled") from None
    return cfg, state


def bundle_vocoder(path, cfg: dict):
    """The vocoder a bundle holds (its ``vocoder.safetensors``, never unpickled), or None for a
    bundle that speaks with Griffin-Lim."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    voc = cfg.get("vocoder") or {}
    if voc.get("kind", "griffin-lim") == "griffin-lim":
        return None
    if voc.get("kind") != "vocos" or voc.get("file") != VOCODER_WEIGHTS:
        raise RunIOError(f"{path}/{CONFIG}: unknown vocoder {voc.get('kind')!r} (file {voc.get('file')!r})")
    from .vocoder import vocoder_from_state

    try:
        state = load_file(str(Path(path) / VOCODER_WEIGHTS))
        return vocoder_from_state({"vocoder": voc["config"], "fbank": voc["fbank"]}, state)
    except (SafetensorError, OSError) as e:
        raise RunIOError(f"{Path(path) / VOCODER_WEIGHTS}: not a safetensors file ({str(e).splitlines()[0][:120]}); "
                         "a bundle's weights are never unpickled") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise RunIOError(f"{path}/{CONFIG}: the vocoder does not load ({str(e).splitlines()[0][:160]})") from None


def model_card(cfg: dict, run_dir) -> str:
    """README.md of a bundle: what it is, what it was trained on, how well it does, how to load it."""
    tc, m, sp = cfg["train_config"], cfg.get("metrics") or {}, cfg.get("speakers") or {}
    pur, coh, groups = m.get("purity") or {}, m.get("coherence") or {}, m.get("speaker_groups") or {}
    rows = [f"| all test takes | {pct(pur.get('zs_speech'))} | {pct(pur.get('zs_image'))} | "
            f"{pct(coh.get('speech_to_image_prior'))} | {pct(coh.get('image_to_speech_prior'))} |"]
    for name in ("seen", "held_out"):
        g = groups.get(name)
        if g:
            rows.append(f"| {name.replace('_', '-')} speakers ({', '.join(g.get('speakers', []))}) | "
                        f"{pct(g.get('purity'))} | | {pct(g.get('speech_to_image'))} | |")
    dev = cfg.get("deviations") or {}
    size = cfg.get("size_changes") or {}
    lines = [
        f"# {Path(run_dir).name}: a Partitioned VAE of spoken and written digits",
        "",
        "The Partitioned VAE of Hsu & Glass (2018): a shared latent z_s (the digit) and private latents",
        "z_a (how it was spoken) and z_i (how it was written), trained on spoken digits paired, every",
        "epoch, with MNIST digits of the same label. Made by `pvae-model export`.",
        "",
        "## Data and protocol",
        f"- Speech: the audio shards `{tc.get('audio_shards')}`; speakers in training: "
        f"{', '.join(sp.get('train') or []) or 'not recorded'}; held out (never heard): "
        f"{', '.join(sp.get('held_out') or []) or 'none'}.",
        f"- Images: `{tc.get('image_shards')}` (MNIST).",
        f"- Front end: FBank {cfg['speech']['fbank'].get('num_mel_bins')} bins at "
        f"{cfg['speech']['fbank'].get('sample_rate')} Hz, {cfg['speech']['fbank'].get('low_freq')}–"
        f"{cfg['speech']['fbank'].get('high_freq') or 'Nyquist'} Hz, CMVN `{cfg['speech']['cmvn_mode']}`, VAD trim.",
        f"- Trained {cfg.get('epoch')} epochs; objective `{tc.get('pvae', {}).get('objective')}`.",
        "",
        "## Evaluation (`pvae-model evaluate`, test split)" if m else "## Evaluation: not run before export",
        "",
    ]
    if m:
        lines += ["| test takes | z_s purity, speech | z_s purity, images | speech→image | image→speech |",
                  "| --- | --- | --- | --- | --- |", *rows, ""]
    lines += [
        "## Departures from the paper",
        *([f"- `{k}`: {v}" for k, v in dev.items()] or ["- none"]),
        *([f"- size: `{k}` = {v}" for k, v in size.items()]),
        "",
        "## Use",
        "```python",
        "import pvae_model",
        "m = pvae_model.load(\"THIS_DIRECTORY\")",
        "image = m.speech_to_image(wave, sample_rate)      # [28, 28] in [0, 1]",
        "wave, rate = m.image_to_speech(image)",
        "```",
        "`pvae-model generate THIS_DIRECTORY --speech a.wav --image b.png --out OUT` does the same from files.",
        (f"Written digits are spoken in {(cfg.get('voices') or {}).get('default')}'s voice (the typical training "
         f"voice; `style=(\"voice\", NAME)` for another of {', '.join((cfg.get('voices') or {}).get('z_a') or {})}, "
         "`style=\"prior\"` for the paper's prior mean)." if (cfg.get("voices") or {}).get("z_a") else
         "Written digits are spoken with the prior's mean style (this bundle holds no voices)."),
        ("Speech out is made from the generated FBank by a vocoder trained on the corpus (Vocos-style, `vocoder.safetensors`)." if cfg['vocoder']['kind'] == 'vocos' else "Speech out is made by Griffin-Lim from the generated FBank (export --vocoder adds a trained vocoder)."),
        "The weights are `model.safetensors`: loading them runs no code.",
        "",
    ]
    if cfg["speech"]["cmvn_mode"] == "speaker":
        lines[-1:-1] = ["Trained with per-speaker CMVN: one recording alone is normalised by itself; several of one",
                        "voice give its statistics: `voice, _ = m.enrol([...])`, then `m.speech_to_image(x, voice=voice)`",
                        "(`generate --same-voice`)."]
    return "\n".join(lines)

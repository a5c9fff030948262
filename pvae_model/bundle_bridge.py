"""The bundle of a latent-translation bridge: the bridge and its two frozen base VAEs in one
``model.safetensors`` (keys ``bridge.*``, ``vae_sp.*``, ``vae_im.*``), their configs in
``config.json``; written by :func:`pvae_model.bundle.export_bundle`, read by
:func:`pvae_model.load` without the base runs' directories or shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PARTS = ("bridge", "vae_sp", "vae_im")


def bridge_contents(run_dir) -> tuple[dict, dict, dict]:
    """(config, weights, FBank config) of a bridge's bundle."""
    from .bridge import LoadedBridge
    from .bundle_format import FORMAT, FORMAT_VERSION, image_policy, run_metrics
    from .provenance import provenance

    lb = LoadedBridge(run_dir)
    b = lb.bases
    frontend, frames = bridge_front_end(lb)
    metrics = run_metrics(run_dir)
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "bridge",
           "bridge_config": lb.cfg.to_dict(), "z_dims": list(lb.model.z_dims), "epoch": lb.epoch,
           "bases": {"vae_sp": b.vae_sp.cfg.to_dict(), "vae_im": b.vae_im.cfg.to_dict()},
           "speech": frontend.__dict__, "speech_frames": frames, "image": image_policy(),
           "deviations": metrics.get("deviations") or lb.cfg.deviations(),
           "metrics": {k: metrics[k] for k in ("epoch", "coherence", "base_own_reconstruction") if k in metrics},
           "provenance": {"exported": provenance({"audio_shards": b.audio_shards, "image_shards": b.image_shards}),
                          "evaluated": metrics.get("provenance")}}
    state = {f"{name}.{k}": v for name, m in zip(PARTS, (lb.model, b.vae_sp, b.vae_im))
             for k, v in m.state_dict().items()}
    return cfg, state, frontend.fbank


def bridge_front_end(lb) -> tuple:
    """(the speech front end, a spoken digit's usual length in frames) of a loaded bridge: its
    speech base's FBank, CMVN and the VAD config its shards were trimmed with."""
    from .run import load_fbank_config, load_vad_config

    from .frontend import SpeechFrontEnd
    from .run_parts import DEFAULT_FRAMES

    b = lb.bases
    frontend = SpeechFrontEnd(fbank=load_fbank_config(b.audio_shards), cmvn_mode=b.cmvn_mode,
                              cmvn=b.cmvn, vad=load_vad_config(b.audio_shards), floor_db=b.floor_db)
    frames = int(np.median([len(f) for f in b.audio.feats])) if len(b.audio.feats) else DEFAULT_FRAMES
    return frontend, frames


def bridge_from_bundle(cfg: dict, state: dict, path):
    """The :class:`~pvae_model.bridge.Translator` a bridge bundle holds, and the bundle's front end."""
    from .bridge import BridgeTrainConfig, Translator
    from .bundle_format import state_from_bundle
    from .checkpoints import RunIOError
    from .frontend import SpeechFrontEnd
    from .models import build_model
    from .models.bridge import Bridge

    try:
        bcfg = BridgeTrainConfig.from_dict(cfg["bridge_config"])
        parts = {"bridge": Bridge(bcfg.bridge, tuple(cfg["z_dims"])),
                 "vae_sp": build_model("vae-sp", cfg["bases"]["vae_sp"]),
                 "vae_im": build_model("vae-im", cfg["bases"]["vae_im"])}
        frontend = SpeechFrontEnd(**{k: cfg["speech"][k] for k in ("fbank", "cmvn_mode", "cmvn", "vad")},
                                  floor_db=float(cfg["speech"].get("floor_db", 0.0)))
    except (KeyError, TypeError, ValueError) as e:
        raise RunIOError(f"{path}/config.json: not a usable bridge bundle config ({e})") from None
    for name, m in parts.items():
        state_from_bundle(m, {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}, path)
    return Translator(parts["bridge"], parts["vae_sp"], parts["vae_im"]), frontend


def bridge_card(cfg: dict, run_dir) -> str:
    """README.md of a bridge's bundle."""
    from .bundle_format import pct

    coh = (cfg.get("metrics") or {}).get("coherence") or {}
    dev = cfg.get("deviations") or {}
    return "\n".join([
        f"# {Path(run_dir).name}: latent translation between spoken and written digits",
        "",
        "A bridging VAE (Tian & Engel 2019) between two frozen single-modality VAEs (VAE-sp on FBank,",
        "VAE-im on MNIST), all three in `model.safetensors`. Made by `pvae-model export`.",
        "",
        f"- Front end: FBank {cfg['speech']['fbank'].get('num_mel_bins')} bins at {cfg['speech']['fbank'].get('sample_rate')} Hz, "
        f"CMVN `{cfg['speech']['cmvn_mode']}`, VAD trim. Bridge trained {cfg.get('epoch')} epochs.",
        f"- Evaluation (`pvae-model evaluate`): speech→image {pct(coh.get('speech_to_image_prior'))}, "
        f"image→speech {pct(coh.get('image_to_speech_prior'))}." if coh else "- Evaluation: not run before export.",
        "- Departures from Tian & Engel's runs: " + (", ".join(f"`{k}` = {v}" for k, v in dev.items()) or "none") + ".",
        "",
        "```python",
        "import pvae_model",
        "m = pvae_model.load(\"THIS_DIRECTORY\")   # no style latent: one output per input",
        "image = m.speech_to_image(wave, sample_rate)",
        "wave, rate = m.image_to_speech(image)",
        "```",
        "The weights are safetensors: loading them runs no code.",
        "",
    ])

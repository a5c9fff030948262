"""``pvae-model bridge``: fit a latent-translation bridge (Tian & Engel, 2019) between a trained
VAE-sp run and a trained VAE-im run, both frozen, and translate across modalities with it.

BRIDGE_DIR/ (trained by the run engine, :mod:`pvae_model.engine`)
  config.yaml           the resolved BridgeTrainConfig, ``model: bridge`` (bridge.yaml before the engine)
  latents.pt            posterior means of both base VAEs on train and test (computed once)
  metrics.jsonl         one line per epoch: every loss term, minutes
  tb/                   TensorBoard events
  train.log             what the engine printed, time-stamped
  checkpoints/last.pt   bridge, optimizer, RNG states, epoch and position inside it (exact resume)

The base models' LSTMs never run while the bridge trains: the latents are computed once.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pvae_data.config import ConfigMixin, merge_config

from .engine import Task, run_task
from .models.bridge import Bridge, BridgeConfig


@dataclass
class BridgeTrainConfig(ConfigMixin):
    model: str = "bridge"  # the run's kind, as TrainConfig.model
    speech_run: str = ""  # a trained vae-sp run directory
    image_run: str = ""  # a trained vae-im run directory
    checkpoint: str = "last"  # which checkpoint of the base runs
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    epochs: int = 30
    steps_per_epoch: int = 100
    batch_size: int = 128  # per domain
    lr: float = 1e-3
    seed: int = 0
    num_threads: int = 0
    max_minutes: float = 0.0  # stop cleanly after this much training time (0 = no limit)
    # What the bridge is trained on: "mean", the base encoders' posterior means (the paper's code);
    # "sample", a fresh draw from each item's base posterior q(z_d | x) at every step.  The spoken
    # digits are few (2,700 training items), and a bridge trained on their means alone learns them
    # by heart (its z' classifier: 99.9 % on train, 93 % on test); the posterior's own noise
    # is data augmentation that the base models already define.  Transfer always uses means.
    inputs: str = "mean"

    def __post_init__(self) -> None:
        if isinstance(self.bridge, dict):
            self.bridge = BridgeConfig.from_dict(self.bridge)
        if self.model != "bridge":
            raise ValueError(f"model must be 'bridge' in a bridge config, got {self.model!r}")
        if self.epochs < 1 or self.steps_per_epoch < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError("epochs >= 1, steps_per_epoch >= 1, batch_size >= 2 and lr > 0 are required")
        if self.inputs not in ("mean", "sample"):
            raise ValueError(f"inputs must be 'mean' or 'sample', got {self.inputs!r}")

    def deviations(self) -> dict:
        """Values that differ from the paper's documented runs (``PAPER_RUNS``), for metrics and the
        report: ``{"bridge.beta_cls": 10.0, ...}``."""
        now = {k: getattr(self.bridge if k.startswith("bridge.") else self, k.removeprefix("bridge."))
               for k in PAPER_RUNS}
        return {k: v for k, v in now.items() if v != PAPER_RUNS[k]}


# Tian & Engel's documented runs (alantian/latent_transfer): KL 0.005, SWD 1, classifier 0.05, 8
# shared dims, trained on the base posterior means.
PAPER_RUNS = {"bridge.z_bridge": 8, "bridge.beta_kl": 0.005, "bridge.beta_swd": 1.0, "bridge.beta_cls": 0.05,
              "inputs": "mean"}


def load_bridge_config(path: str | Path | None, overrides: dict | None = None) -> BridgeTrainConfig:
    """YAML file (optional) + ``{"bridge.beta_cls": 0}``-style overrides (as ``train``'s)."""
    return BridgeTrainConfig.from_dict(merge_config(path, overrides))


# ---- the frozen base models ----------------------------------------------------------------


@dataclass
class BaseModels:
    vae_sp: torch.nn.Module
    vae_im: torch.nn.Module
    audio: object  # test AudioSet
    images: object  # test ImageSet
    cmvn: dict | None
    audio_shards: str
    image_shards: str
    minutes: dict  # training minutes of each base run
    deviations: dict  # each base run's departures from the paper's baselines ({} for none)
    cmvn_mode: str = "global"  # how the speech base reads FBank: its TrainConfig.cmvn
    floor_db: float = 0.0  # and its TrainConfig.fbank_floor_db


def load_bases(cfg: BridgeTrainConfig) -> BaseModels:
    from .run import load_run

    _, c_sp, sp, audio, _, cmvn = load_run(cfg.speech_run, cfg.checkpoint)
    _, c_im, im, _, images, _ = load_run(cfg.image_run, cfg.checkpoint)
    if c_sp.model != "vae-sp" or c_im.model != "vae-im":
        raise ValueError(f"the bridge needs a vae-sp and a vae-im run; got {c_sp.model} ({cfg.speech_run}) "
                         f"and {c_im.model} ({cfg.image_run})")
    for m in (sp, im):
        m.requires_grad_(False)
    return BaseModels(sp, im, audio, images, cmvn, c_sp.audio_shards, c_im.image_shards,
                      {"speech": _run_minutes(cfg.speech_run), "image": _run_minutes(cfg.image_run)},
                      {"vae_sp": c_sp.deviations(), "vae_im": c_im.deviations()}, c_sp.cmvn, c_sp.fbank_floor_db)


def _run_minutes(run_dir) -> float:
    lines = [ln for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return float(json.loads(lines[-1])["minutes"]) if lines else 0.0


def base_latents(cfg: BridgeTrainConfig, bases: BaseModels, cache: Path) -> dict:
    """``{split: {"z_speech", "lv_speech", "y_speech", "z_image", "lv_image", "y_image"}}``: posterior
    means (``z_*``) and log-variances (``lv_*``) of the frozen base encoders, computed once and
    cached (recomputed when the base runs' checkpoints change)."""
    from .data import load_audio_split, load_image_split
    from .eval.metrics import encode_posteriors
    from .checkpoints import RunIOError, load_checkpoint

    stamp = {d: _stamp(Path(r) / "checkpoints" / f"{cfg.checkpoint}.pt")
             for d, r in (("speech", cfg.speech_run), ("image", cfg.image_run))}
    stamp["format"] = LATENTS_FORMAT
    if cache.exists():
        try:
            saved = load_checkpoint(cache)
        except RunIOError as e:  # a damaged (or refused) cache holds nothing the bases cannot give again
            print(f"warning: {e}; computing the latents anew", file=sys.stderr)
            saved = {}
        if saved.get("stamp") == stamp:
            return saved["latents"]
    out = {}
    for split in ("train", "test"):
        audio = bases.audio if split == "test" else load_audio_split(bases.audio_shards, "train", mode=bases.cmvn_mode,
                                                                              floor_db=bases.floor_db)
        images = bases.images if split == "test" else load_image_split(bases.image_shards, "train")
        sp = encode_posteriors(bases.vae_sp, audio=audio)["s_audio"]
        im = encode_posteriors(bases.vae_im, images=images)["s_image"]
        out[split] = {"z_speech": torch.from_numpy(sp[0]).float(), "lv_speech": torch.from_numpy(sp[1]).float(),
                      "y_speech": torch.from_numpy(np.asarray(audio.labels, np.int64)),
                      "z_image": torch.from_numpy(im[0]).float(), "lv_image": torch.from_numpy(im[1]).float(),
                      "y_image": torch.from_numpy(np.asarray(images.labels, np.int64))}
    from .checkpoints import save_checkpoint

    save_checkpoint(cache, {"stamp": stamp, "latents": out})
    return out


LATENTS_FORMAT = 2  # 2: log-variances cached beside the means


def _stamp(path: Path) -> list:
    if not path.exists():
        path = path.with_name("last.pt")
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


# ---- training --------------------------------------------------------------------------------


def _epoch_batches(latents: dict, cfg: BridgeTrainConfig, epoch: int):
    """The epoch's batches, a function of (seed, epoch) alone: exact resume."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    noise = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 1_000_000_007)  # the items drawn do not depend on inputs
    n_s, n_i = len(latents["y_speech"]), len(latents["y_image"])

    def take(name: str, idx: torch.Tensor) -> torch.Tensor:
        z = latents[f"z_{name}"][idx]
        if cfg.inputs == "sample":
            z = z + torch.randn(z.shape, generator=noise) * (0.5 * latents[f"lv_{name}"][idx]).exp()
        return z

    for _ in range(cfg.steps_per_epoch):
        a = torch.randint(0, n_s, (cfg.batch_size,), generator=g)
        b = torch.randint(0, n_i, (cfg.batch_size,), generator=g)
        yield {"z_speech": take("speech", a), "y_speech": latents["y_speech"][a],
               "z_image": take("image", b), "y_image": latents["y_image"][b]}


class BridgeTask(Task):
    """The bridge between two frozen base VAEs, trained on their cached latents."""

    shown = ("loss", "swd")

    def __init__(self, cfg: BridgeTrainConfig, out: Path):
        self.cfg, self.out = cfg, out
        # Bridges trained before the engine keep their config in bridge.yaml.
        if (out / "bridge.yaml").exists() and not (out / "config.yaml").exists():
            self.config_name = "bridge.yaml"

    def load_data(self, trainer) -> None:
        self.latents = base_latents(self.cfg, load_bases(self.cfg), self.out / "latents.pt")
        torch.manual_seed(self.cfg.seed)  # the bridge's initial weights do not depend on what loading drew

    def build(self) -> Bridge:
        self.z_dims = (self.latents["train"]["z_speech"].shape[1], self.latents["train"]["z_image"].shape[1])
        return Bridge(self.cfg.bridge, self.z_dims)

    def num_batches(self) -> int:
        return self.cfg.steps_per_epoch

    def batches(self, epoch: int):
        return _epoch_batches(self.latents["train"], self.cfg, epoch)

    def checkpoint_extras(self) -> dict:
        return {"z_dims": list(self.z_dims)}

    def epoch_line(self, m: dict) -> str:
        return f"bridge epoch {m['epoch']}: loss {m['loss']:.4g}, swd {m['swd']:.3g}, {m['minutes']:.2f} min"


def fit(cfg: BridgeTrainConfig, out_dir: str | Path, resume: bool = False, show_progress: bool = True,
        stop_after_batches: int | None = None) -> dict:
    """Train the bridge through the run engine; returns the last epoch's metrics (``{}`` when
    already complete)."""
    out = Path(out_dir)
    return run_task(BridgeTask(cfg, out), out, resume, show_progress, stop_after_batches)


# ---- translation -----------------------------------------------------------------------------


class LoadedBridge:
    """A trained bridge with its two frozen base VAEs: the Python API of cross-modal generation."""

    def __init__(self, bridge_dir: str | Path):
        self.dir = Path(bridge_dir)
        from .run import run_kind

        if run_kind(self.dir) != "bridge":
            raise FileNotFoundError(f"{self.dir}: not a bridge directory (run `pvae-model bridge` first)")
        ck_path = self.dir / "checkpoints" / "last.pt"
        if not ck_path.exists():
            raise FileNotFoundError(f"{ck_path}: the bridge has not been trained yet")
        from .checkpoints import load_checkpoint

        ck = load_checkpoint(ck_path)
        self.cfg = BridgeTrainConfig.from_dict(ck["config"])
        self.epoch = ck["epoch"]
        self.train_minutes = ck["train_seconds"] / 60
        self.model = Bridge(self.cfg.bridge, tuple(ck["z_dims"]))
        self.model.load_state_dict(ck["model"])
        self.model.eval()
        self.bases = load_bases(self.cfg)
        self.translator = Translator(self.model, self.bases.vae_sp, self.bases.vae_im)

    def transfer_speech_to_image(self, x_a: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.translator.transfer_speech_to_image(x_a, lengths)

    def transfer_image_to_speech(self, x_i: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.translator.transfer_image_to_speech(x_i, lengths)


class Translator:
    """A bridge and its two base VAEs: translation both ways (from a bridge directory, through
    :class:`LoadedBridge`, or from a bundle)."""

    def __init__(self, bridge, vae_sp, vae_im):
        self.model, self.vae_sp, self.vae_im = bridge.eval(), vae_sp.eval(), vae_im.eval()

    @torch.no_grad()
    def transfer_speech_to_image(self, x_a: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Spoken digits (padded, CMVN-normalised FBank) -> written digits ``[B, 1, 28, 28]`` in [0, 1]."""
        z1 = self.vae_sp.encode_audio(x_a, lengths)["s"][0]
        return self.vae_im.dec(self.model.transfer(z1, 0, 1)).clamp(0, 1)

    @torch.no_grad()
    def transfer_image_to_speech(self, x_i: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Written digits -> spoken digits ``[B, max(lengths), 80]`` (normalised FBank), of the given lengths."""
        z2 = self.vae_im.encode_image(x_i)["s"][0]
        return self.vae_sp.dec(self.model.transfer(z2, 1, 0), lengths)


def transfer_speech_to_image(bridge_dir, x_a, lengths):
    return LoadedBridge(bridge_dir).transfer_speech_to_image(x_a, lengths)


def transfer_image_to_speech(bridge_dir, x_i, lengths):
    return LoadedBridge(bridge_dir).transfer_image_to_speech(x_i, lengths)

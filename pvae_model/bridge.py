"""``pvae-model bridge``: fit a latent-translation bridge (Tian & Engel, 2019) between a trained
VAE-sp run and a trained VAE-im run, both frozen, and translate across modalities with it.

BRIDGE_DIR/
  bridge.yaml           the resolved BridgeTrainConfig (its presence marks a bridge directory)
  latents.pt            posterior means of both base VAEs on train and test (computed once)
  metrics.jsonl         one line per epoch: every loss term, minutes
  tb/                   TensorBoard events
  checkpoints/last.pt   bridge, optimizer, RNG states, epoch (exact resume at epoch boundaries)

The base models' LSTMs never run while the bridge trains: the latents are computed once.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from pvae_data.config import ConfigMixin, apply_overrides, changed_fields, load_yaml, read_config_file

from .models.bridge import Bridge, BridgeConfig


@dataclass
class BridgeTrainConfig(ConfigMixin):
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
    # What the bridge is trained on: "mean", the base encoders' posterior means (the paper's code);
    # "sample", a fresh draw from each item's base posterior q(z_d | x) at every step.  The spoken
    # digits are few (2,700 training items), and a bridge trained on their means alone learns them
    # by heart (its z' classifier: 99.9 % on train, 93 % on test); the posterior's own noise
    # is data augmentation that the base models already define.  Transfer always uses means.
    inputs: str = "mean"

    def __post_init__(self) -> None:
        if isinstance(self.bridge, dict):
            self.bridge = BridgeConfig.from_dict(self.bridge)
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
    return BridgeTrainConfig.from_dict(apply_overrides(read_config_file(path), overrides))


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
    cmvn_mode: str = "global"  # how the speech base reads FBank (its TrainConfig.cmvn)


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
                      {"vae_sp": c_sp.deviations(), "vae_im": c_im.deviations()}, c_sp.cmvn)


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
        audio = bases.audio if split == "test" else load_audio_split(bases.audio_shards, "train", mode=bases.cmvn_mode)
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


def fit(cfg: BridgeTrainConfig, out_dir: str | Path, resume: bool = False, show_progress: bool = True) -> dict:
    """Train the bridge; returns the last epoch's metrics (``{}`` when already complete)."""
    from tqdm import tqdm

    from .checkpoints import RunIOError, load_checkpoint, save_checkpoint
    from .run import StopSignals, lock_run, log_epoch, run_log, truncate_metrics

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_run(out)  # noqa: F841  (held until fit returns)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    ckpt = out / "checkpoints" / "last.pt"
    if ckpt.exists() and not resume:
        raise FileExistsError(f"{out} already holds a bridge; use --resume to continue it, or another --out")
    if resume and (out / "bridge.yaml").exists():
        saved = BridgeTrainConfig.from_dict(load_yaml((out / "bridge.yaml").read_text(), str(out / "bridge.yaml")))
        diff = changed_fields({**saved.to_dict(), "epochs": 0}, {**cfg.to_dict(), "epochs": 0})
        if diff:
            raise ValueError(f"{out}/bridge.yaml differs from this config in {'; '.join(diff)} "
                             f"(only epochs may change on resume)")
    (out / "bridge.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    bases = load_bases(cfg)
    latents = base_latents(cfg, bases, out / "latents.pt")
    torch.manual_seed(cfg.seed)
    model = Bridge(cfg.bridge, (latents["train"]["z_speech"].shape[1], latents["train"]["z_image"].shape[1]))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # SWD projections
    start, seconds_before = 0, 0.0
    if resume and ckpt.exists():
        ck = load_checkpoint(ckpt)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"]["torch"])
        gen.set_state(ck["rng"]["generator"])
        start, seconds_before = ck["epoch"], ck["train_seconds"]
        truncate_metrics(out / "metrics.jsonl", start)
    if start >= cfg.epochs:
        run_log(out / "bridge.log", f"{out}: already complete ({start} epochs); nothing to do")
        return {}
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    except ImportError:
        writer = None
    t0 = time.perf_counter()
    last: dict = {}
    with StopSignals() as stop:
        bar = tqdm(range(start, cfg.epochs), desc="bridge", disable=not show_progress or not sys.stderr.isatty(),
                   leave=False)
        for epoch in bar:
            model.train()
            sums: dict = {}
            for batch in _epoch_batches(latents["train"], cfg, epoch):
                res = model(batch, generator=gen)
                if not math.isfinite(res.metrics["loss"]):
                    raise RunIOError(f"epoch {epoch + 1}: bridge loss is {res.metrics['loss']}; last good checkpoint {ckpt}")
                opt.zero_grad(set_to_none=True)
                res.loss.backward()
                opt.step()
                for k, v in res.metrics.items():
                    sums[k] = sums.get(k, 0.0) + v / cfg.steps_per_epoch
            seconds = seconds_before + time.perf_counter() - t0
            last = {**sums, "epoch": epoch + 1, "minutes": seconds / 60}
            log_epoch(out / "metrics.jsonl", writer, last)
            save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "config": cfg.to_dict(),
                         "z_dims": list(model.z_dims), "epoch": epoch + 1, "train_seconds": seconds,
                         "rng": {"torch": torch.get_rng_state(), "generator": gen.get_state()}})
            bar.set_postfix(loss=f"{last['loss']:.3g}", swd=f"{last['swd']:.3g}")
            if stop.signal is not None:
                run_log(out / "bridge.log", f"stopped by signal {stop.signal} after epoch {epoch + 1}; checkpoint saved to {ckpt}")
                break
    if writer:
        writer.close()
    return last


# ---- translation -----------------------------------------------------------------------------


class LoadedBridge:
    """A trained bridge with its two frozen base VAEs: the Python API of cross-modal generation."""

    def __init__(self, bridge_dir: str | Path):
        self.dir = Path(bridge_dir)
        cfg_path = self.dir / "bridge.yaml"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path}: not a bridge directory (run `pvae-model bridge` first)")
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

    @torch.no_grad()
    def transfer_speech_to_image(self, x_a: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Spoken digits (padded, CMVN-normalised FBank) -> written digits ``[B, 1, 28, 28]`` in [0, 1]."""
        z1 = self.bases.vae_sp.encode_audio(x_a, lengths)["s"][0]
        return self.bases.vae_im.dec(self.model.transfer(z1, 0, 1)).clamp(0, 1)

    @torch.no_grad()
    def transfer_image_to_speech(self, x_i: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Written digits -> spoken digits ``[B, max(lengths), 80]`` (normalised FBank), of the given lengths."""
        z2 = self.bases.vae_im.encode_image(x_i)["s"][0]
        return self.bases.vae_sp.dec(self.model.transfer(z2, 1, 0), lengths)


def transfer_speech_to_image(bridge_dir, x_a, lengths):
    return LoadedBridge(bridge_dir).transfer_speech_to_image(x_a, lengths)


def transfer_image_to_speech(bridge_dir, x_i, lengths):
    return LoadedBridge(bridge_dir).transfer_image_to_speech(x_i, lengths)


# ---- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_bridge(bridge_dir: str | Path, n_images: int = 1000, seed: int = 0, wav_refs: int = 1) -> dict:
    """``BRIDGE_DIR/eval/``: ``metrics.json`` (transfer accuracy both ways judged by the coherence
    classifiers, the base VAEs' own reconstructions judged the same way (the ceiling), per-class
    diversity of the outputs, round-trip error, training cost), an interpolation grid and the WAVs of written -> spoken digits."""
    import soundfile as sf

    from pvae_data.shards.schema import load_index

    from .eval.audio_synth import fbank_to_wave
    from .data import pad_audio
    from .eval.judge import Judge

    t0 = time.perf_counter()
    lb = LoadedBridge(bridge_dir)
    out = lb.dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    audio, images = lb.bases.audio, lb.bases.images
    judge = Judge.load(lb.bases.audio_shards, lb.bases.image_shards)
    rng = np.random.default_rng(seed)
    x_a, lengths = pad_audio(audio.feats)
    gen_img = lb.transfer_speech_to_image(x_a, lengths)
    s2i = judge.images(gen_img, audio.labels)
    pick = rng.permutation(len(images.labels))[:n_images]
    ref = rng.integers(0, len(audio.labels), len(pick))  # each written digit gets a real utterance's length
    lens = lengths[ref]
    gen_sp = lb.transfer_image_to_speech(images.images[pick], lens)
    i2s = judge.utterances(gen_sp, lens, images.labels[pick])
    from .checkpoints import load_checkpoint

    # The bases' own reconstructions, judged the same way: the ceiling any bridge between them has.
    own_sp = lb.bases.vae_sp.dec(lb.bases.vae_sp.encode_audio(x_a, lengths)["s"][0], lengths)
    own_im = lb.bases.vae_im.dec(lb.bases.vae_im.encode_image(images.images[pick])["s"][0]).clamp(0, 1)
    base_own = {"speech": judge.utterances(own_sp, lengths, audio.labels),
                "image": judge.images(own_im, images.labels[pick])}
    latents = load_checkpoint(lb.dir / "latents.pt")["latents"]["test"]
    z1 = latents["z_speech"]
    rt = lb.model.transfer(z1, 0, 0)
    metrics = {
        "model": "bridge", "epoch": lb.epoch, "purity": {},
        "coherence": {"speech_to_image_prior": s2i, "image_to_speech_prior": i2s,
                      "n_speech_to_image": len(audio.labels), "n_image_to_speech": len(pick), "classifiers": judge.info},
        "base_own_reconstruction": base_own,
        "diversity": _diversity(gen_img, audio.labels, images),
        "round_trip_relative_error": float(((z1 - rt).norm(dim=1) / z1.norm(dim=1).clamp_min(1e-8)).mean()),
        "cost_minutes": {"vae_sp": lb.bases.minutes["speech"], "vae_im": lb.bases.minutes["image"],
                         "bridge": lb.train_minutes},
        "config": lb.cfg.to_dict(),
        "deviations": {**lb.cfg.deviations(),
                       **{f"{base}.{k}": v for base, dev in lb.bases.deviations.items() for k, v in dev.items()}},
        "objective": "bridge",
    }
    _interpolation_grid(lb, latents, out / "bridge_interpolation.png", seed)
    fcfg = load_index(lb.bases.audio_shards)[1]["features"]["fbank"]
    for d in range(10):
        j = int(np.flatnonzero(images.labels[pick] == d)[0]) if (images.labels[pick] == d).any() else None
        if j is None:
            continue
        for r in range(wav_refs):
            wave = fbank_to_wave(gen_sp[j, : lens[j]].numpy(), fcfg, lb.bases.cmvn)
            sf.write(out / f"bridge_written_to_spoken_digit{d}_ref{r}.wav", wave, int(fcfg["sample_rate"]))
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _diversity(gen: torch.Tensor, labels: np.ndarray, images) -> dict:
    """Per intended class, the mean pairwise distance between generated images over that between
    real test images of the class (~0: one template per class; ~1: as varied as real digits), and
    the fraction of generated images whose nearest generated neighbour is a near-copy."""
    ratios, dup = [], 0
    g = gen.flatten(1)
    for d in range(10):
        w = np.flatnonzero(labels == d)
        if len(w) < 2:
            continue
        real = images.images[np.flatnonzero(images.labels == d)[:200]].flatten(1)
        dist = torch.cdist(g[w], g[w])
        ratios.append(float(dist.sum() / (len(w) * (len(w) - 1))) / float(torch.pdist(real).mean()))
        dist.fill_diagonal_(float("inf"))
        dup += int((dist.min(1).values < 0.5).sum())  # L2 over 784 pixels in [0, 1]
    return {"pairwise_distance_ratio": float(np.mean(ratios)) if ratios else 0.0,
            "near_copy_fraction": dup / max(1, len(labels))}


def _interpolation_grid(lb: LoadedBridge, latents: dict, path: Path, seed: int) -> None:
    """Rows: z' interpolated between two spoken test digits (same digit, then different digits),
    decoded as written digits through the bridge and the VAE-im decoder."""
    from .eval.evaluate import _plt

    plt = _plt()
    rng = np.random.default_rng(seed)
    y = latents["y_speech"].numpy()
    pairs = []
    for d in (1, 4, 7):
        w = np.flatnonzero(y == d)
        if len(w) >= 2:
            pairs.append(tuple(rng.choice(w, 2, replace=False)))
    for a, b in ((0, 6), (3, 8), (2, 9)):
        wa, wb = np.flatnonzero(y == a), np.flatnonzero(y == b)
        if len(wa) and len(wb):
            pairs.append((rng.choice(wa), rng.choice(wb)))
    if not pairs:
        return
    steps = torch.linspace(0, 1, 8)[:, None]
    fig, axes = plt.subplots(len(pairs), 8, figsize=(8, len(pairs)), squeeze=False)
    for r, (i, j) in enumerate(pairs):
        za = lb.model.encode(latents["z_speech"][[i, j]], 0)[0]
        zb = za[0:1] * (1 - steps) + za[1:2] * steps
        imgs = lb.bases.vae_im.dec(lb.model.decode(zb, 1)).clamp(0, 1)
        for c in range(8):
            axes[r, c].imshow(imgs[c, 0].numpy(), cmap="gray")
            axes[r, c].axis("off")
        axes[r, 0].set_title(f"{y[i]} → {y[j]}", fontsize=7, loc="left")
    fig.suptitle("bridge: z' interpolated between two spoken digits, decoded as written digits", fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)

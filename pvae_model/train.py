"""Training loop: exact resume, signal-safe checkpoints, NaN guard, TensorBoard, DDP.

What it writes is the run directory of :mod:`pvae_model.run`.
Resume is exact on CPU: the batch order and the image pairing of an epoch are functions of
(seed, epoch) alone, the reparameterisation noise and the negatives come from RNGs whose states
are checkpointed, and a checkpoint taken mid-epoch (SIGINT/SIGTERM) records how many batches of
the epoch are done and the running sums of its metrics.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from pvae_data.config import changed_fields, load_yaml

from .checkpoints import RunIOError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import PairedEpochs, load_audio_split, load_image_split
from .eval.metrics import encode_means, kmeans_purity
from .models import MODALITIES, build_model
from .run import CONFIG, METRICS, TRAIN_LOG, StopSignals, load_cmvn, lock_run, log_epoch, run_log, truncate_metrics


class NonFiniteLoss(RuntimeError):
    pass


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def quick_purity(model, audio_test, image_test, device, modalities=("audio", "image")) -> dict:
    """z_s purity from each unimodal encoder the model has (the baselines' single latent)."""
    means = encode_means(model, audio_test if "audio" in modalities else None,
                         image_test if "image" in modalities else None, device=device)
    out = {}
    if "s_audio" in means:
        out["purity_zs_speech"] = kmeans_purity(means["s_audio"], audio_test.labels)
    if "s_image" in means:
        out["purity_zs_image"] = kmeans_purity(means["s_image"], image_test.labels)
    return out


def quick_generation(model, judge, audio_test, image_test, n_images: int) -> dict:
    """Judged generations for the training curve: ``coh_*`` (cross-modal, prior and reference
    style) and ``gen_*`` (own reconstruction, z_s only, style swapped), on CPU copies."""
    from .eval.judge import COHERENCE_KEYS, generation_checks

    rows = generation_checks(model, judge, audio_test, image_test, n_images=n_images, seed=1)["rows"]
    return {("coh_" if k in COHERENCE_KEYS else "gen_") + k: v for k, v in rows.items()}


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, show_progress: bool = True,
          stop_after_batches: int | None = None) -> dict:
    """Train; returns the last epoch's metrics.  ``stop_after_batches`` simulates an interruption (tests)."""
    trainer = Trainer(cfg, run_dir, resume, show_progress)
    try:
        return trainer.fit(stop_after_batches)
    finally:
        trainer.close()


def _usable_device(name: str) -> "torch.device":
    """``torch.device(name)`` when this machine has it, else a one-line ``ValueError``."""
    if name.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= n:
            raise ValueError(f"device {name}: this machine has {n} CUDA device(s)" + ("" if n else "; use --device cpu"))
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device mps: not available on this machine; use --device cpu")
    return torch.device(name)


class Trainer:
    """One training run, in the steps a reader looks for: ``__init__`` (config, data, model,
    resume), ``fit`` (the epochs), ``train_epoch`` (the steps of one epoch), ``evaluate`` (the
    quick evaluation of the curve) and ``save`` (the checkpoint)."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False, show_progress: bool = True):
        run = self.run = Path(run_dir)
        # Shard paths are saved resolved, so that evaluate/purity/diagnose work from any directory.
        cfg = self.cfg = replace(cfg, audio_shards=str(Path(cfg.audio_shards).resolve()),
                                 image_shards=str(Path(cfg.image_shards).resolve()))
        self.dist = dist = _dist()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
        self.main = self.rank == 0
        self.show_progress = show_progress
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = device = _usable_device(cfg.device)
        self.ckpt_path = run / "checkpoints" / "last.pt"
        self.writer = self._lock = None
        if self.main:
            run.mkdir(parents=True, exist_ok=True)
            self._lock = lock_run(run)  # held until close()
            self._write_config(resume)
        torch.manual_seed(cfg.seed)
        self._load_data()
        try:
            self.model = build_model(cfg.model, cfg.pvae).to(device)
        except (RuntimeError, MemoryError) as e:  # e.g. an allocation far past the machine's memory
            raise ValueError(f"cannot build the {cfg.model} model with these sizes (pvae.hidden "
                             f"{cfg.pvae.hidden}, latents {cfg.pvae.z_shared}/{cfg.pvae.z_audio}/{cfg.pvae.z_image}): "
                             f"{(str(e).splitlines() or [''])[0][:120]}") from None
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
        # ema_decay: the delivered model is a moving average of the trained one (torch's own
        # AveragedModel); checkpoints hold both, evaluate loads the average.
        self.ema = (torch.optim.swa_utils.AveragedModel(self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(
            cfg.ema_decay)) if cfg.ema_decay else None)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1 + self.rank)  # negatives for the contrastive term
        self.start_epoch, self.start_batch, self.start_sums, self.best, self.elapsed_before = 0, 0, {}, -1.0, 0.0
        if resume and self.ckpt_path.exists():
            self._resume()
        elif resume and self.main:
            self.say(f"no checkpoint in {run}; starting from scratch")

    # ---- setup ----------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        if self.main:
            run_log(self.run / TRAIN_LOG, msg)

    def _write_config(self, resume: bool) -> None:
        """Refuse to overwrite a run, or to resume one under a different config; then save it."""
        run, cfg = self.run, self.cfg
        if (run / CONFIG).exists() and not resume and self.ckpt_path.exists():
            raise FileExistsError(f"{run} already holds a run; use --resume to continue it, or another --out")
        if resume and (run / CONFIG).exists():
            saved = TrainConfig.from_dict(load_yaml((run / CONFIG).read_text(), str(run / CONFIG)))
            saved = replace(saved, audio_shards=str(Path(saved.audio_shards).resolve()),  # older runs: relative
                            image_shards=str(Path(saved.image_shards).resolve()))
            diff = changed_fields({**saved.to_dict(), "epochs": 0, "max_minutes": 0},
                                  {**cfg.to_dict(), "epochs": 0, "max_minutes": 0})
            if diff:
                raise ValueError(f"{run}/{CONFIG} differs from this config in {'; '.join(diff)} "
                                 f"(only epochs/max_minutes may change on resume)")
        (run / CONFIG).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def _load_data(self) -> None:
        cfg = self.cfg
        try:
            cmvn = load_cmvn(cfg.audio_shards)
            if cmvn is None and not cfg.allow_no_cmvn and cfg.model != "vae-im":
                raise ValueError(f"{cfg.audio_shards}: the audio shards carry no CMVN statistics (index.json 'cmvn'); "
                                 "re-shard from a finished fbank directory, or set allow_no_cmvn: true")
            audio = load_audio_split(cfg.audio_shards, "train", mode=cfg.cmvn)
            images = load_image_split(cfg.image_shards, "train")
            self.audio_test = load_audio_split(cfg.audio_shards, "test", cmvn=cmvn, mode=cfg.cmvn)
            image_test = load_image_split(cfg.image_shards, "test")
        except (OSError, KeyError) as e:  # h5py: corrupt metadata, truncated file, missing dataset
            raise RunIOError(f"cannot read the shards {cfg.audio_shards} / {cfg.image_shards}: {e}") from None
        fallback = sorted(set(audio.cmvn_fallback) | set(self.audio_test.cmvn_fallback))
        if fallback:
            self.say(f"speaker CMVN: too few frames of statistics for {', '.join(fallback)}; "
                     "their utterances are normalised per utterance")
        if cfg.eval_images and cfg.eval_images < len(image_test.labels):
            idx = np.random.default_rng(0).permutation(len(image_test.labels))[: cfg.eval_images]
            image_test = type(image_test)(image_test.images[idx], image_test.labels[idx], [image_test.keys[i] for i in idx])
        self.image_test = image_test
        self.data = PairedEpochs(audio, images, cfg.batch_size, seed=cfg.seed, rank=self.rank, world_size=self.world,
                                 image_shift=cfg.image_shift, spec_augment=cfg.spec_augment)
        self.judge = None
        if self.main and cfg.model == "pvae" and cfg.eval_every and cfg.eval_coherence and self.device.type == "cpu":
            from .eval.judge import Judge

            self.judge = Judge.load(cfg.audio_shards, cfg.image_shards)  # trained once per dataset, then cached

    def _resume(self) -> None:
        ck = load_checkpoint(self.ckpt_path, map_location=self.device)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        if self.ema is not None:
            self.ema.module.load_state_dict(ck["ema_model"])
            self.ema.n_averaged.fill_(ck["ema_steps"])
        torch.set_rng_state(ck["rng"]["torch"])
        gens = ck["rng"]["generator"]
        self.gen.set_state(gens[self.rank] if isinstance(gens, list) else gens)
        if self.device.type == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"])
        self.start_epoch, self.start_batch, self.start_sums = ck["epoch"], ck["batch"], ck["epoch_sums"]
        self.best, self.elapsed_before = ck.get("best_purity", -1.0), ck.get("train_seconds", 0.0)
        if self.main:
            truncate_metrics(self.run / METRICS, self.start_epoch)

    def _open_writer(self) -> None:
        """TensorBoard (optional at run time): the config as text and as hparams, once per run."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(self.run / "tb"))
        if self.start_epoch == 0 and self.start_batch == 0:
            self.writer.add_text("config", "```\n" + yaml.safe_dump(self.cfg.to_dict(), sort_keys=False) + "```", 0)
            self.writer.add_hparams(_hparams(self.cfg), {}, run_name=".")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # ---- steps ----------------------------------------------------------------------------
    def train_seconds(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.t_start)

    def save(self, epoch: int, batch: int, epoch_sums: dict, path: Path | None = None) -> None:
        """Checkpoint: model, optimizer, every RNG state and the position inside the epoch."""
        dist, gens = self.dist, [self.gen.get_state()]
        if dist:
            gathered = [None] * self.world
            dist.all_gather_object(gathered, self.gen.get_state())
            gens = gathered
        if self.main:
            cuda = self.device.type == "cuda"
            save_checkpoint(path or self.ckpt_path, {
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "config": self.cfg.to_dict(),
                "epoch": epoch, "batch": batch, "epoch_sums": epoch_sums, "best_purity": self.best,
                "train_seconds": self.train_seconds(),
                **({"ema_model": self.ema.module.state_dict(), "ema_steps": int(self.ema.n_averaged)}
                   if self.ema is not None else {}),
                "rng": {"torch": torch.get_rng_state(), "generator": gens if dist else gens[0],
                        "cuda": torch.cuda.get_rng_state() if cuda else None}})

    def train_epoch(self, epoch: int, stop, stop_after_batches: int | None) -> dict | None:
        """The optimiser steps of one epoch (from ``start_batch`` when resuming inside it): the
        epoch's metrics, or None when a signal or ``stop_after_batches`` interrupted it (the
        position is then checkpointed)."""
        from tqdm import tqdm

        cfg, model, dist, device = self.cfg, self.model, self.dist, self.device
        model.train()
        if hasattr(model, "set_epoch"):  # epoch-dependent loss weights (PVAE: private_adv_start)
            model.set_epoch(epoch)
        t_epoch = time.perf_counter()
        n_batches = self.n_batches
        bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True,
                   disable=not (self.show_progress and self.main and sys.stderr.isatty()))
        first = self.start_batch if epoch == self.start_epoch else 0
        bar.update(first)
        sums = self.start_sums if epoch == self.start_epoch else {}
        pairs_epoch = 0
        for b, batch in enumerate(self.data.batches(epoch)):
            if b >= n_batches:
                break
            if b < first:
                continue
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"):
                out = self.net(batch, generator=self.gen)
            if not math.isfinite(out.metrics["loss"]):
                raise NonFiniteLoss(f"epoch {epoch + 1}, batch {b + 1}: loss is {out.metrics['loss']} "
                                    f"(terms: {out.metrics}); the last good checkpoint is {self.ckpt_path}")
            self.opt.zero_grad(set_to_none=True)
            out.loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.opt.step()
            if self.ema is not None:
                self.ema.update_parameters(model)
            n = len(batch["lengths"])
            pairs_epoch += n
            if self.writer is not None and (b + 1) % STEP_LOG_EVERY == 0:  # per-step curve, epochs are few
                step = epoch * n_batches + b + 1
                self.writer.add_scalar("step/loss", out.metrics["loss"], step)
                for k in _SHOWN:
                    if k in out.metrics:
                        self.writer.add_scalar(f"step/{k}", out.metrics[k], step)
            for k, v in out.metrics.items():
                sums[k] = sums.get(k, 0.0) + v * n
            sums["_n"] = sums.get("_n", 0) + n
            bar.update(1)
            shown = {k: f"{v:.3g}" for k, v in out.metrics.items() if k in _SHOWN}
            bar.set_postfix(**shown, pairs_s=f"{pairs_epoch / (time.perf_counter() - t_epoch):.0f}")
            self.done_batches += 1
            interrupted = _agree(stop.signal is not None or (
                stop_after_batches is not None and self.done_batches >= stop_after_batches), dist)
            if interrupted and b + 1 < n_batches:
                self.save(epoch, b + 1, sums)
                bar.close()
                why = f"signal {stop.signal}" if stop.signal else "requested stop"
                self.say(f"stopped by {why} in epoch {epoch + 1} after batch {b + 1}; checkpoint saved to {self.ckpt_path}")
                return None
        bar.close()
        metrics = _reduce(sums, dist)
        metrics.update(epoch=epoch + 1, pairs_per_s=pairs_epoch * self.world / (time.perf_counter() - t_epoch),
                       minutes=self.train_seconds() / 60, padding_fraction=self.data.padding_fraction())
        return metrics

    def evaluate(self) -> dict:
        """The quick evaluation of the training curve: z_s purity, and judged generations (PVAE), of
        the model the run delivers (the moving average with ``ema_decay``, then also the raw
        weights' purity as ``raw_purity_*``)."""
        model = self.ema.module if self.ema is not None else self.model
        m = quick_purity(model, self.audio_test, self.image_test, self.device, MODALITIES[self.cfg.model])
        if self.ema is not None:
            raw = quick_purity(self.model, self.audio_test, self.image_test, self.device, MODALITIES[self.cfg.model])
            m.update({f"raw_{k}": v for k, v in raw.items()})
        if self.judge is not None:
            m.update(quick_generation(model, self.judge, self.audio_test, self.image_test,
                                      self.cfg.eval_coherence_images))
        return m

    def fit(self, stop_after_batches: int | None = None) -> dict:
        cfg, dist, main = self.cfg, self.dist, self.main
        budget_spent = cfg.max_minutes and self.elapsed_before / 60 >= cfg.max_minutes
        if self.start_epoch >= cfg.epochs or (budget_spent and self.start_batch == 0):
            self.say(f"{self.run}: already complete ({self.start_epoch} epochs, {self.elapsed_before / 60:.1f} min); "
                     "nothing to do")
            return {}
        self.net = self.model
        if dist:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if main:
            self._open_writer()
        self.n_batches = self.data.num_batches()
        if dist:  # every rank must run the same number of steps
            n = torch.tensor([self.n_batches])
            dist.all_reduce(n, op=dist.ReduceOp.MIN)
            self.n_batches = int(n)
        self.t_start = time.perf_counter()
        self.done_batches = 0
        last_metrics: dict = {}
        with StopSignals() as stop:
            for epoch in range(self.start_epoch, cfg.epochs):
                metrics = self.train_epoch(epoch, stop, stop_after_batches)
                if metrics is None:
                    return last_metrics
                evaluate = cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs)
                if evaluate and main:
                    metrics.update(self.evaluate())
                if main:
                    log_epoch(self.run / METRICS, self.writer, metrics)
                got = [metrics[k] for k in ("purity_zs_speech", "purity_zs_image") if k in metrics]
                score = sum(got) / len(got) if got else -1.0
                improved = evaluate and score > self.best
                if improved:
                    self.best = score
                self.save(epoch + 1, 0, {})
                if improved and main:
                    save_checkpoint(self.run / "checkpoints" / "best.pt", load_checkpoint(self.ckpt_path))
                last_metrics = metrics
                self.say(_epoch_line(metrics))
                over_time = bool(cfg.max_minutes and self.train_seconds() / 60 >= cfg.max_minutes)
                stopping = _agree(stop.signal is not None or over_time, dist)
                if stopping and epoch + 1 < cfg.epochs:
                    why = "the time budget (max_minutes)" if over_time else "a signal"
                    self.say(f"stopped by {why} after epoch {epoch + 1}; checkpoint saved to {self.ckpt_path}")
                if stopping or (stop_after_batches is not None and self.done_batches >= stop_after_batches):
                    break
        return last_metrics


def _agree(flag: bool, dist) -> bool:
    """Under DDP every rank must stop at the same step (a signal may reach one rank first, and each
    rank reads its own clock), or the others would wait forever in the next all-reduce."""
    if not dist:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _reduce(sums: dict, dist) -> dict:
    keys = sorted(k for k in sums if k != "_n")
    vals = torch.tensor([sums[k] for k in keys] + [sums.get("_n", 0)], dtype=torch.float64)
    if dist:
        dist.all_reduce(vals)
    n = float(vals[-1]) or 1.0
    return {k: float(v) / n for k, v in zip(keys, vals[:-1])}


STEP_LOG_EVERY = 10  # batches between per-step TensorBoard scalars


def _hparams(cfg) -> dict:
    """The config flattened to TensorBoard hparams (numbers, strings and booleans only)."""
    out = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)

    walk(cfg.to_dict(), "")
    return out


_SHOWN = ("loss", "nll_audio", "nll_image", "contrastive", "coherence_audio", "kl")


def _epoch_line(m: dict) -> str:
    terms = ", ".join(f"{k} {m[k]:.3g}" for k in ("nll_audio", "nll_image", "kl", "kl_s", "kl_a", "kl_i",
                                                   "coherence_audio", "coherence_image", "contrastive",
                                                   "kl_unimodal_audio", "kl_unimodal_image") if k in m)
    s = f"epoch {m['epoch']}: loss {m['loss']:.2f} ({terms}), {m['pairs_per_s']:.0f} pairs/s, {m['minutes']:.1f} min"
    if "purity_zs_speech" in m:
        s += f"; z_s purity speech {100 * m['purity_zs_speech']:.2f} %"
    if "purity_zs_image" in m:
        s += f"; z_s purity image {100 * m['purity_zs_image']:.2f} %"
    if "coh_speech_to_image_prior" in m:
        s += (f"; coherence (prior style) speech->image {100 * m['coh_speech_to_image_prior']:.1f} %, "
              f"image->speech {100 * m['coh_image_to_speech_prior']:.1f} %")
    return s

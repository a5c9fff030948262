"""The run engine: the one training loop of every model ``pvae-model`` trains.

A :class:`Task` says *what* is trained (its data, model, optimiser, batches, one step, its quick
evaluation); the :class:`Trainer` says *how*, the same for all: the run lock, the config check on
resume, exact resume (every RNG state and the position inside the epoch are checkpointed),
signal-safe checkpoints mid-epoch, the NaN guard, the time budget, ``metrics.jsonl``,
TensorBoard and DDP.  PVAE and its baselines (:mod:`pvae_model.train`) and
the latent-translation bridge (:mod:`pvae_model.bridge`) are tasks.

The engine reads these fields of the task's config: ``epochs``, ``seed``, ``num_threads``,
and, where the config has them, ``max_minutes``, ``device``, ``eval_every``, ``grad_clip``
and ``bf16`` (off, or cpu, otherwise); ``init_from`` (a trained run whose weights start a
fresh run) and ``train_only`` (the top-level modules that train; the others are frozen).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Iterable

import torch
import yaml

from pvae_data.config import changed_fields, load_yaml

from . import tb
from .checkpoints import init_weights, load_checkpoint, save_checkpoint
from .run import CONFIG, METRICS, TRAIN_LOG, StopSignals, lock_run, log_epoch, run_log, truncate_metrics, usable_device


class NonFiniteLoss(RuntimeError):
    pass


class Task:
    """What one kind of run trains.  Subclasses set ``cfg`` and override what differs."""

    cfg = None  # the run's typed config (a ConfigMixin dataclass)
    config_name = CONFIG  # the file in the run directory that holds ``cfg``
    shown = ("loss",)  # metrics on the progress bar and in the per-step TensorBoard curve
    rate_name = "items_per_s"  # the epoch's throughput, as metrics.jsonl names it

    def load_data(self, trainer: "Trainer") -> None:
        """Read the data, after the run directory is locked and its config written (``trainer``
        gives ``say``, ``main``, ``rank``, ``world`` and ``device``)."""

    def build(self) -> torch.nn.Module:
        raise NotImplementedError

    def optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.cfg.lr)

    def num_batches(self) -> int:
        raise NotImplementedError

    def batches(self, epoch: int) -> Iterable[dict]:
        """The epoch's batches: a function of (seed, epoch) alone, so resume is exact."""
        raise NotImplementedError

    def step(self, net, batch: dict, generator: torch.Generator):
        """One forward pass: an object with ``loss`` (a tensor) and ``metrics`` (floats)."""
        return net(batch, generator=generator)

    def batch_items(self, batch: dict) -> int:
        return len(next(iter(batch.values())))

    def epoch_stats(self) -> dict:
        """Extra figures of the epoch's data (e.g. padding), logged with its metrics."""
        return {}

    def evaluate(self, model, device) -> dict:
        """The quick evaluation of the training curve (every ``eval_every`` epochs)."""
        return {}

    hparam_metrics: tuple = ("loss",)  # the scalars the HParams tab shows beside the config

    def media(self, model, device) -> dict:
        """Generated examples for TensorBoard at each evaluation: ``{"images": {tag: [N, 1, H, W]},
        "audio": {tag: (wave, rate)}}``."""
        return {}

    def score(self, metrics: dict) -> float | None:
        """Higher is better: the checkpoint with the best score is kept as ``best.pt`` (None: no best)."""
        return None

    def checkpoint_extras(self) -> dict:
        """Anything else a checkpoint must hold to load the model without the data."""
        return {}

    def comparable(self, cfg):
        """The config as compared on resume (e.g. paths resolved)."""
        return cfg

    def epoch_line(self, m: dict) -> str:
        return f"epoch {m['epoch']}: loss {m['loss']:.4g}, {m['minutes']:.2f} min"


def _setting(cfg, name: str, default):
    return getattr(cfg, name, default)


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


STEP_LOG_EVERY = 10  # batches between per-step TensorBoard scalars


def freeze_all_but(model: torch.nn.Module, names) -> list[str]:
    """Freeze every top-level module of ``model`` not in ``names`` (all train when it is empty):
    the frozen modules' names. An unknown name is refused, naming the field and the modules."""
    if not names:
        return []
    children = [n for n, _ in model.named_children()]
    unknown = [n for n in names if n not in children]
    if unknown:
        raise ValueError(f"train_only: {', '.join(unknown)} is not a module of this model "
                         f"(its modules: {', '.join(children)})")
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".")[0] in names)
    return [n for n in children if n not in names]


class Trainer:
    """One training run, in the steps a reader looks for: ``__init__`` (lock, config, data, model,
    resume), ``fit`` (the epochs), ``train_epoch`` (the steps of one epoch), ``save`` (the checkpoint)."""

    def __init__(self, task: Task, run_dir: str | Path, resume: bool = False, show_progress: bool = True):
        self.task, cfg = task, task.cfg
        self.cfg = cfg
        run = self.run = Path(run_dir)
        self.dist = dist = _dist()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
        self.main = self.rank == 0
        self.show_progress = show_progress
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = usable_device(_setting(cfg, "device", "cpu"))
        self.ckpt_path = run / "checkpoints" / "last.pt"
        self.writer = self._lock = None
        if self.main:
            run.mkdir(parents=True, exist_ok=True)
            self._lock = lock_run(run)  # held until close()
            self._write_config(resume)
        torch.manual_seed(cfg.seed)
        task.load_data(self)
        self.model = task.build().to(self.device)
        self.frozen = freeze_all_but(self.model, _setting(cfg, "train_only", []))
        self.opt = task.optimizer(self.model.parameters())
        self.gen = torch.Generator().manual_seed(cfg.seed + 1 + self.rank)  # the task's own draws (negatives, projections)
        self.start_epoch, self.start_batch, self.start_sums, self.best, self.elapsed_before = 0, 0, {}, -1.0, 0.0
        if resume and self.ckpt_path.exists():
            self._resume()
        else:
            if resume and self.main:
                self.say(f"no checkpoint in {run}; starting from scratch")
            if _setting(cfg, "init_from", ""):
                self.say(f"weights from {init_weights(self.model, cfg.init_from, self.device)}"
                         + (f"; training only {', '.join(cfg.train_only)}" if self.frozen else ""))

    # ---- setup ----------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        if self.main:
            run_log(self.run / TRAIN_LOG, msg)

    def _write_config(self, resume: bool) -> None:
        """Refuse to overwrite a run, or to resume one under a different config; then save it."""
        run, cfg, path = self.run, self.cfg, self.run / self.task.config_name
        if path.exists() and not resume and self.ckpt_path.exists():
            raise FileExistsError(f"{run} already holds a run; use --resume to continue it, or another --out")
        if resume and path.exists():
            saved = self.task.comparable(type(cfg).from_dict(load_yaml(path.read_text(), str(path))))
            free = {"epochs": 0, "max_minutes": 0}  # what may change on resume
            diff = changed_fields({**saved.to_dict(), **free}, {**self.task.comparable(cfg).to_dict(), **free})
            if diff:
                raise ValueError(f"{path} differs from this config in {'; '.join(diff)} "
                                 f"(only epochs/max_minutes may change on resume)")
        path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def _resume(self) -> None:
        ck = load_checkpoint(self.ckpt_path, map_location=self.device)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"]["torch"])
        gens = ck["rng"]["generator"]
        self.gen.set_state(gens[self.rank] if isinstance(gens, list) else gens)
        if self.device.type == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"])
        self.start_epoch, self.start_batch, self.start_sums = ck["epoch"], ck.get("batch", 0), ck.get("epoch_sums", {})
        self.best = ck.get("best_score", ck.get("best_purity", -1.0))  # best_purity: runs before the engine
        self.elapsed_before = ck.get("train_seconds", 0.0)
        if self.main:
            truncate_metrics(self.run / METRICS, self.start_epoch)

    def _open_writer(self) -> None:
        fresh = self.start_epoch == 0 and self.start_batch == 0
        self.writer = tb.open_writer(self.run / "tb", self.cfg, self.task.hparam_metrics, fresh)

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
                **self.task.checkpoint_extras(),
                "epoch": epoch, "batch": batch, "epoch_sums": epoch_sums, "best_score": self.best,
                "train_seconds": self.train_seconds(),
                "rng": {"torch": torch.get_rng_state(), "generator": gens if dist else gens[0],
                        "cuda": torch.cuda.get_rng_state() if cuda else None}})

    def _optimise(self, batch: dict, where: str):
        """One optimiser step on one batch: the step's output (the NaN guard raises before any update)."""
        cfg, device = self.cfg, self.device
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=_setting(cfg, "bf16", False) and device.type == "cuda"):
            out = self.task.step(self.net, batch, self.gen)
        if not math.isfinite(out.metrics["loss"]):
            raise NonFiniteLoss(f"{where}: loss is {out.metrics['loss']} (terms: {out.metrics}); "
                                f"the last good checkpoint is {self.ckpt_path}")
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if _setting(cfg, "grad_clip", 0.0):
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        return out

    def train_epoch(self, epoch: int, stop, stop_after_batches: int | None) -> dict | None:
        """The optimiser steps of one epoch (from ``start_batch`` when resuming inside it): the
        epoch's metrics, or None when a signal or ``stop_after_batches`` interrupted it (the
        position is then checkpointed)."""
        from tqdm import tqdm

        self.model.train()
        for name in self.frozen:  # frozen modules stay as evaluated (no running statistics, no dropout)
            getattr(self.model, name).eval()
        t_epoch, n_batches, shown = time.perf_counter(), self.n_batches, self.task.shown
        bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False, dynamic_ncols=True,
                   disable=not (self.show_progress and self.main and sys.stderr.isatty()))
        first = self.start_batch if epoch == self.start_epoch else 0
        bar.update(first)
        sums = self.start_sums if epoch == self.start_epoch else {}
        items_epoch = 0
        for b, batch in enumerate(self.task.batches(epoch)):
            if b >= n_batches:
                break
            if b < first:
                continue
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out = self._optimise(batch, f"epoch {epoch + 1}, batch {b + 1}")
            n = self.task.batch_items(batch)
            items_epoch += n
            if self.writer is not None and (b + 1) % STEP_LOG_EVERY == 0:  # per-step curve, epochs are few
                for k in shown:
                    if k in out.metrics:
                        self.writer.add_scalar(f"step/{k}", out.metrics[k], epoch * n_batches + b + 1)
            for k, v in out.metrics.items():
                sums[k] = sums.get(k, 0.0) + v * n
            sums["_n"] = sums.get("_n", 0) + n
            bar.update(1)
            bar.set_postfix(**{k: f"{v:.3g}" for k, v in out.metrics.items() if k in shown},
                            items_s=f"{items_epoch / (time.perf_counter() - t_epoch):.0f}")
            self.done_batches += 1
            interrupted = _agree(stop.signal is not None or (
                stop_after_batches is not None and self.done_batches >= stop_after_batches), self.dist)
            if interrupted and b + 1 < n_batches:
                self.save(epoch, b + 1, sums)
                bar.close()
                why = f"signal {stop.signal}" if stop.signal else "requested stop"
                self.say(f"stopped by {why} in epoch {epoch + 1} after batch {b + 1}; checkpoint saved to {self.ckpt_path}")
                return None
        bar.close()
        metrics = _reduce(sums, self.dist)
        metrics.update({"epoch": epoch + 1, self.task.rate_name: items_epoch * self.world / (time.perf_counter() - t_epoch)})
        metrics.update(minutes=self.train_seconds() / 60, **self.task.epoch_stats())
        return metrics

    def _prepare(self) -> None:
        self.net = self.model
        if self.dist:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.main:
            self._open_writer()
        self.n_batches = self.task.num_batches()
        if self.dist:  # every rank must run the same number of steps
            n = torch.tensor([self.n_batches])
            self.dist.all_reduce(n, op=self.dist.ReduceOp.MIN)
            self.n_batches = int(n)
        self.t_start = time.perf_counter()
        self.done_batches = 0

    def _end_epoch(self, epoch: int, metrics: dict) -> None:
        """Evaluate when due, log, checkpoint (and keep the best)."""
        cfg, main = self.cfg, self.main
        every = _setting(cfg, "eval_every", 0)
        evaluate = every and ((epoch + 1) % every == 0 or epoch + 1 == cfg.epochs)
        if evaluate and main:
            metrics.update(self.task.evaluate(self.model, self.device))
        if main:
            log_epoch(self.run / METRICS, self.writer, metrics)
            if self.writer is not None:
                self.writer.add_scalar("lr", self.opt.param_groups[0]["lr"], epoch + 1)
                if evaluate:
                    tb.write_media(self.writer, self.task.media(self.model, self.device), epoch + 1)
        score = self.task.score(metrics) if evaluate else None
        improved = score is not None and score > self.best
        if improved:
            self.best = score
        self.save(epoch + 1, 0, {})
        if improved and main:
            save_checkpoint(self.run / "checkpoints" / "best.pt", load_checkpoint(self.ckpt_path))
        self.say(self.task.epoch_line(metrics))

    def fit(self, stop_after_batches: int | None = None) -> dict:
        """Train to ``cfg.epochs`` (or the time budget, or a signal); the last epoch's metrics."""
        cfg = self.cfg
        max_minutes = _setting(cfg, "max_minutes", 0.0)
        budget_spent = max_minutes and self.elapsed_before / 60 >= max_minutes
        if self.start_epoch >= cfg.epochs or (budget_spent and self.start_batch == 0):
            self.say(f"{self.run}: already complete ({self.start_epoch} epochs, {self.elapsed_before / 60:.1f} min); "
                     "nothing to do")
            return {}
        self._prepare()
        last_metrics: dict = {}
        with StopSignals() as stop:
            for epoch in range(self.start_epoch, cfg.epochs):
                metrics = self.train_epoch(epoch, stop, stop_after_batches)
                if metrics is None:
                    return last_metrics
                self._end_epoch(epoch, metrics)
                last_metrics = metrics
                over_time = bool(max_minutes and self.train_seconds() / 60 >= max_minutes)
                stopping = _agree(stop.signal is not None or over_time, self.dist)
                if stopping and epoch + 1 < cfg.epochs:
                    why = "the time budget (max_minutes)" if over_time else "a signal"
                    self.say(f"stopped by {why} after epoch {epoch + 1}; checkpoint saved to {self.ckpt_path}")
                if stopping or (stop_after_batches is not None and self.done_batches >= stop_after_batches):
                    break
        return last_metrics


def run_task(task: Task, run_dir, resume: bool = False, show_progress: bool = True,
             stop_after_batches: int | None = None) -> dict:
    """Train ``task`` in ``run_dir``; the last epoch's metrics ({} when already complete).
    ``stop_after_batches`` simulates an interruption (tests)."""
    trainer = Trainer(task, run_dir, resume, show_progress)
    try:
        return trainer.fit(stop_after_batches)
    finally:
        trainer.close()


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

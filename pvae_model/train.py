"""Training loop: exact resume, signal-safe checkpoints, NaN guard, TensorBoard, DDP.

RUN_DIR/
  config.yaml             the resolved TrainConfig
  metrics.jsonl           one line per epoch: every loss term, pairs/s, minutes, purity when evaluated
  tb/                     TensorBoard events (same numbers)
  checkpoints/last.pt     model, optimizer, all RNG states, epoch and position inside it
  checkpoints/best.pt     the checkpoint with the best mean z_s purity so far

Resume is exact on CPU: the batch order and the image pairing of an epoch are functions of
(seed, epoch) alone, the reparameterisation noise and the negatives come from RNGs whose states
are checkpointed, and a checkpoint taken mid-epoch (SIGINT/SIGTERM) records how many batches of
the epoch are done and the running sums of its metrics.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from pvae_data.config import check_field_types

from .data import PairedEpochs, load_audio_split, load_image_split
from .metrics import encode_means, kmeans_purity
from .models.baselines import MODALITIES, build_model
from .models.pvae import PVAEConfig


@dataclass
class TrainConfig:
    audio_shards: str = "exp/shards/audio"
    image_shards: str = "exp/shards/images"
    model: str = "pvae"
    pvae: PVAEConfig = field(default_factory=PVAEConfig)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple = (0.95, 0.999)
    eps: float = 1e-8
    grad_clip: float = 0.0  # 0 = off
    seed: int = 0
    eval_every: int = 5  # quick z_s purity on the test split every N epochs (0 = never)
    eval_images: int = 2000  # test images used by the quick purity (all in `pvae-model evaluate`)
    # PVAE only: the quick evaluation also judges generations (coherence with prior and reference
    # style, own reconstructions) on eval_coherence_images test images and every spoken test digit,
    # with the cached judge classifiers (trained once per dataset before the clock starts).
    eval_coherence: bool = True
    eval_coherence_images: int = 300
    device: str = "cpu"
    bf16: bool = True  # autocast to bfloat16 on CUDA
    num_threads: int = 0  # torch intra-op threads (0 = torch's default)
    max_minutes: float = 0.0  # stop cleanly after this much training time (0 = no limit)
    # Audio shards without global CMVN statistics would be trained on raw FBank (losses ~30x
    # larger, a different model): refused unless this says it is meant.
    allow_no_cmvn: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.pvae, dict):
            self.pvae = PVAEConfig.from_dict(self.pvae)
        check_field_types(self)
        self.betas = tuple(self.betas)
        if self.model not in MODALITIES:
            raise ValueError(f"unknown model {self.model!r} (available: {', '.join(MODALITIES)})")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError("epochs >= 1, batch_size >= 2 and lr > 0 are required")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["pvae"]["image_channels"] = list(self.pvae.image_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**d)


def apply_overrides(d: dict, overrides: dict | None) -> dict:
    """``{"epochs": 3, "pvae.beta": 0}``-style dotted overrides applied to a nested config dict."""
    for key, value in (overrides or {}).items():
        cur = d
        *parents, last = key.split(".")
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[last] = value
    return d


def load_config(path: str | Path | None, overrides: dict | None = None) -> TrainConfig:
    """YAML file (optional) + ``{"epochs": 3, "pvae.beta": 0}``-style overrides."""
    d = yaml.safe_load(Path(path).read_text()) if path else {}
    return TrainConfig.from_dict(apply_overrides(d or {}, overrides))


class NonFiniteLoss(RuntimeError):
    pass


class RunIOError(RuntimeError):
    """A file of the run or of its data could not be written or read: the message names the file."""


class _Stop:
    """Turns SIGINT/SIGTERM into a flag checked between batches."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _plain(x):
    """``x`` with numpy scalars and arrays turned into Python numbers and tensors, so that
    ``torch.load(path, weights_only=True)`` (torch's default since 2.6) reads every checkpoint."""
    if type(x) is dict:  # not the OrderedDict of a state_dict: its tensors are fine, its _metadata must stay
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return x


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint written by this package, read with ``weights_only=True``; checkpoints from
    before plain types were enforced (numpy scalars inside) are read the old way."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        return torch.load(path, map_location=map_location, weights_only=False)


def _save(path: Path, state: dict) -> None:
    """Write to a temporary name, then rename: a full disk or a kill leaves the previous
    checkpoint intact, and the temporary file is removed on failure."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_plain(state), tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports ENOSPC as RuntimeError
        tmp.unlink(missing_ok=True)
        raise RunIOError(f"{path}: cannot write the checkpoint ({e}); the previous one is kept") from None


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
    from .judge import COHERENCE_KEYS, generation_checks

    rows = generation_checks(model, judge, audio_test, image_test, n_images=n_images, seed=1)["rows"]
    return {("coh_" if k in COHERENCE_KEYS else "gen_") + k: v for k, v in rows.items()}


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, show_progress: bool = True,
          stop_after_batches: int | None = None) -> dict:
    """Train; returns the last epoch's metrics.  ``stop_after_batches`` simulates an interruption (tests)."""
    from tqdm import tqdm

    run = Path(run_dir)
    # Shard paths are saved resolved, so that evaluate/purity/diagnose work from any directory.
    cfg = replace(cfg, audio_shards=str(Path(cfg.audio_shards).resolve()),
                  image_shards=str(Path(cfg.image_shards).resolve()))
    dist = _dist()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    main = rank == 0
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = torch.device(cfg.device)
    ckpt_path = run / "checkpoints" / "last.pt"
    lock = None  # held until train() returns
    if main:
        run.mkdir(parents=True, exist_ok=True)
        lock = _lock_run(run)
        if (run / "config.yaml").exists() and not resume and ckpt_path.exists():
            raise FileExistsError(f"{run} already holds a run; use --resume to continue it, or another --out")
        if resume and (run / "config.yaml").exists():
            saved = TrainConfig.from_dict(yaml.safe_load((run / "config.yaml").read_text()))
            saved = replace(saved, audio_shards=str(Path(saved.audio_shards).resolve()),  # older runs: relative
                            image_shards=str(Path(saved.image_shards).resolve()))
            if {**saved.to_dict(), "epochs": 0, "max_minutes": 0} != {**cfg.to_dict(), "epochs": 0, "max_minutes": 0}:
                raise ValueError(f"{run}/config.yaml differs from this config (only epochs/max_minutes may change on resume)")
        (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def say(msg: str) -> None:
        if main:
            run_log(run / TRAIN_LOG, msg)

    torch.manual_seed(cfg.seed)
    try:
        if _cmvn(cfg.audio_shards) is None and not cfg.allow_no_cmvn and cfg.model != "vae-im":
            raise ValueError(f"{cfg.audio_shards}: the audio shards carry no CMVN statistics (index.json 'cmvn'); "
                             "re-shard from a finished fbank directory, or set allow_no_cmvn: true")
        audio = load_audio_split(cfg.audio_shards, "train")
        images = load_image_split(cfg.image_shards, "train")
        audio_test = load_audio_split(cfg.audio_shards, "test", cmvn=_cmvn(cfg.audio_shards))
        image_test = load_image_split(cfg.image_shards, "test")
    except (OSError, KeyError) as e:  # h5py: corrupt metadata, truncated file, missing dataset
        raise RunIOError(f"cannot read the shards {cfg.audio_shards} / {cfg.image_shards}: {e}") from None
    if cfg.eval_images and cfg.eval_images < len(image_test.labels):
        idx = np.random.default_rng(0).permutation(len(image_test.labels))[: cfg.eval_images]
        image_test = type(image_test)(image_test.images[idx], image_test.labels[idx], [image_test.keys[i] for i in idx])
    data = PairedEpochs(audio, images, cfg.batch_size, seed=cfg.seed, rank=rank, world_size=world)
    judge = None
    if main and cfg.model == "pvae" and cfg.eval_every and cfg.eval_coherence and device.type == "cpu":
        from .judge import Judge

        judge = Judge.load(cfg.audio_shards, cfg.image_shards)  # trained once per dataset, then cached

    model = build_model(cfg.model, cfg.pvae).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    gen = torch.Generator().manual_seed(cfg.seed + 1 + rank)  # negatives for the contrastive term
    start_epoch, start_batch, sums, best, elapsed_before = 0, 0, {}, -1.0, 0.0
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, map_location=device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"]["torch"])
        gen.set_state(ck["rng"]["generator"][rank] if isinstance(ck["rng"]["generator"], list) else ck["rng"]["generator"])
        if device.type == "cuda" and ck["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"])
        start_epoch, start_batch, sums = ck["epoch"], ck["batch"], ck["epoch_sums"]
        best, elapsed_before = ck.get("best_purity", -1.0), ck.get("train_seconds", 0.0)
        if main:
            _truncate_metrics(run / "metrics.jsonl", start_epoch)
    elif resume and main:
        say(f"no checkpoint in {run}; starting from scratch")

    budget_spent = cfg.max_minutes and elapsed_before / 60 >= cfg.max_minutes
    if start_epoch >= cfg.epochs or (budget_spent and start_batch == 0):
        if main:
            say(f"{run}: already complete ({start_epoch} epochs, {elapsed_before / 60:.1f} min); nothing to do")
        return {}

    net = model
    if dist:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    writer = None
    if main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run / "tb"))
            if start_epoch == 0 and start_batch == 0:  # the config as text and as hparams, once per run
                writer.add_text("config", "```\n" + yaml.safe_dump(cfg.to_dict(), sort_keys=False) + "```", 0)
                writer.add_hparams(_hparams(cfg), {}, run_name=".")
        except ImportError:  # TensorBoard is optional at run time
            writer = None

    def checkpoint(epoch: int, batch: int, epoch_sums: dict, path: Path = ckpt_path) -> None:
        gens = [gen.get_state()]
        if dist:
            gathered = [None] * world
            dist.all_gather_object(gathered, gen.get_state())
            gens = gathered
        if main:
            _save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "config": cfg.to_dict(),
                         "epoch": epoch, "batch": batch, "epoch_sums": epoch_sums, "best_purity": best,
                         "train_seconds": elapsed_before + (time.perf_counter() - t_start),
                         "rng": {"torch": torch.get_rng_state(), "generator": gens if dist else gens[0],
                                 "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}})

    n_batches = data.num_batches()
    if dist:  # every rank must run the same number of steps
        n = torch.tensor([n_batches])
        dist.all_reduce(n, op=dist.ReduceOp.MIN)
        n_batches = int(n)
    t_start = time.perf_counter()
    last_metrics: dict = {}
    done_batches = 0
    with _Stop() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            if hasattr(model, "set_epoch"):  # epoch-dependent loss weights (PVAE: private_adv_start)
                model.set_epoch(epoch)
            t_epoch = time.perf_counter()
            bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True,
                       disable=not (show_progress and main and sys.stderr.isatty()))
            first = start_batch if epoch == start_epoch else 0
            bar.update(first)
            sums = sums if epoch == start_epoch else {}
            pairs_epoch = 0
            for b, batch in enumerate(data.batches(epoch)):
                if b >= n_batches:
                    break
                if b < first:
                    continue
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda"):
                    out = net(batch, generator=gen)
                if not math.isfinite(out.metrics["loss"]):
                    raise NonFiniteLoss(f"epoch {epoch + 1}, batch {b + 1}: loss is {out.metrics['loss']} "
                                        f"(terms: {out.metrics}); the last good checkpoint is {ckpt_path}")
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                n = len(batch["lengths"])
                pairs_epoch += n
                if writer is not None and (b + 1) % STEP_LOG_EVERY == 0:  # per-step curve, epochs are few
                    step = epoch * n_batches + b + 1
                    writer.add_scalar("step/loss", out.metrics["loss"], step)
                    for k in _SHOWN:
                        if k in out.metrics:
                            writer.add_scalar(f"step/{k}", out.metrics[k], step)
                for k, v in out.metrics.items():
                    sums[k] = sums.get(k, 0.0) + v * n
                sums["_n"] = sums.get("_n", 0) + n
                bar.update(1)
                shown = {k: f"{v:.3g}" for k, v in out.metrics.items() if k in _SHOWN}
                bar.set_postfix(**shown, pairs_s=f"{pairs_epoch / (time.perf_counter() - t_epoch):.0f}")
                done_batches += 1
                interrupted = _agree(stop.signal is not None or (
                    stop_after_batches is not None and done_batches >= stop_after_batches), dist)
                if interrupted and b + 1 < n_batches:
                    checkpoint(epoch, b + 1, sums)
                    bar.close()
                    if main:
                        why = f"signal {stop.signal}" if stop.signal else "requested stop"
                        say(f"stopped by {why} in epoch {epoch + 1} after batch {b + 1}; checkpoint saved to {ckpt_path}")
                    return last_metrics
            bar.close()
            metrics = _reduce(sums, dist)
            metrics.update(epoch=epoch + 1, pairs_per_s=pairs_epoch * world / (time.perf_counter() - t_epoch),
                           minutes=(elapsed_before + time.perf_counter() - t_start) / 60,
                           padding_fraction=data.padding_fraction())
            evaluate = cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs)
            if evaluate and main:
                metrics.update(quick_purity(model, audio_test, image_test, device, MODALITIES[cfg.model]))
                if judge is not None:
                    metrics.update(quick_generation(model, judge, audio_test, image_test, cfg.eval_coherence_images))
            if main:
                log_epoch(run / "metrics.jsonl", writer, metrics)
            got = [metrics[k] for k in ("purity_zs_speech", "purity_zs_image") if k in metrics]
            score = sum(got) / len(got) if got else -1.0
            improved = evaluate and score > best
            if improved:
                best = score
            checkpoint(epoch + 1, 0, {})
            if improved and main:
                _save(run / "checkpoints" / "best.pt", load_checkpoint(ckpt_path))
            last_metrics = metrics
            if main:
                say(_epoch_line(metrics))
            over_time = bool(cfg.max_minutes and (elapsed_before + time.perf_counter() - t_start) / 60 >= cfg.max_minutes)
            stopping = _agree(stop.signal is not None or over_time, dist)
            if stopping and main and epoch + 1 < cfg.epochs:
                why = "the time budget (max_minutes)" if over_time else "a signal"
                say(f"stopped by {why} after epoch {epoch + 1}; checkpoint saved to {ckpt_path}")
            if stopping or (stop_after_batches is not None and done_batches >= stop_after_batches):
                break
            sums = {}
    if writer:
        writer.close()
    return last_metrics


TRAIN_LOG = "train.log"


def run_log(path: Path, msg: str) -> None:
    """Print ``msg`` and append it, time-stamped, to the run's log file: a run directory keeps
    its own story however stdout was redirected."""
    print(msg, flush=True)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
    except OSError:  # the log is a convenience: a full disk is reported by the checkpoint write
        pass


def _cmvn(audio_shards) -> dict | None:
    from pvae_data.shard_reader import load_index

    return (load_index(audio_shards)[1].get("cmvn") or {}).get("global")


def _lock_run(run: Path):
    """An exclusive lock on RUN/.train.lock: a second trainer on the same run directory (a rerun
    started while the first still runs) would interleave checkpoints and metrics lines."""
    f = open(run / ".train.lock", "a+")
    try:
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX: no lock, as before
        return f
    except OSError:
        f.close()
        raise FileExistsError(f"{run} is being trained by another process right now; wait for it or use another --out")
    return f


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


def log_epoch(path: Path, writer, metrics: dict) -> None:
    """One line of ``metrics.jsonl`` and the same scalars in TensorBoard (``writer`` may be None)."""
    with open(path, "a") as f:
        f.write(json.dumps(metrics) + "\n")
    if writer:
        for k, v in metrics.items():
            if k != "epoch":
                writer.add_scalar(k, v, metrics["epoch"])
        writer.flush()


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """On resume, keep the log up to the checkpoint's epoch: drop lines of later epochs (a crash
    between log and checkpoint) and a torn last line (a kill or full disk while appending).
    A damaged line before the last one is not ours to guess about: an error names the file."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    keep = []
    for i, ln in enumerate(lines):
        try:
            epoch = json.loads(ln)["epoch"]
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:
                break
            raise RunIOError(f"{path}: line {i + 1} is not a metrics record; fix or remove it to resume") from None
        if epoch <= epochs_done:
            keep.append(ln)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


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

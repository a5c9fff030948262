"""A run directory: its layout, and everything that reads or writes one (train, bridge, evaluate).

RUN_DIR/
  config.yaml             the resolved config; its ``model`` is the run's kind (bridge.yaml: a bridge
                          trained before the run engine)
  metrics.jsonl           one line per epoch: every loss term, pairs/s, minutes, purity when evaluated
  train.log               what the trainer printed, time-stamped
  tb/                     TensorBoard events (same numbers)
  checkpoints/last.pt     model, optimizer, all RNG states, epoch and position inside it
  checkpoints/best.pt     the checkpoint with the best mean z_s purity so far
  eval/                   ``pvae-model evaluate``: metrics.json, figures, WAVs, report
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import torch

from .checkpoints import RunIOError, checkpoint_path, load_checkpoint
from .config import TrainConfig
from .data import load_audio_split, load_image_split
from .models import REGISTRY

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
TRAIN_LOG = "train.log"


def load_model(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu", expect: str | None = None):
    """(model in eval mode, TrainConfig, checkpoint dict) of a trained run; ``expect`` is the model
    kind the run's config names (a checkpoint of another kind is refused)."""
    path = checkpoint_path(run_dir, checkpoint)
    ck = load_checkpoint(path, map_location=device)
    ck["loaded_from"] = str(path)  # what was read, after any fallback: reported next to the results
    if not isinstance(ck, dict) or not isinstance(ck.get("config"), dict) or "model" not in ck:
        raise RunIOError(f"{path}: not a checkpoint of a pvae-model run (no config or model weights)")
    cfg = TrainConfig.from_dict(ck["config"])
    if expect is not None and expect != cfg.model:
        raise ValueError(f"{path} holds a {cfg.model} model, but {Path(run_dir) / CONFIG} says this run is "
                         f"{expect}: not this run's checkpoint")
    return REGISTRY[cfg.model].from_checkpoint(ck, device), cfg, ck


def run_kind(run_dir) -> str | None:
    """What a run directory holds: its config's ``model`` (pvae, vae-sp, vae-im, jmvae-kl, bridge),
    or None when it holds no run config."""
    if (Path(run_dir) / "bridge.yaml").is_file() and not (Path(run_dir) / CONFIG).is_file():
        return "bridge"
    saved = _run_config(run_dir)
    return None if saved is None else str(saved.get("model", "pvae"))


def load_cmvn(audio_shards) -> dict | None:
    """The audio shards' global CMVN statistics (``index.json`` "cmvn"), or None."""
    from pvae_data.shards.schema import load_index

    return (load_index(audio_shards)[1].get("cmvn") or {}).get("global")


def load_fbank_config(audio_shards) -> dict:
    """The FBank configuration the audio shards' features were computed with (``index.json``
    "features" -> "fbank"): what a front end, a vocoder or a warp of the Mel axis must match."""
    from pvae_data.shards.schema import load_index

    return load_index(audio_shards)[1]["features"]["fbank"]


def load_vad_config(audio_shards) -> dict:
    """The VAD config the audio shards' utterances were trimmed with (``index.json`` "trim", which
    the shard stage finds up the stages' lineage): a front end trims a new recording the same way.
    Shards made before it was recorded, or from features with no trim stage upstream, get the
    trim stage's defaults."""
    from pvae_data.shards.schema import load_index
    from pvae_data.vad import VadConfig

    root, index = load_index(audio_shards)
    trim = index.get("trim")
    if trim is None:
        return VadConfig().to_dict()
    try:
        return VadConfig.from_dict(trim).to_dict()
    except (ValueError, TypeError, AttributeError) as e:  # a shard set from elsewhere: name the file and field
        raise ValueError(f"{root / 'index.json'}: \"trim\": {e}") from None


def shard_dir(run_dir, name: str, saved: str, override: str | None = None, source: str | None = None) -> str:
    """Where a run's ``name`` shards are: ``override`` when given, else the path saved in its
    config, as saved (runs since the paths are stored resolved) or relative to the run directory's
    parent (older runs stored the path relative to the cwd of ``train``)."""
    flag = f"--{name.replace('_', '-')}"
    if override is not None:
        if not Path(override).is_dir():
            raise FileNotFoundError(f"{flag} {override}: no such directory")
        return str(override)
    for cand in (Path(saved), Path(run_dir).resolve().parent / saved):
        if cand.is_dir():
            return str(cand)
    source = source or str(Path(run_dir) / CONFIG)
    raise FileNotFoundError(f"{saved}: the {name.replace('_', ' ')} named in {source} do not exist "
                            f"from {Path.cwd()}; pass {flag} DIR (or edit {Path(run_dir) / CONFIG})")


def load_run(run_dir, checkpoint: str = "best", device: str = "cpu", audio_shards: str | None = None,
             image_shards: str | None = None):
    """(checkpoint dict, TrainConfig, model in eval mode, test AudioSet, test ImageSet, global CMVN).

    ``checkpoint`` is "best" or "last" (best falls back to last, with a warning) or a path to a
    ``.pt`` file; ``audio_shards`` / ``image_shards`` override the shard paths.  The shard paths
    are read from ``RUN/config.yaml`` (the file a user edits after moving the shards; the
    checkpoint's copy only when it is missing).  A checkpoint of another kind of model than the
    run's config names is refused."""
    saved = _run_config(run_dir)
    if (saved or {}).get("model") == "bridge" or run_kind(run_dir) == "bridge":
        raise ValueError(f"{run_dir} is a bridge run: `pvae-model evaluate` judges it; this command reads "
                         "PVAE and baseline runs")
    model, cfg, ck = load_model(run_dir, checkpoint, device, expect=(saved or {}).get("model", "pvae")
                                if saved is not None else None)
    src, where = (saved, None) if saved is not None else (cfg.to_dict(), f"the checkpoint {ck['loaded_from']}")
    cfg = replace(cfg, audio_shards=shard_dir(run_dir, "audio_shards", str(src.get("audio_shards")), audio_shards, where),
                  image_shards=shard_dir(run_dir, "image_shards", str(src.get("image_shards")), image_shards, where))
    cmvn = load_cmvn(cfg.audio_shards)
    audio = load_audio_split(cfg.audio_shards, "test", cmvn=cmvn, mode=cfg.cmvn, floor_db=cfg.fbank_floor_db)
    images = load_image_split(cfg.image_shards, "test")
    return ck, cfg, model, audio, images, cmvn


def _run_config(run_dir) -> dict | None:
    """``RUN/config.yaml`` as a dict (None when the run has none), read strictly."""
    from pvae_data.config import load_yaml

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    d = load_yaml(path.read_text(encoding="utf-8", errors="replace"), str(path))
    if not isinstance(d, dict):
        raise ValueError(f"{path}: not a mapping of config fields")
    return d


def usable_device(name: str) -> "torch.device":
    """``torch.device(name)`` when this machine has it, else a one-line ``ValueError``."""
    if name.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= n:
            raise ValueError(f"device {name}: this machine has {n} CUDA device(s)" + ("" if n else "; use --device cpu"))
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device mps: not available on this machine; use --device cpu")
    return torch.device(name)


def run_log(path: Path, msg: str) -> None:
    """Print ``msg`` and append it, time-stamped, to the run's log file: a run directory keeps
    its own story however stdout was redirected."""
    print(msg, flush=True)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
    except OSError:  # the log is a convenience: a full disk is reported by the checkpoint write
        pass


def lock_run(run: Path):
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


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag checked between batches, so a stop always ends on a
    checkpoint."""

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


def log_epoch(path: Path, writer, metrics: dict) -> None:
    """One line of ``metrics.jsonl`` and the same scalars in TensorBoard (``writer`` may be None)."""
    with open(path, "a") as f:
        f.write(json.dumps(metrics) + "\n")
    if writer:
        for k, v in metrics.items():
            if k != "epoch":
                writer.add_scalar(k, v, metrics["epoch"])
        writer.flush()


def truncate_metrics(path: Path, epochs_done: int) -> None:
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

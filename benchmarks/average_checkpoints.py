"""Checkpoint averaging after training (icefall's ``--avg``), an experiment, not a feature: the
weights of snapshots a run kept (``RUN/snapshots/epoch-*.pt``, each a copy of ``last.pt``) averaged
element-wise, written as ``OUT/checkpoints/last.pt`` of a copy of the run (config and metrics
copied, snapshots not), so that ``pvae-model evaluate OUT --checkpoint last`` and the benchmarks
score the average exactly as they score a trained run.

    PYTHONPATH=. python benchmarks/average_checkpoints.py RUN OUT [--first 40]

Integer buffers (a step counter) and everything in the checkpoint other than the weights (the
optimizer, the RNG states, the epoch) are the last snapshot's.
"""
import argparse
import shutil
import sys
from pathlib import Path

import torch

from pvae_model.checkpoints import load_checkpoint, save_checkpoint


def average(paths: list[Path]) -> dict:
    """The last checkpoint with its ``model`` weights replaced by the mean over ``paths``."""
    checkpoints = [load_checkpoint(p) for p in paths]
    states, out = [c["model"] for c in checkpoints], checkpoints[-1]
    avg = {}
    for k, last in out["model"].items():
        if torch.is_floating_point(last):
            avg[k] = sum(s[k].double() for s in states).div(len(states)).to(last.dtype)
        else:
            avg[k] = last
    out["model"] = type(out["model"])(avg)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--first", type=int, default=0, help="average snapshots from this epoch on")
    a = ap.parse_args(argv)
    epoch = lambda p: int(p.stem.split("-")[1])  # noqa: E731
    snaps = sorted((p for p in a.run.glob("snapshots/epoch-*.pt") if epoch(p) >= a.first), key=epoch)
    if not snaps:
        sys.exit(f"{a.run}/snapshots: no epoch-*.pt from epoch {a.first} on")
    if a.out.exists():
        sys.exit(f"{a.out} exists")
    shutil.copytree(a.run, a.out, ignore=shutil.ignore_patterns("snapshots", "checkpoints", "eval", "tb"))
    (a.out / "checkpoints").mkdir()
    save_checkpoint(a.out / "checkpoints" / "last.pt", average(snaps))
    print(f"{a.out}: the average of {', '.join(p.stem for p in snaps)}")


if __name__ == "__main__":
    main()

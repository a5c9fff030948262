"""Checkpoint files: written atomically, holding plain types only, found by name.

A leaf module (torch and numpy only), so that the models' ``from_run`` and the run-directory
helpers in :mod:`pvae_model.run` can both use it without importing each other.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import torch


class RunIOError(RuntimeError):
    """A file of the run or of its data could not be written or read: the message names the file."""


def plain(x):
    """``x`` with numpy scalars and arrays turned into Python numbers and tensors, so that
    ``torch.load(path, weights_only=True)`` (torch's default since 2.6) reads every checkpoint."""
    if type(x) is dict:  # not the OrderedDict of a state_dict: its tensors are fine, its _metadata must stay
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(plain(v) for v in x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return x


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint read with ``weights_only=True`` and nothing else: tensors and plain Python
    types load; anything that would need unpickling (a class, a function, a numpy object) is
    refused with a :class:`RunIOError` naming the file, because unpickling a file from elsewhere
    runs whatever code it names.  A trusted old checkpoint is converted once with
    :func:`convert_trusted_checkpoint`.  A truncated or corrupt file is a :class:`RunIOError`
    naming it (a missing one stays ``FileNotFoundError``)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        what = _unsafe_global(str(e))
        raise RunIOError(
            f"{path}: refused: the checkpoint holds {what}, which only unpickling could read, and "
            f"unpickling a file runs code it names; if you made this file yourself, convert it once with "
            f"python -m pvae_model.checkpoints --trust {path}") from None
    except (RuntimeError, EOFError, ValueError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise RunIOError(f"{path}: unreadable checkpoint, truncated or corrupt ({first})") from None


def _unsafe_global(message: str) -> str:
    """The global torch's safe loader refused, from its message (``GLOBAL os.system`` ...)."""
    import re

    m = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"global '?([\w.]+)", message, re.I)
    return f"'{m.group(1)}'" if m else "objects other than tensors and plain types"


def convert_trusted_checkpoint(path: str | Path) -> None:
    """Rewrite a checkpoint **you trust** (it is unpickled, so it runs any code it holds) with plain
    types only, so that :func:`load_checkpoint` reads it.  The command-line form is
    ``python -m pvae_model.checkpoints --trust FILE``."""
    path = Path(path)
    state = torch.load(path, map_location="cpu", weights_only=False)
    save_checkpoint(path, state)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary name, then rename: a full disk or a kill leaves the previous
    checkpoint intact, and the temporary file is removed on failure."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(plain(state), tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports ENOSPC as RuntimeError
        tmp.unlink(missing_ok=True)
        raise RunIOError(f"{path}: cannot write the checkpoint ({e}); the previous one is kept") from None


def checkpoint_path(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """``checkpoint`` is "best", "last" or a path to a ``.pt`` file; "best" falls back to
    ``last.pt`` with a warning on stderr (no evaluation epoch has improved it yet)."""
    if str(checkpoint).endswith(".pt"):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint")
        return path
    path = Path(run_dir) / "checkpoints" / f"{checkpoint}.pt"
    if not path.exists():
        last = Path(run_dir) / "checkpoints" / "last.pt"
        if not last.exists():
            raise FileNotFoundError(f"{path}: no such checkpoint (has {run_dir} been trained?)")
        if checkpoint != "last":
            print(f"warning: {run_dir}: no checkpoints/{checkpoint}.pt (no evaluation epoch improved it yet); "
                  f"using last.pt", file=sys.stderr)
        path = last
    return path


def init_weights(model: torch.nn.Module, source: str, device) -> Path:
    """Load the weights of a trained run (``source``: its directory, for checkpoints/last.pt, or a
    checkpoint file) into ``model``, which must have the same modules and sizes: the file read."""
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise RunIOError(f"init_from: {path} is not a checkpoint")
    saved = load_checkpoint(path, map_location=device)
    state = saved.get("model") if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise RunIOError(f"init_from: {path} holds no model weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # torch's first line is generic; the second names a tensor
        lines = str(e).splitlines() or [""]
        raise ValueError(f"init_from: {path} is a model of other modules or sizes "
                         f"({lines[min(1, len(lines) - 1)].strip()[:160]})") from None
    return path


if __name__ == "__main__":  # python -m pvae_model.checkpoints --trust FILE...
    args = sys.argv[1:]
    if not args or args[0] != "--trust" or len(args) < 2:
        sys.exit("usage: python -m pvae_model.checkpoints --trust FILE... (unpickles each FILE: only files you made)")
    for name in args[1:]:
        convert_trusted_checkpoint(name)
        print(f"{name}: rewritten with plain types; it now loads without unpickling")

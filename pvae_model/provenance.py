"""Where a result came from: the code's commit, the command line, when and where it ran, and the
data it read (the shards' source hashes), written into ``eval/metrics.json``, bundles and the report."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def code_commit() -> str:
    """The git commit of this package's checkout (``+dirty`` with uncommitted changes), or why not."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def shards_hash(shards_dir) -> dict:
    """The shards' own record of their source (index.json's ``source_sha256``) and index.json's sha256."""
    p = Path(shards_dir) / "index.json"
    try:
        raw = p.read_bytes()
        source = json.loads(raw).get("source_sha256")
    except (OSError, ValueError, AttributeError):
        return {"path": str(shards_dir), "index_sha256": None}
    return {"path": str(shards_dir), "source_sha256": source, "index_sha256": hashlib.sha256(raw).hexdigest()}


def provenance(shards: dict | None = None) -> dict:
    """``{"commit", "command", "date", "host", "python", "torch", "data": {name: shards_hash}}``."""
    import torch

    from ._version import __version__

    return {"commit": code_commit(), "version": __version__, "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(),
            "python": platform.python_version(), "torch": torch.__version__,
            "data": {k: shards_hash(v) for k, v in (shards or {}).items() if v}}

"""What every stage shares: a summary that accounts for every input, and a quiet-aware progress bar."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field

from tqdm import tqdm


@dataclass
class StageSummary:
    """kept + rejected == total, always; ``line()`` is what the CLI prints."""

    stage: str
    total: int = 0
    kept: int = 0
    rejected: int = 0
    elapsed_s: float = 0.0
    skipped_done: int = 0  # inputs whose results were already on disk (resumed runs)
    extra: dict = field(default_factory=dict)

    def check(self) -> "StageSummary":
        if self.kept + self.rejected != self.total:
            raise AssertionError(f"{self.stage}: kept {self.kept} + rejected {self.rejected} != total {self.total}")
        return self

    def line(self) -> str:
        s = f"{self.stage}: kept {self.kept}, rejected {self.rejected} of {self.total} in {self.elapsed_s:.1f} s"
        if self.skipped_done:
            s += f" ({self.skipped_done} already done, reused)"
        for k, v in self.extra.items():
            s += f"; {k} {v}"
        return s

    def to_dict(self) -> dict:
        return asdict(self)


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def progress(total: int, desc: str, enabled: bool = True, unit: str = "utt") -> tqdm:
    """A tqdm bar on stderr, silent when disabled or when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or not sys.stderr.isatty(),
                dynamic_ncols=True, leave=False)


def worker_context():
    """Process start method for stage workers: fork on Linux (workers start in milliseconds and
    inherit the imports; the data stages hold no threads or GPU state), spawn elsewhere."""
    import multiprocessing as mp

    return mp.get_context("fork" if sys.platform == "linux" else "spawn")

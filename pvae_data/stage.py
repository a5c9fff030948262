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


@dataclass(frozen=True)
class JobSlice:
    """This process's share of a stage run as one member of a cluster job array.

    Why fixed chunks and ``chunk % num_jobs == index``: the chunks do not depend on N, so members
    never overlap, finished chunks are reused by any later run (another N, or a plain run), and
    the merged output is byte-identical to one full run.  ``num_jobs == 1`` is a plain run: it
    does whatever is not done yet and writes the stage's final outputs (the "merge").
    """

    num_jobs: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        if self.num_jobs < 1:
            raise ValueError(f"--num-jobs must be >= 1, got {self.num_jobs}")
        if not 0 <= self.index < self.num_jobs:
            raise ValueError(f"--job-index must be in 0..{self.num_jobs - 1} (0-based), got {self.index}")

    @property
    def is_member(self) -> bool:
        """True for one member of an array (N > 1): compute its chunks, write no final outputs."""
        return self.num_jobs > 1

    def mine(self, n_chunks: int) -> list[int]:
        """The chunk indices this member owns."""
        return [i for i in range(n_chunks) if i % self.num_jobs == self.index]

    def label(self) -> str:
        """``"1 of 3"``: the summary line prints it as ``job 1 of 3``."""
        return f"{self.index} of {self.num_jobs}"


PLAIN_RUN = JobSlice()

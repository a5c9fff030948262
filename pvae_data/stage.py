"""What every stage shares: a summary that accounts for every input, a quiet-aware progress bar,
the lock on OUT, the worker pool, job-array slices and the one chunk loop (``run_chunks``)."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

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


class StageLocked(RuntimeError):
    """Another stage process is writing the same output directory."""


@contextmanager
def lock_output(out: Path, shared: bool = False):
    """An exclusive lock on ``OUT/.stage.lock`` for the whole run of a stage: two stages writing
    one directory (two ``shard audio`` runs, an ``fbank --overwrite`` beside a running ``fbank``)
    would delete or mix each other's files.  The second is refused with a clear message; the
    lock dies with its process, so a killed stage never leaves it held.  ``shared``: members of
    one job array hold it together (they write disjoint chunks); a plain run still waits for none
    and is refused while any member runs."""
    import fcntl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / ".stage.lock", "a+")
    try:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            raise StageLocked(f"{out} is being written by another pvae-data process right now; "
                              "wait for it to finish, or use another output directory") from None
        yield
    finally:
        f.close()


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


def single_thread_blas():
    """The emissions are one small matrix product per utterance: BLAS threads only contend
    (measured 7x slower with 2 threads on a loaded 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()


def _die_with_parent() -> None:
    """Pool worker initializer: on Linux, ask the kernel to SIGKILL this worker when its parent
    dies (however it dies, SIGKILL included), so a killed stage never leaves orphans behind,
    re-parented to PID 1 and blocked on a pipe.  A no-op elsewhere."""
    if sys.platform.startswith("linux"):
        import ctypes
        import os
        import signal

        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            return
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def worker_pool(max_workers: int):
    """The one process pool every stage uses: ``worker_context()`` workers that die with the
    parent (``_die_with_parent``)."""
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=max_workers, mp_context=worker_context(), initializer=_die_with_parent)


def worker_context():
    """Process start method for stage workers: fork on Linux (workers start in milliseconds and
    inherit the imports; the data stages hold no threads or GPU state), spawn elsewhere."""
    import multiprocessing as mp

    return mp.get_context("fork" if sys.platform == "linux" else "spawn")


@dataclass(frozen=True)
class JobSlice:
    """This process's share of a stage run as one member of a cluster job array.

    Why fixed chunks and ``chunk % array_size == index``: the chunks do not depend on N, so members
    never overlap, finished chunks are reused by any later run (another N, or a plain run), and
    the merged output is byte-identical to one full run.  ``array_size == 1`` is a plain run: it
    does whatever is not done yet and writes the stage's final outputs (the "merge").
    """

    array_size: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        if self.array_size < 1:
            raise ValueError(f"--array-size must be >= 1, got {self.array_size}")
        if not 0 <= self.index < self.array_size:
            raise ValueError(f"--array-index must be in 0..{self.array_size - 1} (0-based), got {self.index}")

    @property
    def is_member(self) -> bool:
        """True for one member of an array (N > 1): compute its chunks, write no final outputs."""
        return self.array_size > 1

    def mine(self, n_chunks: int) -> list[int]:
        """The chunk indices this member owns."""
        return [i for i in range(n_chunks) if i % self.array_size == self.index]

    def label(self) -> str:
        """``"1 of 3"``: the summary line prints it as ``job 1 of 3``."""
        return f"{self.index} of {self.array_size}"


PLAIN_RUN = JobSlice()


# ---- the one chunk loop -------------------------------------------------------------------------

def map_chunks(work: Callable, chunks: Sequence, args: tuple = (), jobs: int = 1) -> Iterator:
    """``work(index, chunk, *args)`` for each ``(index, chunk)`` of ``chunks``, results in order:
    in this process for one job or one chunk, else in the stage worker pool."""
    if jobs <= 1 or len(chunks) <= 1:
        for i, c in chunks:
            yield work(i, c, *args)
        return
    with worker_pool(min(jobs, len(chunks))) as ex:
        yield from ex.map(work, [i for i, _ in chunks], [c for _, c in chunks], *[[a] * len(chunks) for a in args])


@dataclass
class ChunkRun:
    """What :func:`run_chunks` did: the chunks this process owns, each one's results, and how
    many inputs came from chunks already done."""

    owned: list
    results: dict
    reused: int

    def flat(self) -> list:
        """Every owned chunk's results, in manifest order."""
        return [x for i in self.owned for x in self.results[i]]


def run_chunks(chunks: list[list], work: Callable, args: tuple = (), *, done: Callable[[int], Any],
               finish: Callable[[int, Any], Any], job: JobSlice = PLAIN_RUN, jobs: int = 1,
               desc: str = "", show_progress: bool = True) -> ChunkRun:
    """The loop every chunked stage (trim, segment, fbank) runs: the chunks this job owns
    (``job``), minus those ``done(i)`` finds finished (it returns their results, else None), go
    through ``work(i, chunk, *args)`` (in ``jobs`` processes); ``finish(i, result)`` makes each
    durable (a part file, an ark marker) and returns what the merge should read, so computed and
    reused chunks merge to the same bytes.  One bar counts the inputs, reused ones included."""
    owned = job.mine(len(chunks)) if job.is_member else list(range(len(chunks)))
    results = {i: r for i in owned if (r := done(i)) is not None}
    todo = [i for i in owned if i not in results]
    reused = sum(len(chunks[i]) for i in results)
    bar = progress(sum(len(chunks[i]) for i in owned), desc, show_progress)
    bar.update(reused)
    for i, res in zip(todo, map_chunks(work, [(i, chunks[i]) for i in todo], args, jobs)):
        results[i] = finish(i, res)
        bar.update(len(chunks[i]))
    bar.close()
    return ChunkRun(owned, results, reused)


class ChunkParts:
    """Finished chunks of a stage as ``OUT/parts/<stage>.NNNNN.json``: ``{"chunk", "key",
    "results"}``, where ``key`` identifies the inputs and config they were made from; a part whose
    key or length does not match (another config, a truncated write) is recomputed."""

    def __init__(self, out: Path, stage: str, key: str):
        self.dir, self.stage, self.key = Path(out) / "parts", stage, key

    def path(self, index: int) -> Path:
        return self.dir / f"{self.stage}.{index:05d}.json"

    def read(self, index: int, n: int) -> list | None:
        """A finished part's results, or None if absent, unreadable or made for other inputs."""
        try:
            part = json.loads(self.path(index).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(part, dict) or part.get("key") != self.key or len(part.get("results", ())) != n:
            return None
        return part["results"]

    def write(self, index: int, results: list) -> list:
        """Write a chunk's part; returns the results as read back, so that computed and reused
        chunks give the same bytes in the merged outputs."""
        from .io_utils import atomic_open

        # Not write_json: it sorts keys, and the records must keep their field order.
        text = json.dumps({"chunk": index, "key": self.key, "results": [list(x) for x in results]},
                          ensure_ascii=False)
        with atomic_open(self.path(index), "w", encoding="utf-8") as f:
            f.write(text)
        return json.loads(text)["results"]

    def remove_temps(self, job: JobSlice, n_chunks: int) -> None:
        remove_chunk_temps(self.dir, job, n_chunks, lambda i: self.path(i).name)


def remove_chunk_temps(directory: Path, job: JobSlice, n_chunks: int, chunk_name: Callable[[int], str]) -> None:
    """Leftovers of a killed attempt (``.NAME.XXXX.tmp``) in a directory of chunk files: a member
    removes only its own chunks' (``chunk_name(i)``; other members may be writing theirs right
    now), a plain run all of them."""
    from .io_utils import remove_stale_temps

    if job.is_member:
        for i in job.mine(n_chunks):
            for p in Path(directory).glob(f".{chunk_name(i)}.*.tmp"):
                p.unlink(missing_ok=True)
    else:
        remove_stale_temps(directory)

"""The ``perturb`` stage: a segment manifest -> the same manifest plus perturbed training copies.

As Kaldi's ``utils/data/perturb_data_dir_speed.sh`` (speed, Ko et al. 2015) and its ``utt2warp``
(VTLN; VTLP of Jaitly & Hinton 2013 when the warp is drawn per copy): every record of the chosen
splits (``train`` by default; never the test split, whose voices must stay unheard) is written
once as it is and once per factor other than 1.0 as a copy whose

* id and speaker carry the factor as prefix, ``sp0.9-george-3-07`` / ``sp0.9-george``
  (``vtlp1.1-`` for a warp), so per-speaker statistics of a copy never mix with its source's;
* ``speed`` (played that many times faster: duration / speed, every frequency x speed) or
  ``vtln_warp`` (the Mel filters' warp in the ``fbank`` stage) says what to do to it;
* ``perturbed_from`` names its source record.

No audio is written: ``start``/``end`` still select the span of the source file, and the
``fbank`` stage reads that span, then applies the record's ``speed`` and ``vtln_warp``.  The
output is a pure function of the input manifest and the config, so a rerun writes the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigMixin
from ..io_utils import read_jsonl, write_json, write_jsonl
from ..perturb import EDGE_PAD_MAX_S, check_factor
from ..stage import StageSummary, Timer

SEGMENTS = "segments.jsonl"
CONFIG = "perturb_config.json"


@dataclass(frozen=True)
class PerturbConfig(ConfigMixin):
    speed: tuple = (0.9, 1.0, 1.1)  # Kaldi's 3-way speed perturbation; 1.0 = the record itself
    vtlp: tuple = ()  # VTLN warp factors of extra copies, e.g. (0.9, 1.1); empty = none
    splits: tuple = ("train",)  # which records get copies (others pass through unchanged)
    # Each copy whose span was cut at its file's edge (the trim's margin reached the start or the
    # end of the file) gets up to edge_pad_s of white noise there, edge_pad_db under its mean power
    # (each drawn per copy and side from the copy's id): the room a recording keeps around the
    # word when it was not cut close.  0 = none.
    edge_pad_s: float = 0.0
    edge_pad_db: tuple = (35.0, 65.0)

    def __post_init__(self) -> None:
        for name in ("speed", "vtlp", "splits", "edge_pad_db"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = tuple(x for x in v.split(",") if x.strip())
            object.__setattr__(self, name, tuple(v))
        object.__setattr__(self, "speed", tuple(check_factor("speed", f) for f in self.speed))
        object.__setattr__(self, "vtlp", tuple(check_factor("vtlp", f) for f in self.vtlp))
        for name in ("speed", "vtlp"):
            v = getattr(self, name)
            if len(set(v)) != len(v):
                raise ValueError(f"{name}: a factor is given twice: {list(v)}")
        pad = float(self.edge_pad_s)
        if not (0.0 <= pad <= EDGE_PAD_MAX_S):
            raise ValueError(f"edge_pad_s: must be in [0, {EDGE_PAD_MAX_S:g}] s, got {self.edge_pad_s}")
        object.__setattr__(self, "edge_pad_s", pad)
        db = tuple(float(x) for x in self.edge_pad_db)
        if len(db) != 2 or not (0.0 <= db[0] <= db[1] <= 120.0):
            raise ValueError(f"edge_pad_db: expected two levels 0 <= low <= high <= 120 dB, got {list(self.edge_pad_db)}")
        object.__setattr__(self, "edge_pad_db", db)
        if "test" in self.splits:
            raise ValueError("splits: the test split is never perturbed (its voices stay unheard)")


def prefix(kind: str, factor: float) -> str:
    return f"{kind}{factor:g}-"


def perturbed_copies(record: dict, cfg: PerturbConfig) -> list[dict]:
    """The copies of one record (none when its split is not perturbed), in config order."""
    if (record.get("split") or "") not in cfg.splits:
        return []
    out = []
    for kind, field_name, factors in (("sp", "speed", cfg.speed), ("vtlp", "vtln_warp", cfg.vtlp)):
        for f in factors:
            if f == 1.0:
                continue
            p = prefix(kind, f)
            c = {**record, "id": p + record["id"], "speaker": p + str(record.get("speaker") or "unknown"),
                 field_name: f, "perturbed_from": record["id"]}
            if kind == "sp" and record.get("duration") is not None:
                c["duration"] = round(float(record["duration"]) / f, 6)
            pad = _edge_pad(c, record, cfg)
            if pad is not None:
                c["edge_pad"] = pad
                if c.get("duration") is not None:
                    c["duration"] = round(float(c["duration"]) + pad[0] + pad[1], 6)
            out.append(c)
    return out


def _edge_pad(copy: dict, source: dict, cfg: PerturbConfig) -> list | None:
    """``[left_s, right_s, level_db]`` for a copy whose source span reaches its file's start or end
    (a trim whose margin the file cut short), drawn from the copy's id so that a rerun draws the
    same; ``None`` when padding is off or the span lies inside its file (a segment of connected
    digits, whose neighbours are words, not a room)."""
    if cfg.edge_pad_s <= 0:
        return None
    start, end = source.get("start"), source.get("end")
    n, rate = source.get("num_samples"), source.get("sample_rate")
    at_left = start is None or float(start) <= 1e-6  # no start/end: the whole file, edge to edge
    at_right = end is None or bool(n and rate and float(end) >= float(n) / float(rate) - 1e-3)
    if not (at_left or at_right):
        return None
    u = [int.from_bytes(hashlib.sha256(f"edge_pad:{i}:{copy['id']}".encode()).digest()[:8], "big") / 2.0**64
         for i in range(3)]
    lo, hi = cfg.edge_pad_db
    return [round(cfg.edge_pad_s * u[0], 4) if at_left else 0.0,
            round(cfg.edge_pad_s * u[1], 4) if at_right else 0.0, round(lo + (hi - lo) * u[2], 2)]


def perturb_manifest(manifest: str | Path, out_dir: str | Path, cfg: PerturbConfig = PerturbConfig()) -> StageSummary:
    """Write ``segments.jsonl`` (every input record, then its copies), ``rejected.jsonl`` and
    ``perturb_config.json`` in ``out_dir``.  A record that is already a perturbed copy, or whose id
    is missing, is rejected with its reason (kept + rejected = total)."""
    timer = Timer()
    manifest = Path(manifest)
    data = manifest.read_bytes()
    records = read_jsonl(manifest)
    kept, rejected, copies = [], [], 0
    seen = set()
    for r in records:
        if not r.get("id"):
            rejected.append({"id": None, "reason": "record without an id"})
            continue
        if r.get("perturbed_from") or "speed" in r or "vtln_warp" in r or "edge_pad" in r:
            rejected.append({"id": r["id"], "reason": "already perturbed (has perturbed_from/speed/vtln_warp/edge_pad)"})
            continue
        kept.append(r)
        seen.add(r["id"])
    out_records = []
    for r in kept:
        out_records.append(r)
        for c in perturbed_copies(r, cfg):
            if c["id"] in seen:
                raise ValueError(f"{manifest}: perturbed id {c['id']!r} collides with an input id")
            seen.add(c["id"])
            out_records.append(c)
            copies += 1
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "rejected.jsonl", rejected)
    write_json(out / CONFIG, {"config": cfg.to_dict(), "manifest": str(manifest.resolve()),
                              "manifest_sha256": hashlib.sha256(data).hexdigest()})
    write_jsonl(out / SEGMENTS, out_records)  # last: its presence marks a finished run
    return StageSummary("perturb", total=len(records), kept=len(kept), rejected=len(rejected),
                        elapsed_s=timer.elapsed, extra={"copies": copies, "records": len(out_records)}).check()

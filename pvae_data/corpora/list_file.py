"""A list file: CSV/TSV (header with ``path,transcript,speaker`` and optional ``split,id``) or
JSONL with those keys; relative paths are resolved against the list file's directory."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterator

from ..digits import normalize_transcript
from ..ids import id_problem
from .common import SPLITS, Item, abspath


LIST_FORMATS = ("auto", "csv", "tsv", "jsonl")

def list_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    ext = path.suffix.lower()
    if ext in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if ext == ".tsv":
        return "tsv"
    if ext == ".csv":
        return "csv"
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                return "jsonl" if line.lstrip().startswith("{") else "csv"
    return "csv"


def list_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield ``(line, row, error)`` for each entry of the list file."""
    if fmt == "jsonl":
        with open(path, encoding="utf-8-sig") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    yield i, None, f"bad list entry: not valid JSON ({e.msg})"
                    continue
                if not isinstance(row, dict):
                    yield i, None, "bad list entry: not a JSON object"
                    continue
                yield i, row, None
        return
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
        if reader.fieldnames is None:
            return
        reader.fieldnames = [(h or "").strip().lower() for h in reader.fieldnames]
        missing = [k for k in ("path", "transcript", "speaker") if k not in reader.fieldnames]
        if missing:
            raise ValueError(f"{path}: header lacks column(s) {', '.join(missing)} (has {', '.join(reader.fieldnames)})")
        for row in reader:
            if None in row:  # more cells than header columns
                yield reader.line_num, None, f"bad list entry: {len(reader.fieldnames) + len(row[None])} cells for {len(reader.fieldnames)} columns"
                continue
            yield reader.line_num, row, None


def _str_field(row: dict, key: str) -> str:
    v = row.get(key)
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError(f"{key} must be a string")
    return str(v).strip()


def list_item(row: dict, line: int, base: Path) -> Item:
    item = Item(None, line=line)
    try:
        raw_path = _str_field(row, "path")
    except ValueError as e:
        item.reason = f"bad list entry: {e}"
        return item
    if raw_path:
        item.path = abspath(base / os.path.expanduser(raw_path))
    try:
        speaker = _str_field(row, "speaker")
        transcript = _str_field(row, "transcript")
        split = _str_field(row, "split")
        uid = _str_field(row, "id")
    except ValueError as e:
        item.reason = f"bad list entry: {e}"
        return item
    if not raw_path:
        item.reason = "bad list entry: no path"
        return item
    item.speaker = speaker
    item.id = uid or f"{speaker}-{Path(raw_path).stem}"
    item.reason = id_problem(speaker, "speaker") or id_problem(item.id)
    if item.reason:
        return item
    try:
        item.transcript = " ".join(normalize_transcript(transcript))
    except ValueError as e:
        item.reason = f"bad transcript: {e}"
        return item
    if item.transcript != " ".join(transcript.lower().split()):
        item.notes.append(f"transcript normalised from {transcript!r}")
    split = split.lower()
    if split in ("", "none", "null"):
        item.split = None
    elif split in SPLITS:
        item.split = split
    else:
        item.reason = f"bad split: {split!r} (expected train, test or empty)"
        return item
    if not os.path.exists(item.path):
        item.reason = "file not found"
    return item


def list_items(cfg, out_dir: Path | None = None) -> tuple[list[Item], int]:
    path = Path(cfg.source)
    if not path.is_file():
        raise FileNotFoundError(f"list file {cfg.source!r} not found")
    fmt = list_format(path, cfg.list_format)
    base = path.resolve().parent
    items = []
    for line, row, err in list_rows(path, fmt):
        items.append(Item(None, reason=err, line=line) if err else list_item(row, line, base))
    return items, 0

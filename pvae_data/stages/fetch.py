"""HTTP transfers for ``pvae-data download``: GET with resume (``Range`` on an existing
``.part``), retries with exponential backoff on transient failures, a progress bar, and the
request and byte counts the download report gives."""

from __future__ import annotations

import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from .. import __version__

_BLOCK = 1 << 20


class DownloadError(RuntimeError):
    """A transfer that failed for good (after retries, on every URL); the message says why."""


class _Transient(Exception):
    """Worth retrying: connection refused/reset/cut, timeout, HTTP 5xx/429."""


class _Permanent(Exception):
    """Not worth retrying on this URL: HTTP 404 and other client errors."""


@dataclass
class DownloadOptions:
    """How hard to try.  ``backoff_s`` doubles after each failed attempt (capped at 60 s)."""

    retries: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    show_progress: bool = True




class Fetcher:
    """HTTP GET with resume, retries and a progress bar; counts requests and bytes for the report."""

    def __init__(self, opts: DownloadOptions, report) -> None:
        self.opts, self.report = opts, report

    def fetch(self, urls: Sequence[str], part: Path, label: str) -> None:
        """Make ``part`` the complete content of the first of ``urls`` that delivers it."""
        part.parent.mkdir(parents=True, exist_ok=True)
        errors = []
        for url in urls:
            last: Exception | None = None
            for attempt in range(self.opts.retries + 1):
                if attempt:
                    time.sleep(min(self.opts.backoff_s * 2 ** (attempt - 1), 60.0))
                try:
                    self._transfer(url, part, label)
                    return
                except _Permanent as e:
                    last = e
                    break
                except _Transient as e:
                    last = e
                    if self.opts.show_progress and attempt < self.opts.retries:
                        print(f"{label}: {e}; retrying", file=sys.stderr)
            errors.append(f"{url}: {last}" + ("" if isinstance(last, _Permanent)
                                             else f" (after {self.opts.retries + 1} attempts)"))
        kept = f"; {part.stat().st_size} bytes kept in {part}, a rerun resumes" if part.exists() else ""
        raise DownloadError(f"{label}: download failed: " + "; ".join(errors) + kept +
                            ". If offline: copy the files into place (docs/cli.md) or point --url to a mirror.")

    def _transfer(self, url: str, part: Path, label: str) -> None:
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": f"pvae-data/{__version__}", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        self.report.requests += 1
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.opts.timeout_s)
        except urllib.error.HTTPError as e:
            code, content_range = e.code, e.headers.get("Content-Range", "")
            e.close()
            if code == 416 and have:  # nothing left to send: complete if the sizes agree
                m = re.match(r"bytes \*/(\d+)", content_range)
                if m and int(m.group(1)) == have:
                    return
                part.unlink()
                raise _Transient("the server refused to resume; starting over") from None
            if code in (408, 425, 429) or code >= 500:
                raise _Transient(f"HTTP {code}") from None
            raise _Permanent(f"HTTP {code}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise _Transient(f"cannot connect ({reason})") from None
        with resp:
            total: int | None
            if resp.status == 206:
                m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != have:
                    part.unlink()
                    raise _Transient("the server resumed at another offset; starting over")
                total = int(m.group(3)) if m.group(3) != "*" else None
                mode = "ab"
            else:  # 200: the whole file (a server that ignores Range sends it again from byte 0)
                have = 0
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                mode = "wb"
            got = 0
            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                       disable=not self.opts.show_progress or not sys.stderr.isatty(), leave=False,
                       dynamic_ncols=True)
            try:
                with open(part, mode) as f:  # local errors (disk full) propagate: no retry helps
                    while True:
                        try:
                            block = resp.read(_BLOCK)
                        except (http.client.HTTPException, OSError) as e:  # IncompleteRead, reset, timeout
                            raise _Transient(f"transfer cut at {have + got} bytes ({type(e).__name__})") from None
                        if not block:
                            break
                        f.write(block)
                        got += len(block)
                        bar.update(len(block))
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                bar.close()
                self.report.bytes_downloaded += got
        if total is not None and have + got != total:
            raise _Transient(f"transfer cut at {have + got} of {total} bytes")

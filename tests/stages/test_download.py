"""`pvae-data download` against a real HTTP server on 127.0.0.1 serving the real FSDD / MNIST files.

The server (http.server in a thread) implements ``Range`` itself, logs every request, and can cut
a response part-way (an interrupted transfer), ignore ``Range`` (a server that cannot resume) or
serve altered content (a corrupted mirror).  Nothing is mocked: the downloader talks HTTP to it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from pvae_data.cli import main as data_main
from pvae_data.stages.download import FSDD_CHECKSUMS, MNIST_CHECKSUMS, read_checksums
from pvae_data.mnist import read_idx

from conftest import DATA_ROOT

REPO = Path(__file__).resolve().parents[2]
MNIST_DIR = DATA_ROOT / "mnist"
ARCHIVE_PATH = "/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
TOP = "free-spoken-digit-dataset-1.0.10"  # GitHub's top directory for tag v1.0.10
SUBSET = [f"{d}_{spk}_{t}.wav" for spk in ("george", "theo", "yweweler") for d, t in ((0, 0), (4, 17), (9, 49))]


@dataclass
class Server:
    """What the test HTTP server serves and what it saw."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    log: list[tuple[str, str | None, int]] = field(default_factory=list)  # (path, Range header, status)
    cut: dict[str, int] = field(default_factory=dict)  # path -> send only this many body bytes, once
    ignore_range: bool = False


@pytest.fixture
def server():
    state = Server()

    class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: one request per connection, closed after it
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            rng = self.headers.get("Range")
            data = state.files.get(path)
            if data is None:
                state.log.append((path, rng, 404))
                self.send_error(404)
                return
            start, status = 0, 200
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m and not state.ignore_range:
                start = int(m.group(1))
                if start >= len(data):
                    state.log.append((path, rng, 416))
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            state.log.append((path, rng, status))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            n = state.cut.pop(path, None)
            self.wfile.write(body if n is None else body[:n])  # a cut response: the connection just closes

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def fsdd_archive(recordings: Path, names: list[str], corrupt: str | None = None) -> bytes:
    """A tar.gz in GitHub's archive layout with the given real recordings (+ files to be ignored)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"{TOP}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("README.md", b"# Free Spoken Digit Dataset\n")
        add("utils/trimmer.py", b"print('not installed')\n")
        for n in names:
            data = (recordings / n).read_bytes()
            if n == corrupt:  # flip the bytes of some samples: still a valid WAV, other content
                data = data[:100] + bytes(b ^ 0xFF for b in data[100:110]) + data[110:]
            add(f"recordings/{n}", data)
    return buf.getvalue()


def subset_checksums(tmp_path: Path, names: list[str]) -> Path:
    full = read_checksums(FSDD_CHECKSUMS)
    p = tmp_path / "subset.sha256"
    p.write_text("".join(f"{full['recordings/' + n]}  recordings/{n}\n" for n in names))
    return p


def run(*args: str):
    return CliRunner().invoke(data_main, ["download", *args, "--backoff", "0", "-q"])


@pytest.fixture(scope="session")
def mnist_files() -> dict[str, bytes]:
    if not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"MNIST not found at {MNIST_DIR}")
    return {p.name: p.read_bytes() for p in sorted(MNIST_DIR.glob("*.gz"))}


def test_shipped_checksum_lists_are_the_documented_corpus():
    """The FSDD list is byte-for-byte `find recordings -name '*.wav' | sort | xargs sha256sum`,
    whose digest the data README publishes; MNIST lists the four IDX files."""
    fsdd = read_checksums(FSDD_CHECKSUMS)
    assert len(fsdd) == 3000 and all(k.startswith("recordings/") for k in fsdd)
    assert hashlib.sha256(FSDD_CHECKSUMS.read_bytes()).hexdigest() == \
        "04e1baae96c6a26e39c623f2b01d0182ddae627ba0ac02a3cdc17ba2af99fd9b"
    assert list(read_checksums(MNIST_CHECKSUMS)) == ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def test_fsdd_subset_installs_verified_and_rerun_is_offline(tmp_path, server, fsdd_recordings):
    server.files[ARCHIVE_PATH] = fsdd_archive(fsdd_recordings, SUBSET)
    sums = subset_checksums(tmp_path, SUBSET)
    r = run("fsdd", str(tmp_path / "d"), "--url", server.url + ARCHIVE_PATH, "--checksums", str(sums))
    assert r.exit_code == 0, r.output
    rec = tmp_path / "d" / "fsdd" / "recordings"
    assert sorted(p.name for p in rec.iterdir()) == sorted(SUBSET)
    assert all((rec / n).read_bytes() == (fsdd_recordings / n).read_bytes() for n in SUBSET)
    assert (tmp_path / "d" / "fsdd" / "recordings.completed").exists()
    assert not (tmp_path / "d" / "fsdd" / ".download").exists()  # archive removed once installed
    assert len(server.log) == 1
    # The layout is what `prepare fsdd` reads.
    p = CliRunner().invoke(data_main, ["prepare", "fsdd", str(tmp_path / "d" / "fsdd"), str(tmp_path / "prep"), "-q"])
    assert p.exit_code == 0 and f"kept {len(SUBSET)}, rejected 0" in p.output, p.output
    # A rerun: nothing fetched, nothing changed.
    r = run("fsdd", str(tmp_path / "d"), "--url", server.url + ARCHIVE_PATH, "--checksums", str(sums))
    assert r.exit_code == 0 and "already complete" in r.output and len(server.log) == 1


def test_fsdd_default_list_requires_all_3000(tmp_path, server, fsdd_recordings):
    server.files[ARCHIVE_PATH] = fsdd_archive(fsdd_recordings, SUBSET)
    r = run("fsdd", str(tmp_path / "d"), "--url", server.url + ARCHIVE_PATH)
    assert r.exit_code == 1
    assert "recordings/0_george_1.wav: missing from the archive" in r.output
    assert f"{3000 - len(SUBSET) - 20} more" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "d" / "fsdd" / "recordings.completed").exists()


def test_fsdd_corrupted_recording_is_rejected_then_a_good_mirror_fixes_it(tmp_path, server, fsdd_recordings):
    bad = SUBSET[4]
    server.files[ARCHIVE_PATH] = fsdd_archive(fsdd_recordings, SUBSET, corrupt=bad)
    sums = subset_checksums(tmp_path, SUBSET)
    args = ("fsdd", str(tmp_path / "d"), "--url", server.url + ARCHIVE_PATH, "--checksums", str(sums))
    r = run(*args)
    assert r.exit_code == 1
    assert re.search(rf"recordings/{bad}: sha256 [0-9a-f]{{64}} != expected", r.output), r.output
    assert "failed verification" in r.output and "Traceback" not in r.output
    root = tmp_path / "d" / "fsdd"
    assert not (root / "recordings" / bad).exists() and (root / "rejected" / bad).exists()
    assert not (root / "recordings.completed").exists()
    assert not list((root / ".download").glob("*.tar.gz"))  # the bad archive is not reused
    server.files[ARCHIVE_PATH] = fsdd_archive(fsdd_recordings, SUBSET)
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert (root / "recordings" / bad).read_bytes() == (fsdd_recordings / bad).read_bytes()
    assert (root / "recordings.completed").exists()


def test_mnist_all_four_files_verified_by_content(tmp_path, server, mnist_files):
    """The four real files; train-images has another gzip wrapper than the canonical one and is
    accepted because its uncompressed bytes match."""
    for name, data in mnist_files.items():
        server.files[f"/mnist/{name}"] = data
    r = run("mnist", str(tmp_path / "d"), "--url", server.url + "/mnist/")
    assert r.exit_code == 0, r.output
    out = tmp_path / "d" / "mnist"
    for name, data in mnist_files.items():
        assert (out / name).read_bytes() == data
        marker = json.loads((out / f"{name}.completed").read_text())
        assert marker["gz_canonical"] == (name != "train-images-idx3-ubyte.gz")
    assert read_idx(out / "t10k-images-idx3-ubyte.gz").shape == (10000, 28, 28)
    assert not list(out.glob("*.part"))
    n = len(server.log)
    assert n == 4
    r = run("mnist", str(tmp_path / "d"), "--url", server.url + "/mnist/")
    assert r.exit_code == 0 and "4 already complete" in r.output and len(server.log) == n


def _small_mnist_list(tmp_path: Path, names=("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")) -> Path:
    full = read_checksums(MNIST_CHECKSUMS)
    p = tmp_path / "mnist.sha256"
    p.write_text("".join(f"{full[n]}  {n}\n" for n in names))
    return p


def test_mnist_corrupted_file_is_rejected(tmp_path, server, mnist_files):
    good = "train-labels-idx1-ubyte.gz"
    bad = "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(mnist_files[bad]))
    raw[100] = (raw[100] + 1) % 10  # one label changed, re-gzipped: a valid file with wrong content
    server.files[f"/m/{good}"] = mnist_files[good]
    server.files[f"/m/{bad}"] = gzip.compress(bytes(raw))
    r = run("mnist", str(tmp_path / "d"), "--url", server.url + "/m", "--checksums", str(_small_mnist_list(tmp_path)))
    assert r.exit_code == 1
    assert re.search(rf"{bad}: content sha256 [0-9a-f]{{64}} != expected", r.output), r.output
    out = tmp_path / "d" / "mnist"
    assert not (out / bad).exists() and not (out / f"{bad}.completed").exists() and not (out / f"{bad}.part").exists()
    assert (out / "rejected" / bad).exists()
    assert (out / good).read_bytes() == mnist_files[good] and (out / f"{good}.completed").exists()
    # Not gzip at all (e.g. an HTML error page served with 200): rejected with that reason.
    server.files[f"/m/{bad}"] = b"<html>rate limited</html>"
    r = run("mnist", str(tmp_path / "d"), "--url", server.url + "/m", "--checksums", str(_small_mnist_list(tmp_path)))
    assert r.exit_code == 1 and f"{bad}: not a valid gzip file" in r.output


@pytest.mark.parametrize("ignore_range", [False, True], ids=["resumes", "server-ignores-range"])
def test_interrupted_transfer_is_retried_from_where_it_stopped(tmp_path, server, mnist_files, ignore_range):
    name = "t10k-images-idx3-ubyte.gz"
    server.files[f"/m/{name}"] = mnist_files[name]
    server.cut[f"/m/{name}"] = 700_000
    server.ignore_range = ignore_range
    r = run("mnist", str(tmp_path / "d"), "--url", server.url + "/m",
            "--checksums", str(_small_mnist_list(tmp_path, ["t10k-images-idx3-ubyte"])))
    assert r.exit_code == 0, r.output
    assert server.log[0] == (f"/m/{name}", None, 200)
    # The retry asked for the rest; a server that cannot resume sends it all and the file restarts.
    assert server.log[1] == (f"/m/{name}", "bytes=700000-", 200 if ignore_range else 206)
    assert (tmp_path / "d" / "mnist" / name).read_bytes() == mnist_files[name]


def test_interrupted_run_resumes_on_rerun(tmp_path, server, mnist_files):
    name = "t10k-images-idx3-ubyte.gz"
    server.files[f"/m/{name}"] = mnist_files[name]
    server.cut[f"/m/{name}"] = 500_000
    sums = str(_small_mnist_list(tmp_path, ["t10k-images-idx3-ubyte"]))
    out = tmp_path / "d" / "mnist"
    r = run("mnist", str(tmp_path / "d"), "--url", server.url + "/m", "--checksums", sums, "--retries", "0")
    assert r.exit_code == 1 and "a rerun resumes" in r.output and "Traceback" not in r.output
    assert (out / f"{name}.part").stat().st_size == 500_000
    assert not (out / name).exists() and not (out / f"{name}.completed").exists()  # nothing looks finished
    r = run("mnist", str(tmp_path / "d"), "--url", server.url + "/m", "--checksums", sums, "--retries", "0")
    assert r.exit_code == 0, r.output
    assert server.log[-1] == (f"/m/{name}", "bytes=500000-", 206)
    assert (out / name).read_bytes() == mnist_files[name] and not (out / f"{name}.part").exists()


def test_complete_part_file_is_finished_without_a_body(tmp_path, server, mnist_files):
    """Killed after the last byte but before the rename: the server answers 416 to the resume
    request with the full size, and the .part is verified and put in place."""
    name = "train-labels-idx1-ubyte.gz"
    server.files[f"/m/{name}"] = mnist_files[name]
    out = tmp_path / "d" / "mnist"
    out.mkdir(parents=True)
    (out / f"{name}.part").write_bytes(mnist_files[name])
    r = run("mnist", str(tmp_path / "d"), "--url", server.url + "/m",
            "--checksums", str(_small_mnist_list(tmp_path, ["train-labels-idx1-ubyte"])))
    assert r.exit_code == 0, r.output
    assert server.log == [(f"/m/{name}", f"bytes={len(mnist_files[name])}-", 416)]
    assert (out / name).read_bytes() == mnist_files[name]


def test_files_already_in_place_are_verified_without_network(tmp_path, server, mnist_files):
    """Copied by hand: good files are verified and marked locally; a bad one is set aside and fetched."""
    out = tmp_path / "d" / "mnist"
    out.mkdir(parents=True)
    bad = "t10k-labels-idx1-ubyte.gz"
    for name, data in mnist_files.items():
        (out / name).write_bytes(data if name != bad else data[:-10])
    server.files[f"/m/{bad}"] = mnist_files[bad]
    r = run("mnist", str(tmp_path / "d"), "--url", server.url + "/m")
    assert r.exit_code == 0 and "3 already complete" in r.output, r.output
    assert f"{bad}: the file in place did not verify" in r.output
    assert server.log == [(f"/m/{bad}", None, 200)] and len(list(out.glob("*.completed"))) == 4
    assert (out / bad).read_bytes() == mnist_files[bad] and (out / "rejected" / bad).exists()


def test_mirrors_are_tried_in_order(tmp_path, server, mnist_files):
    name = "t10k-labels-idx1-ubyte.gz"
    server.files[f"/good/{name}"] = mnist_files[name]
    r = run("mnist", str(tmp_path / "d"), "--url", server.url + "/missing", "--url", server.url + "/good",
            "--checksums", str(_small_mnist_list(tmp_path, ["t10k-labels-idx1-ubyte"])))
    assert r.exit_code == 0, r.output
    assert [(p, s) for p, _, s in server.log] == [(f"/missing/{name}", 404), (f"/good/{name}", 200)]


def test_offline_is_a_message_not_a_traceback(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PVAE_MNIST_URL": f"http://127.0.0.1:{port}/mnist/"}
    r = subprocess.run([sys.executable, "-m", "pvae_data.cli", "download", "mnist", str(tmp_path / "d"),
                        "--retries", "1", "--backoff", "0", "-q"], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert "download failed" in r.stderr and "cannot connect" in r.stderr and "(after 2 attempts)" in r.stderr
    assert f"127.0.0.1:{port}/mnist/train-images-idx3-ubyte.gz" in r.stderr  # the env var was used
    assert "Traceback" not in r.stderr


def test_bad_checksum_file_is_a_message(tmp_path):
    p = tmp_path / "bad.sha256"
    p.write_text("abc  recordings/x.wav\n")
    r = run("fsdd", str(tmp_path / "d"), "--checksums", str(p))
    assert r.exit_code == 1 and f"{p}:1: not a sha256sum line" in r.output


@pytest.mark.slow
def test_full_fsdd_archive_installs_the_documented_tree(tmp_path, server, fsdd_recordings):
    """All 3,000 recordings in the official layout, default checksum list: the installed tree has
    the data README's digest of `find recordings -name '*.wav' | sort | xargs sha256sum`."""
    names = sorted(p.name for p in fsdd_recordings.glob("*.wav"))
    server.files[ARCHIVE_PATH] = fsdd_archive(fsdd_recordings, names)
    r = run("fsdd", str(tmp_path / "d"), "--url", server.url + ARCHIVE_PATH)
    assert r.exit_code == 0 and "3000 files verified" in r.output, r.output
    root = tmp_path / "d" / "fsdd"
    listing = "".join(f"{hashlib.sha256((root / 'recordings' / n).read_bytes()).hexdigest()}  recordings/{n}\n"
                      for n in names)
    assert hashlib.sha256(listing.encode()).hexdigest() == \
        "04e1baae96c6a26e39c623f2b01d0182ddae627ba0ac02a3cdc17ba2af99fd9b"


@pytest.mark.slow
def test_recipe_downloads_missing_data_then_prepares_it(tmp_path, server, fsdd_recordings, mnist_files):
    """pipelines/fsdd_mnist.sh with an empty --data: stage 0 downloads FSDD and MNIST (here from the
    local server, via $PVAE_FSDD_URL / $PVAE_MNIST_URL) and prepares all 3,000 recordings; a rerun
    finds the data in place and makes no request."""
    names = sorted(p.name for p in fsdd_recordings.glob("*.wav"))
    server.files[ARCHIVE_PATH] = fsdd_archive(fsdd_recordings, names)
    for name, data in mnist_files.items():
        server.files[f"/mnist/{name}"] = data
    env = {**os.environ, "PVAE_BIN": str(Path(sys.executable).parent),
           "PVAE_FSDD_URL": server.url + ARCHIVE_PATH, "PVAE_MNIST_URL": server.url + "/mnist/"}
    cmd = ["bash", str(REPO / "pipelines" / "fsdd_mnist.sh"), "--stop-stage", "0",
           "--data", str(tmp_path / "data"), "--out", str(tmp_path / "exp")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "download fsdd" in r.stdout and "download mnist" in r.stdout and "kept 3000" in r.stdout
    assert (tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes() == \
        mnist_files["t10k-labels-idx1-ubyte.gz"]
    n = len(server.log)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "download" not in r.stdout and len(server.log) == n

"""Cluster job arrays for `trim` and `fbank`: N members run at the same time into one OUT, a plain
run merges, and the result is byte-identical to one full run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pvae_data.cli import main as data_main
from pvae_data.stages.fbank import FbankStageConfig, compute_features
from pvae_data.io_utils import read_jsonl, write_jsonl
from pvae_data.stage import JobSlice

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def manifest(paths: list[str], path: Path, extra: list[dict] = ()) -> Path:
    recs = []
    for p in paths:
        digit, spk, take = Path(p).stem.split("_")
        recs.append({"id": f"{spk}-{digit}-{int(take):02d}", "audio": p, "speaker": spk,
                     "split": "test" if int(take) <= 4 else "train"})
    write_jsonl(path, [*recs, *extra])
    return path


def run_array(stage: str, m: Path, out: Path, n: int, *opts: str, members=None) -> list[subprocess.CompletedProcess]:
    """Start members ``members`` (default all N) of a job array as concurrent processes; wait for all."""
    procs = [subprocess.Popen([sys.executable, "-m", "pvae_data.cli", stage, str(m), str(out), *opts, "-q",
                               "--num-jobs", str(n), "--job-index", str(i)], env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (members or range(n))]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return results


def cli(*args: str):
    return CliRunner().invoke(data_main, [*args, "-q"])


def same_files(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_trim_array_union_equals_one_run(tmp_path, fsdd_files):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF broken")
    m = manifest(fsdd_files[::67], tmp_path / "m.jsonl",
                 extra=[{"id": "bad", "audio": str(bad), "speaker": "x", "split": "train"}])  # 45 + 1 records
    full = cli("trim", str(m), str(tmp_path / "full"), "--chunk-size", "10")
    assert full.exit_code == 0, full.output
    out = tmp_path / "array"
    members = run_array("trim", m, out, 3, "--chunk-size", "10")
    assert all(r.returncode == 0 for r in members), [r.stderr for r in members]
    # 5 chunks of 10 -> members own chunks {0, 3}, {1, 4}, {2}: 20 + 16 + 10 records.
    assert [r.stdout.split(" of ")[1].split()[0] for r in members] == ["20", "16", "10"]
    assert all("merge: once every member has finished" in r.stdout for r in members)
    assert sorted(p.name for p in (out / "parts").iterdir()) == [f"trim.{i:05d}.json" for i in range(5)]
    assert not (out / "segments.jsonl").exists()  # members write no merged output
    merged = cli("trim", str(m), str(out), "--chunk-size", "10")
    assert merged.exit_code == 0 and "(46 already done, reused)" in merged.output, merged.output
    same_files(tmp_path / "full", out, ["segments.jsonl", "rejected.jsonl", "vad_config.json"])
    assert [r["id"] for r in read_jsonl(out / "rejected.jsonl")] == ["bad"]
    # A member that never ran (its part missing): the plain run trims that chunk itself.
    (out / "parts" / "trim.00004.json").unlink()
    merged = cli("trim", str(m), str(out), "--chunk-size", "10")
    assert merged.exit_code == 0 and "(40 already done, reused)" in merged.output
    same_files(tmp_path / "full", out, ["segments.jsonl", "rejected.jsonl"])
    # Parts made with another config are not reused.
    other = cli("trim", str(m), str(out), "--chunk-size", "10", "--margin", "0.1")
    assert other.exit_code == 0 and "already done" not in other.output


def scp_text(path: Path, root: Path) -> str:
    return path.read_text().replace(str(root.resolve()), "ROOT")


def test_fbank_array_union_equals_one_run(tmp_path, fsdd_files):
    m = manifest(fsdd_files[::50], tmp_path / "m.jsonl")  # 60 records -> 6 chunks of 10
    full = tmp_path / "full"
    compute_features(m, full, FbankStageConfig(chunk_size=10), show_progress=False)
    out = tmp_path / "array"
    members = run_array("fbank", m, out, 3, "--chunk-size", "10")
    assert all(r.returncode == 0 for r in members), [r.stderr for r in members]
    assert all("kept 20, rejected 0 of 20" in r.stdout and "job " in r.stdout for r in members)
    assert len(list((out / "arks").glob("*.done.json"))) == 6 and not list((out / "arks").glob(".*.tmp"))
    assert not (out / "features.jsonl").exists() and not (out / "feats.scp").exists()
    merged = cli("fbank", str(m), str(out), "--chunk-size", "10")
    assert merged.exit_code == 0 and "(60 already done, reused)" in merged.output, merged.output
    for ark in sorted((full / "arks").glob("*.ark")):
        assert (out / "arks" / ark.name).read_bytes() == ark.read_bytes()
    same_files(full, out, ["features.jsonl", "rejected.jsonl", "cmvn.json", "cmvn_speaker.ark", "fbank_config.json"])
    for scp in ("feats.scp", "cmvn_speaker.scp"):  # absolute ark paths: equal up to the directory
        assert scp_text(full / scp, full) == scp_text(out / scp, out)


def test_members_leave_each_others_work_alone(tmp_path, fsdd_files):
    """A member starting up removes stale temporaries of its own chunks only (another member may
    be writing its chunk right now); a member with no chunk has nothing to do and succeeds."""
    m = manifest(fsdd_files[:30:3], tmp_path / "m.jsonl")  # 10 records -> chunks of 5: 0, 1
    arks = tmp_path / "out" / "arks"
    arks.mkdir(parents=True)
    other = arks / ".feats.00000.ark.inflight.tmp"  # member 0 writing chunk 0
    mine = arks / ".feats.00001.ark.killed.tmp"  # a killed earlier attempt of member 1
    other.write_bytes(b"partial")
    mine.write_bytes(b"partial")
    r = cli("fbank", str(m), str(tmp_path / "out"), "--chunk-size", "5", "--num-jobs", "2", "--job-index", "1")
    assert r.exit_code == 0, r.output
    assert other.exists() and not mine.exists()
    assert sorted(p.name for p in arks.glob("*.done.json")) == ["feats.00001.done.json"]
    r = cli("fbank", str(m), str(tmp_path / "out"), "--chunk-size", "5", "--num-jobs", "4", "--job-index", "3")
    assert r.exit_code == 0 and "no chunk to do" in r.output


def test_job_options_are_checked(tmp_path, fsdd_files, monkeypatch):
    m = manifest(fsdd_files[:4], tmp_path / "m.jsonl")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    r = cli("fbank", str(m), str(tmp_path / "o"), "--array-size", "3")
    assert r.exit_code == 2 and "needs --array-index" in r.output
    r = cli("trim", str(m), str(tmp_path / "o"), "--num-jobs", "3", "--job-index", "3")  # the former names
    assert r.exit_code == 2 and "0..2" in r.output
    r = cli("fbank", str(m), str(tmp_path / "o"), "--num-jobs", "2", "--job-index", "0", "--overwrite")
    assert r.exit_code == 1 and "--overwrite cannot be combined" in r.output
    # SLURM sets the index: chunk 1 of 2 (chunk size 2) is this member's.
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    r = cli("fbank", str(m), str(tmp_path / "o"), "--num-jobs", "2", "--chunk-size", "2")
    assert r.exit_code == 0 and "job 1 of 2" in r.output, r.output
    assert sorted(p.name for p in (tmp_path / "o" / "arks").glob("*.done.json")) == ["feats.00001.done.json"]
    with pytest.raises(ValueError):
        JobSlice(2, 2)
    assert JobSlice(3, 1).mine(7) == [1, 4]


def test_a_plain_trim_resumes_from_its_own_parts(tmp_path, fsdd_files):
    """trim shares the chunk loop and parts of segment (stage.run_chunks / ChunkParts): a plain
    run keeps its finished chunks, so a killed run (some parts, no outputs, a torn temporary)
    redoes only what is missing and writes the same bytes."""
    m = manifest(fsdd_files[::67], tmp_path / "m.jsonl")  # 45 records -> 5 chunks of 10
    full = cli("trim", str(m), str(tmp_path / "full"), "--chunk-size", "10")
    assert full.exit_code == 0 and "already done" not in full.output
    out = tmp_path / "killed"
    assert cli("trim", str(m), str(out), "--chunk-size", "10").exit_code == 0
    for name in ("segments.jsonl", "rejected.jsonl", "vad_config.json"):
        (out / name).unlink()
    (out / "parts" / "trim.00002.json").unlink()
    (out / "parts" / ".trim.00002.json.x1y2.tmp").write_text('{"chunk": 2')  # the killed write
    again = cli("trim", str(m), str(out), "--chunk-size", "10")
    assert again.exit_code == 0 and "(35 already done, reused)" in again.output, again.output
    assert not list((out / "parts").glob(".*.tmp"))
    same_files(tmp_path / "full", out, ["segments.jsonl", "rejected.jsonl"])

"""The command lines as a user meets them: help, version, the data stages end to end, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import pytest
from click.testing import CliRunner

from pvae_data.cli import main as data_main
from pvae_data.io_utils import read_jsonl, write_jsonl
from pvae_model.cli import main as model_main

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pvae_data.cli", *args], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("cmd", [[], ["prepare"], ["trim"], ["fbank"], ["default-config"]])
def test_every_command_has_help(cmd):
    r = CliRunner().invoke(data_main, [*cmd, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.output


def test_versions():
    for main, name in ((data_main, "pvae-data"), (model_main, "pvae-model")):
        r = CliRunner().invoke(main, ["--version"])
        assert r.exit_code == 0 and name in r.output and "0.1.0" in r.output


def test_default_config_round_trips_through_config(tmp_path, fsdd_subset):
    """`default-config X` prints YAML that `X --config` takes back (trim had no --config before)."""
    import yaml

    for what in ("prepare", "fbank", "vad", "trim", "align-train", "segment", "shard"):
        r = CliRunner().invoke(data_main, ["default-config", what])
        assert r.exit_code == 0 and isinstance(yaml.safe_load(r.output), dict), what
    r = CliRunner().invoke(data_main, ["default-config", "vad"])
    cfg = yaml.safe_load(r.output)
    cfg["margin_s"] = 0.123
    (tmp_path / "vad.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "vad.json").write_text(json.dumps(cfg))  # JSON is read too
    files = sorted((fsdd_subset / "recordings").glob("*.wav"))[:3]
    from pvae_data.io_utils import write_jsonl

    write_jsonl(tmp_path / "m.jsonl", [{"id": p.stem, "audio": str(p), "transcript": "x"} for p in files])
    for name in ("vad.yaml", "vad.json"):
        r = CliRunner().invoke(data_main, ["trim", str(tmp_path / "m.jsonl"), str(tmp_path / f"out_{name}"), "-q",
                                           "--config", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / f"out_{name}" / "vad_config.json").read_text())["config"]["margin_s"] == 0.123


def test_prepare_trim_fbank_end_to_end(tmp_path, fsdd_subset, write_audio):
    """The demo's data stages on 42 real FSDD files plus a corrupt one: every input accounted for."""
    (fsdd_subset / "recordings" / "3_george_7.wav").write_bytes(b"RIFF not really a wav")
    r = run_cli("prepare", "fsdd", str(fsdd_subset), str(tmp_path / "prep"), "-j", "2", "-q")
    assert r.returncode == 0, r.stderr
    assert "kept 42, rejected 1 of 43" in r.stdout
    r = run_cli("trim", str(tmp_path / "prep" / "utterances.jsonl"), str(tmp_path / "trim"), "-q")
    assert r.returncode == 0, r.stderr
    segs = read_jsonl(tmp_path / "trim" / "segments.jsonl")
    assert len(segs) + len(read_jsonl(tmp_path / "trim" / "rejected.jsonl")) == 42
    assert all(0 <= s["start"] < s["end"] <= s["duration"] + s["start"] + 1e-9 for s in segs)
    r = run_cli("fbank", str(tmp_path / "trim" / "segments.jsonl"), str(tmp_path / "fbank"), "-q")
    assert r.returncode == 0, r.stderr
    assert f"kept {len(segs)}, rejected 0 of {len(segs)}" in r.stdout
    feats = kaldiio.load_scp(str(tmp_path / "fbank" / "feats.scp"))
    assert len(feats) == len(segs) and all(feats[s["id"]].shape[1] == 80 for s in segs)
    # A rerun reuses everything and changes nothing.
    before = (tmp_path / "fbank" / "features.jsonl").read_bytes()
    r = run_cli("fbank", str(tmp_path / "trim" / "segments.jsonl"), str(tmp_path / "fbank"), "-q")
    assert r.returncode == 0 and "already done, reused" in r.stdout
    assert (tmp_path / "fbank" / "features.jsonl").read_bytes() == before
    # a stage takes the previous stage's directory (as Kaldi passes data dirs) and .jsonl.gz manifests
    import gzip

    r = run_cli("trim", str(tmp_path / "prep"), str(tmp_path / "trim_dir"), "-q")
    assert r.returncode == 0 and (tmp_path / "trim_dir" / "segments.jsonl").read_bytes() == \
        (tmp_path / "trim" / "segments.jsonl").read_bytes(), r.stderr
    with gzip.open(tmp_path / "u.jsonl.gz", "wb") as f:
        f.write((tmp_path / "prep" / "utterances.jsonl").read_bytes())
    r = run_cli("trim", str(tmp_path / "u.jsonl.gz"), str(tmp_path / "trim_gz"), "-q")
    assert r.returncode == 0 and "kept 42" in r.stdout, r.stderr
    r = run_cli("fbank", str(tmp_path), str(tmp_path / "nope"), "-q")
    assert r.returncode == 2 and "directory without a manifest" in r.stderr
    # each stage keeps its own history in OUT/<stage>.log: the command line and its outcome
    log = (tmp_path / "fbank" / "fbank.log").read_text().splitlines()
    assert len(log) == 4 and "pvae-data fbank" in log[0] and "kept" in log[1] and "already done" in log[3]
    assert "kept 42, rejected 1 of 43" in (tmp_path / "prep" / "prepare.log").read_text()


def test_nothing_succeeded_exits_nonzero(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"\x00" * 10)
    write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "audio": str(bad)}])
    r = run_cli("fbank", str(tmp_path / "m.jsonl"), str(tmp_path / "out"), "-q")
    assert r.returncode != 0
    assert "kept 0, rejected 1 of 1" in r.stdout and "nothing succeeded" in r.stderr
    assert "Traceback" not in r.stderr


def test_errors_are_messages_not_tracebacks(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"id": "a"\n')
    r = run_cli("fbank", str(tmp_path / "broken.jsonl"), str(tmp_path / "out"))
    assert r.returncode != 0 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "cfg.json").write_text('{"window_type": "kaiser"}')
    write_jsonl(tmp_path / "m.jsonl", [{"id": "a", "audio": "x.wav"}])
    r = run_cli("fbank", str(tmp_path / "m.jsonl"), str(tmp_path / "out"), "--config", str(tmp_path / "cfg.json"))
    assert r.returncode != 0 and "window_type" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("prepare", "fsdd", str(tmp_path), str(tmp_path / "p"))
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_exit_codes_are_what_docs_cli_md_says():
    """docs/cli.md: 1 for input errors, 2 for usage errors."""
    from click.testing import CliRunner

    from pvae_data.cli import main

    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert "2 on a usage error" in doc
    assert CliRunner().invoke(main, ["shard", "images", "--no-such-option"]).exit_code == 2
    assert CliRunner().invoke(main, ["fbank", "/no/such/manifest.jsonl", "/tmp/x"]).exit_code == 2  # missing argument file


def test_input_errors_exit_1(tmp_path):
    from click.testing import CliRunner

    from pvae_data.cli import main

    r = CliRunner().invoke(main, ["validate", str(tmp_path)])  # a directory without index.json
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_model_default_config_loads_back(tmp_path):
    from pvae_model.bridge import load_bridge_config
    from pvae_model.config import TrainConfig, load_config

    r = CliRunner().invoke(model_main, ["default-config", "train"])
    assert r.exit_code == 0
    (tmp_path / "t.yaml").write_text(r.output)
    assert load_config(tmp_path / "t.yaml") == TrainConfig()
    r = CliRunner().invoke(model_main, ["default-config", "bridge"])
    (tmp_path / "b.yaml").write_text(r.output)
    assert load_bridge_config(tmp_path / "b.yaml", {}).to_dict()["bridge"] == load_bridge_config(None, {}).to_dict()["bridge"]


def test_shard_and_prepare_take_a_config(tmp_path, fsdd_subset):
    import yaml

    (tmp_path / "prep.yaml").write_text(yaml.safe_dump({"truncated": "keep", "fsdd_test_max_take": 2}))
    r = CliRunner().invoke(data_main, ["prepare", "fsdd", str(fsdd_subset), str(tmp_path / "p"), "-q",
                                       "--config", str(tmp_path / "prep.yaml")])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "p" / "prepare_config.json").read_text())
    assert saved["truncated"] == "keep" and saved["fsdd_test_max_take"] == 2
    (tmp_path / "shard.yaml").write_text(yaml.safe_dump({"max_items": 1000, "seed": 3}))
    from conftest import DATA_ROOT  # the real MNIST files

    r = CliRunner().invoke(data_main, ["shard", "images", str(DATA_ROOT / "mnist"), str(tmp_path / "img"), "-q",
                                       "--config", str(tmp_path / "shard.yaml"), "--seed", "5"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "img" / "index.json").read_text())["config"]
    assert cfg["max_items"] == 1000 and cfg["seed"] == 5  # the flag overrides the file


def test_stages_take_set_on_top_of_config(tmp_path, fsdd_subset):
    """``--set KEY=VALUE`` (the same helper as ``pvae-model train --set``) overrides the config
    file; a flag overrides both; a malformed one is a usage error naming --set."""
    import yaml

    (tmp_path / "prep.yaml").write_text(yaml.safe_dump({"truncated": "keep", "fsdd_test_max_take": 2}))
    r = CliRunner().invoke(data_main, ["prepare", "fsdd", str(fsdd_subset), str(tmp_path / "p"), "-q",
                                       "--config", str(tmp_path / "prep.yaml"), "--set", "fsdd_test_max_take=3"])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "p" / "prepare_config.json").read_text())
    assert saved["truncated"] == "keep" and saved["fsdd_test_max_take"] == 3
    r = CliRunner().invoke(data_main, ["trim", str(tmp_path / "p"), str(tmp_path / "t"), "-q",
                                       "--set", "margin_s=0.05", "--set", "energy_threshold=6"])
    assert r.exit_code == 0, r.output
    vad = json.loads((tmp_path / "t" / "vad_config.json").read_text())["config"]
    assert vad["margin_s"] == 0.05 and vad["energy_threshold"] == 6
    r = CliRunner().invoke(data_main, ["trim", str(tmp_path / "p"), str(tmp_path / "t2"), "--set", "margin_s"])
    assert r.exit_code == 2 and "--set" in r.output and "KEY=VALUE" in r.output

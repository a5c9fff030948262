"""A hostile user's afternoon, end to end through the CLIs (docs/reliability.md lists the attacks).

Each test drives the real commands on real FSDD/MNIST files plus crafted ones, and checks that
nothing is lost (kept + rejected = every entry that looks like input) and nothing silently wrong
gets through (a half-made fbank directory, an edited index, wrong-shape images are refused with
the file named, never a traceback).  The cheap ones run in the default suite.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pvae_data.cli import main as data
from pvae_data.io_utils import read_jsonl

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"


def run(*args) -> tuple[int, str]:
    r = CliRunner().invoke(data, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r.exit_code, r.output


@pytest.fixture
def crafted(fsdd_subset, fsdd_audio, write_audio, write_sphere_shorten, tmp_path) -> tuple[Path, int]:
    """The real FSDD subset plus every kind of bad entry; returns (root, entries that look like input)."""
    rec = fsdd_subset / "recordings"
    a, sr = fsdd_audio(6, "nicolas", 20)
    rng = np.random.default_rng(0)
    (rec / "6_nicolas_40.wav").write_bytes(rng.bytes(4000))  # corrupt
    (rec / "6_nicolas_41.wav").write_bytes(b"")  # empty
    write_audio(rec / "6_nicolas_42.wav", np.zeros(4000, np.int16), sr)  # silent
    (rec / "6_nicolas_43.wav").write_text("not audio\n")  # text
    write_sphere_shorten(rec / "6_nicolas_44.wav")  # compressed SPHERE
    cut = write_audio(rec / "6_nicolas_45.wav", a, sr)
    cut.write_bytes(cut.read_bytes()[:-len(a)])  # truncated: half the samples gone
    (rec / "6_nicolas_46.wav").symlink_to(tmp_path / "missing.wav")  # dangling symlink
    (rec / "6_nicolas_47.wav").symlink_to(rec / "6_nicolas_48.wav")  # symlink loop
    (rec / "6_nicolas_48.wav").symlink_to(rec / "6_nicolas_47.wav")
    (rec / "6_nicolas_49.wav").mkdir()  # a directory named like a recording
    write_audio(rec / "6_nicolas_39.wav", a, 44100)  # wrong rate: kept (resampled by fbank)
    (rec / "nicolas_6_1.wav").write_bytes((rec / "0_nicolas_0.wav").read_bytes())  # bad name
    entries = sum(1 for p in rec.iterdir() if p.suffix == ".wav")
    return fsdd_subset, entries


def test_crafted_folder_through_every_data_stage_accounts_for_every_entry(crafted, tmp_path):
    root, entries = crafted
    code, out = run("prepare", "fsdd", root, tmp_path / "p", "-q")
    assert code == 0, out
    kept = read_jsonl(tmp_path / "p" / "utterances.jsonl")
    rejected = read_jsonl(tmp_path / "p" / "rejected.jsonl")
    assert len(kept) + len(rejected) == entries
    assert {Path(r["path"]).name for r in rejected} == {f"6_nicolas_{i}.wav" for i in range(40, 50)} | {"nicolas_6_1.wav"}
    assert all(r["reason"] for r in rejected)
    code, out = run("trim", tmp_path / "p" / "utterances.jsonl", tmp_path / "t", "-q")
    assert code == 0, out
    segs, rej = read_jsonl(tmp_path / "t" / "segments.jsonl"), read_jsonl(tmp_path / "t" / "rejected.jsonl")
    assert len(segs) + len(rej) == len(kept)
    code, out = run("fbank", tmp_path / "t" / "segments.jsonl", tmp_path / "f", "-q")
    assert code == 0, out
    feats, rej = read_jsonl(tmp_path / "f" / "features.jsonl"), read_jsonl(tmp_path / "f" / "rejected.jsonl")
    assert len(feats) + len(rej) == len(segs)
    code, out = run("shard", "audio", tmp_path / "f", tmp_path / "s", "-q")
    assert code == 0, out
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    assert sum(e["num_items"] for e in index["shards"]) + len(read_jsonl(tmp_path / "s" / "rejected.jsonl")) == len(feats)
    assert run("validate", tmp_path / "s")[0] == 0


def test_a_half_merged_fbank_dir_is_refused_by_shard_and_train(fsdd_files, tmp_path):
    from pvae_data.io_utils import write_jsonl
    from pvae_model.cli import main as model

    write_jsonl(tmp_path / "m.jsonl", [{"id": f"u{i}", "audio": p, "speaker": "s", "transcript": "one",
                                        "split": "train"} for i, p in enumerate(fsdd_files[:10])])
    assert run("fbank", tmp_path / "m.jsonl", tmp_path / "f", "-q")[0] == 0
    (tmp_path / "f" / "fbank.done.json").unlink()  # killed between features.jsonl and cmvn.json
    (tmp_path / "f" / "cmvn.json").unlink()
    code, out = run("shard", "audio", tmp_path / "f", tmp_path / "s", "-q")
    assert code == 1 and "did not finish" in out
    code, out = run("shard", "audio", tmp_path / "f", tmp_path / "s", "-q", "--no-cmvn")
    assert code == 1 and "did not finish" in out  # --no-cmvn does not make a half-made dir whole
    assert run("fbank", tmp_path / "m.jsonl", tmp_path / "f", "-q")[0] == 0  # the rerun completes it
    (tmp_path / "f" / "cmvn.json").write_text(json.dumps({"global": None, "speakers": {}}))
    assert run("shard", "audio", tmp_path / "f", tmp_path / "s", "-q", "--no-cmvn")[0] == 0
    r = CliRunner().invoke(model, ["train", "--out", str(tmp_path / "run"), "--audio-shards", str(tmp_path / "s"),
                                   "--image-shards", str(tmp_path / "s"), "--epochs", "1", "-q"])
    assert r.exit_code == 1 and "no CMVN statistics" in r.output and "Traceback" not in r.output, r.output


def test_an_edited_index_is_a_reader_error_naming_the_file(fsdd_files, tmp_path):
    from pvae_data.io_utils import write_jsonl
    from pvae_data.shards.reader import AudioShards, ShardError

    write_jsonl(tmp_path / "m.jsonl", [{"id": f"u{i}", "audio": p, "speaker": "s", "transcript": "two",
                                        "split": "train"} for i, p in enumerate(fsdd_files[:10])])
    assert run("fbank", tmp_path / "m.jsonl", tmp_path / "f", "-q")[0] == 0
    assert run("shard", "audio", tmp_path / "f", tmp_path / "s", "-q")[0] == 0
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    index["shards"][0]["num_items"] -= 1
    (tmp_path / "s" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardError, match=index["shards"][0]["file"]):
        AudioShards(tmp_path / "s", "train")
    code, out = run("validate", tmp_path / "s")
    assert code == 1 and index["shards"][0]["file"] in out


@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST not found")
def test_wrong_shape_mnist_is_rejected(tmp_path):
    bad = tmp_path / "mnist"
    bad.mkdir()
    rng = np.random.default_rng(0)
    for stem in ("train", "t10k"):
        (bad / f"{stem}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, 8, 14, 56) +
                                                       rng.integers(0, 256, 8 * 14 * 56).astype(np.uint8).tobytes())
        (bad / f"{stem}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, 8) + bytes(range(8)))
    code, out = run("shard", "images", bad, tmp_path / "s", "-q")
    assert code == 1 and "14x56" in out
    shutil.rmtree(tmp_path / "s", ignore_errors=True)


# --- Nothing from elsewhere runs (issue 27): each payload would create a file; none may appear ---

class _Payload:
    """Unpickling this runs ``touch FLAG``: the shape of any code-running pickle."""

    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.flag}",))


def _model(*args) -> tuple[int, str]:
    from pvae_model.cli import main as model

    r = CliRunner().invoke(model, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def tiny_run(small_shards, tmp_path_factory) -> Path:
    from pvae_model.config import TrainConfig
    from pvae_model.train import train

    audio, images = small_shards
    run_dir = tmp_path_factory.mktemp("attack") / "run"
    cfg = TrainConfig.from_dict({"audio_shards": str(audio), "image_shards": str(images), "epochs": 1,
                                 "batch_size": 32, "eval_every": 0, "eval_coherence": False, "num_threads": 1,
                                 "pvae": {"hidden": 16, "z_shared": 4, "z_audio": 4, "z_image": 4,
                                          "image_channels": [4, 8]}})
    train(cfg, run_dir, show_progress=False)
    return run_dir


def test_a_crafted_checkpoint_runs_nothing_anywhere_it_is_read(tiny_run, tmp_path):
    import torch

    from pvae_model.models.pvae import PVAE
    from pvae_model.checkpoints import RunIOError, load_checkpoint

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    flag = tmp_path / "PWNED"
    good = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    for name in ("last.pt", "best.pt"):
        torch.save({**good, "extra": _Payload(flag)}, run_dir / "checkpoints" / name)
    with pytest.raises(RunIOError, match="refused.*posix.system|refused.*os.system"):
        load_checkpoint(run_dir / "checkpoints" / "last.pt")
    with pytest.raises(RunIOError, match="last.pt"):
        PVAE.from_run(run_dir, checkpoint="last")
    for args in (["purity", run_dir, "--checkpoint", "last"],
                 ["evaluate", run_dir, "--checkpoint", "last"],
                 ["evaluate", run_dir, "--checkpoint", run_dir / "checkpoints" / "best.pt"],
                 ["diagnose", run_dir, "--checkpoint", "last"],
                 ["train", "--out", run_dir, "--resume", "--epochs", "2", "-q"]):
        code, out = _model(*args)
        assert code == 1 and "refused" in out and "pvae_model.checkpoints --trust" in out, (args, out)
        assert len(out.strip().splitlines()) == 1, out
    assert not flag.exists()
    # the one-line way out, for a file you made yourself, works (and runs the payload: that is the point)
    torch.save({**good, "extra": np.float64(1.0)}, run_dir / "checkpoints" / "last.pt")  # a numpy scalar
    with pytest.raises(RunIOError, match="refused"):
        load_checkpoint(run_dir / "checkpoints" / "last.pt")
    from pvae_model.checkpoints import convert_trusted_checkpoint

    convert_trusted_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["extra"] == 1.0


def _kaldi_dir(d: Path, wav_scp: str, utts: dict[str, str]) -> Path:
    d.mkdir(parents=True)
    (d / "wav.scp").write_text(wav_scp)
    (d / "text").write_text("".join(f"{u} one\n" for u in utts))
    (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utts.items()))
    return d


def test_wav_scp_commands_run_only_with_the_opt_in_and_ids_never_leave_out(fsdd_files, tmp_path):
    flag = tmp_path / "PWNED"
    good = fsdd_files[0]
    d = _kaldi_dir(tmp_path / "data" / "train", f"r1 echo hi > {flag}; cat {good} |\nr2 {good}\n",
                   {"r1": "s", "r2": "s"})
    code, out = run("prepare", "kaldi", d, tmp_path / "p", "-q")
    assert code == 0 and not flag.exists(), out
    rejected = read_jsonl(tmp_path / "p" / "rejected.jsonl")
    assert [r["id"] for r in rejected] == ["r1"] and "--allow-commands" in rejected[0]["reason"]
    assert [r["id"] for r in read_jsonl(tmp_path / "p" / "utterances.jsonl")] == ["r2"]
    code, out = run("prepare", "kaldi", d, tmp_path / "p2", "-q", "--allow-commands")  # the user opts in
    assert code == 0 and flag.exists()
    # a recording id made of ../ steps: refused before it becomes OUT/wav/<id>.wav, even with the opt-in
    out_dir = tmp_path / "a" / "b" / "c" / "out"
    evil = "../../../../../evil"
    d = _kaldi_dir(tmp_path / "data2" / "train", f"{evil} cat {good} |\n", {evil: "s"})
    code, out = run("prepare", "kaldi", d, out_dir, "-q", "--allow-commands")
    assert not list(tmp_path.rglob("evil*")), out
    assert "path separator" in read_jsonl(out_dir / "rejected.jsonl")[0]["reason"]
    # a tab-separated wav.scp is read as Kaldi reads it (any whitespace separates key and value)
    d = _kaldi_dir(tmp_path / "data3" / "train", f"r11\t{good}\n", {"r11": "s"})
    code, out = run("prepare", "kaldi", d, tmp_path / "p3", "-q")
    assert code == 0 and [r["id"] for r in read_jsonl(tmp_path / "p3" / "utterances.jsonl")] == ["r11"], out


def test_ids_are_checked_before_they_become_paths(fsdd_files, tmp_path):
    """A list entry with id ../../../SEG is rejected by prepare; a manifest from elsewhere holding
    one anyway makes segment --write-audio refuse that record, writing nothing outside OUT."""
    from pvae_data.ids import id_path, id_problem
    from pvae_data.io_utils import write_jsonl

    for bad in ("../../../SEG", "a/b", "..", "a b", "x\\y", "tab\there", "nul\x00", "é" * 150):
        assert id_problem(bad), bad
        with pytest.raises(ValueError, match="bad id"):
            id_path(tmp_path, bad, ".wav")
    assert id_problem("george-0-3") is None and id_path(tmp_path, "sp0.9-a", ".wav").parent == tmp_path
    (tmp_path / "list.csv").write_text("path,transcript,speaker,id\n"
                                       f"{fsdd_files[0]},one,s,../../../SEG\n{fsdd_files[1]},two,s,ok-1\n"
                                       f"{fsdd_files[2]},two,s p,ok-2\n")
    code, out = run("prepare", "list", tmp_path / "list.csv", tmp_path / "p", "-q")
    assert code == 0, out
    assert [r["id"] for r in read_jsonl(tmp_path / "p" / "utterances.jsonl")] == ["ok-1"]
    reasons = sorted(r["reason"] for r in read_jsonl(tmp_path / "p" / "rejected.jsonl"))
    assert "path separator" in reasons[0] and "whitespace" in reasons[1]
    # a manifest made elsewhere, never checked by our prepare
    out = tmp_path / "deep" / "er" / "out"
    write_jsonl(tmp_path / "m.jsonl", [{"id": "../../../SEG", "audio": fsdd_files[0], "speaker": "s",
                                        "transcript": "one", "split": "train"},
                                       {"id": "fine", "audio": fsdd_files[1], "speaker": "s",
                                        "transcript": "two", "split": "train"}])
    code, msg = run("segment", tmp_path / "m.jsonl", out, "--write-audio", "-q")
    assert not list(tmp_path.rglob("SEG*")), msg
    rej = read_jsonl(out / "rejected.jsonl")
    assert "path separator" in json.dumps(rej), rej
    assert len(read_jsonl(out / "segments.jsonl")) + len(rej) == 2


@pytest.mark.filterwarnings("ignore:An error happend when loading")  # kaldiio's own, before our error
def test_feats_scp_commands_run_only_with_the_opt_in(fsdd_files, tmp_path):
    """kaldiio runs `cmd |` entries; shard kaldi and shard kaldi-dirs refuse them (one line naming
    file and line) unless --allow-commands; lhotse export never reads feats.scp (the arks, through
    features.jsonl); a matrix kaldiio cannot read is a one-line error naming the key."""
    from pvae_data.io_utils import write_jsonl

    write_jsonl(tmp_path / "m.jsonl", [{"id": f"u{i}", "audio": p, "speaker": "s", "transcript": "one",
                                        "split": "train"} for i, p in enumerate(fsdd_files[:4])])
    assert run("fbank", tmp_path / "m.jsonl", tmp_path / "f", "-q")[0] == 0
    flag = tmp_path / "PWNED"
    scp = (tmp_path / "f" / "feats.scp").read_text().splitlines()
    scp[1] = f"u1 touch {flag}; copy-feats ark:x ark:- |"
    (tmp_path / "f" / "feats.scp").write_text("\n".join(scp) + "\n")
    d = tmp_path / "kd" / "train"
    d.mkdir(parents=True)
    shutil.copy(tmp_path / "f" / "feats.scp", d / "feats.scp")
    (d / "text").write_text("".join(f"u{i} one\n" for i in range(4)))
    for args in (["shard", "kaldi", d / "feats.scp", d / "text", tmp_path / "s1", "-q"],
                 ["shard", "kaldi-dirs", tmp_path / "s2", f"train={d}", "-q"]):
        code, out = run(*args)
        assert code == 1 and "feats.scp:2" in out and "--allow-commands" in out, (args, out)
        assert len(out.strip().splitlines()) == 1
    if importlib.util.find_spec("lhotse") is not None:
        code, out = run("lhotse", "export", tmp_path / "f", tmp_path / "lh")
        assert code == 0 and "kept 4" in out, out
    assert not flag.exists()
    # a damaged offset: one line naming the key
    (tmp_path / "text.ark").write_text("not a matrix at all\n")
    scp[1] = f"u1 {tmp_path / 'text.ark'}:0"
    (d / "feats.scp").write_text("\n".join(scp) + "\n")
    code, out = run("shard", "kaldi", d / "feats.scp", d / "text", tmp_path / "s3", "--split", "train", "-q")
    assert code == 1 and "'u1'" in out and "cannot read the matrix" in out, out


def test_a_1_hz_header_and_cancelling_stereo_channels_are_rejected(fsdd_audio, write_audio, tmp_path):
    """Item 9: a WAV whose header says 1 Hz (7 KB 'lasting' an hour) is rejected by prepare and by
    fbank (which would resample it into ~350,000 frames); a stereo file with L = -R, digital
    silence once downmixed, is rejected by prepare with the reason."""
    from pvae_data.io_utils import write_jsonl

    a, sr = fsdd_audio(3, "theo", 10)
    one_hz = write_audio(tmp_path / "w" / "one_hz.wav", a, 1)
    stereo = write_audio(tmp_path / "w" / "cancel.wav", np.stack([a, -a], axis=1), sr)
    good = write_audio(tmp_path / "w" / "good.wav", a, sr)
    (tmp_path / "list.csv").write_text("path,transcript,speaker\n" + "".join(f"{p},three,theo\n" for p in (one_hz, stereo, good)))
    code, out = run("prepare", "list", tmp_path / "list.csv", tmp_path / "p", "-q")
    assert code == 0 and "kept 1, rejected 2 of 3" in out, out
    why = {Path(r["path"]).name: r["reason"] for r in read_jsonl(tmp_path / "p" / "rejected.jsonl")}
    assert "implausible sample rate 1 Hz" in why["one_hz.wav"] and "channels cancel" in why["cancel.wav"]
    write_jsonl(tmp_path / "m.jsonl", [{"id": "u1", "audio": str(one_hz), "speaker": "s", "transcript": "three",
                                        "split": "train"}, {"id": "u2", "audio": str(good), "speaker": "s",
                                                            "transcript": "three", "split": "train"}])
    code, out = run("fbank", tmp_path / "m.jsonl", tmp_path / "f", "-q")
    assert code == 0 and "kept 1, rejected 1 of 2" in out, out
    assert "implausible sample rate" in read_jsonl(tmp_path / "f" / "rejected.jsonl")[0]["reason"]


def test_yaml_alias_bombs_and_duplicate_keys_are_refused_fast(fsdd_files, tmp_path):
    """Item 11: a "billion laughs" config is refused at its first alias (no expansion); a key
    given twice is an error naming the line, never the silent last value."""
    import time

    from pvae_data.config import load_yaml

    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    (tmp_path / "bomb.yaml").write_text(bomb)
    (tmp_path / "dup.yaml").write_text("num_mel_bins: 40\ndither: 0.0\nnum_mel_bins: 80\n")
    t0 = time.perf_counter()
    code, out = run("fbank", fsdd_files[0], tmp_path / "f", "--config", tmp_path / "bomb.yaml")
    assert code == 2 or code == 1
    assert "alias" in out and "bomb.yaml" in out and time.perf_counter() - t0 < 10, out
    code, out = run("fbank", fsdd_files[0], tmp_path / "f", "--config", tmp_path / "dup.yaml")
    assert code in (1, 2) and "duplicate key 'num_mel_bins'" in out and "line 3" in out, out
    with pytest.raises(ValueError, match="alias"):
        load_yaml("x: &x 1\ny: *x\n")
    assert load_yaml("a: 1\nb: [1, 2]\n") == {"a": 1, "b": [1, 2]}


@pytest.mark.parametrize("setting, message", [
    ("betas=[]", "betas must be two numbers"), ("num_threads=-3", "num_threads must be >= 0"),
    ("pvae.hidden=1000000", "at most 8192"), ("pvae=3", "pvae must be a mapping"),
    ("device=cuda:7", "cuda:7"), ("device=bogus", "device must be"), ("eval_images=-5", "eval_images must be"),
    ("lr=.inf", "lr: must be a finite number")])
def test_bad_training_settings_are_one_line_naming_the_field(small_shards, tmp_path, setting, message):
    """Item 12: each was a traceback, an attempt to allocate terabytes, or accepted silently."""
    audio, images = small_shards
    code, out = _model("train", "--out", tmp_path / "run", "--audio-shards", audio, "--image-shards", images,
                       "--epochs", "1", "-q", "--set", setting)
    assert code == 1 and message in out and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("setting, message", [
    ("num_mel_bins=abc", "num_mel_bins: expected int"), ("num_mel_bins=100000", "num_mel_bins must be in"),
    ("dither=.nan", "dither: must be a finite number")])
def test_bad_fbank_settings_are_one_line_naming_the_field(fsdd_files, tmp_path, setting, message):
    from pvae_data.io_utils import write_jsonl

    write_jsonl(tmp_path / "m.jsonl", [{"id": "u0", "audio": fsdd_files[0], "speaker": "s", "transcript": "one"}])
    code, out = run("fbank", tmp_path / "m.jsonl", tmp_path / "f", "--set", setting)
    assert code in (1, 2) and message in out and len(out.strip().splitlines()) <= 3, out
    assert not (tmp_path / "f").exists()


def test_resume_names_the_field_that_changed(tiny_run, tmp_path):
    """Item 15: "differs from this config" now says which field, from what to what."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    code, out = _model("train", "--out", run_dir, "--resume", "--epochs", "2", "-q", "--set", "pvae.beta=7")
    assert code == 1 and "pvae.beta" in out and "-> 7" in out, out


def test_run_directories_from_elsewhere(tiny_run, small_shards, tmp_path):
    """Item 13: moved shards are found again by editing RUN/config.yaml (the file the error names);
    a checkpoint of another model kind is refused; a garbage metrics.jsonl is named at once."""
    import torch
    import yaml

    from pvae_model.eval.evaluate import _read_curves

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    moved = tmp_path / "moved_audio"
    shutil.copytree(small_shards[0], moved)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["audio_shards"] = str(tmp_path / "gone")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, out = _model("purity", run_dir, "--checkpoint", "last", "--seeds", "1")
    assert code == 1 and "gone" in out and "config.yaml" in out, out
    cfg["audio_shards"] = str(moved)  # the fix the message names works
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, out = _model("purity", run_dir, "--checkpoint", "last", "--seeds", "1")
    assert code == 0, out
    # a checkpoint of another model kind dropped into the run
    ck = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    ck["config"]["model"] = "vae-sp"
    torch.save(ck, tmp_path / "other.pt")
    code, out = _model("purity", run_dir, "--checkpoint", tmp_path / "other.pt", "--seeds", "1")
    assert code == 1 and "holds a vae-sp model" in out and "says this run is pvae" in out, out
    # a garbage training log: named with its line, at once
    (run_dir / "metrics.jsonl").write_text("garbage\n")
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert _read_curves(run_dir / "metrics.jsonl") == []
    assert "metrics.jsonl: line 1" in err.getvalue()


def test_kaldi_export_of_a_moved_fbank_dir_points_into_it(fsdd_files, tmp_path):
    """Item 14: after the fbank directory is moved, `export --format kaldi` writes a cmvn.scp (and
    feats.scp) pointing into the new place, and kaldiio reads every entry."""
    import kaldiio

    from pvae_data.io_utils import write_jsonl

    write_jsonl(tmp_path / "m.jsonl", [{"id": f"s-u{i}", "audio": p, "speaker": "s", "transcript": "one",
                                        "split": "train"} for i, p in enumerate(fsdd_files[:4])])
    assert run("fbank", tmp_path / "m.jsonl", tmp_path / "f", "-q")[0] == 0
    shutil.move(tmp_path / "f", tmp_path / "moved")
    code, out = run("export", tmp_path / "moved", tmp_path / "k", "--format", "kaldi")
    assert code == 0, out
    for name in ("cmvn.scp", "feats.scp"):
        text = (tmp_path / "k" / "train" / name).read_text()
        assert str(tmp_path / "f") + "/" not in text and str(tmp_path / "moved") in text, text
        assert all(m.shape[0] >= 2 for m in kaldiio.load_scp(str(tmp_path / "k" / "train" / name)).values())

"""pvae_data.stages.prepare (corpus -> utterances.jsonl / rejected.jsonl) and pvae_data.digits."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pvae_data.stages import prepare as prep
from pvae_data.audio import inspect_audio
from pvae_data.digits import WORDS, normalize_transcript, word_to_label
from pvae_data.io_utils import read_jsonl
from pvae_data.stages.prepare import PrepareConfig, PrepareSummary, prepare_corpus

RECORD_KEYS = ["id", "audio", "speaker", "transcript", "split", "duration", "sample_rate", "channels", "num_samples", "corpus"]
OUTPUTS = (prep.UTTERANCES, prep.REJECTED, prep.CONFIG)


def _run(cfg: PrepareConfig, out: Path, **kw) -> tuple[PrepareSummary, list[dict], list[dict]]:
    s = prepare_corpus(cfg, out, progress=False, **kw)
    kept, rej = read_jsonl(out / prep.UTTERANCES), read_jsonl(out / prep.REJECTED)
    assert s.kept == len(kept) and s.rejected == len(rej)
    assert s.kept + s.rejected == s.total
    assert [r["id"] for r in kept] == sorted(r["id"] for r in kept)
    assert len({r["id"] for r in kept}) == len(kept)
    for r in kept:
        assert list(r)[: len(RECORD_KEYS)] == RECORD_KEYS
        assert set(r) - set(RECORD_KEYS) <= {"group", "note"}
        assert os.path.isabs(r["audio"]) and os.path.isfile(r["audio"])
        assert r["id"].startswith(r["speaker"])  # Kaldi: utterance ids prefixed by speaker
        assert r["duration"] == round(r["num_samples"] / r["sample_rate"], 6)
        assert r["split"] in ("train", "test", None)
        assert all(w in WORDS for w in r["transcript"].split(" "))
    for r in rej:
        assert set(r) >= {"path", "id", "reason"} and r["reason"]
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    return s, kept, rej


# ------------------------------------------------------------------------------------ digits


def test_digits_vocabulary():
    assert WORDS == ("zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    assert word_to_label("zero") == word_to_label("OH") == 0
    assert [word_to_label(w) for w in WORDS[2:]] == list(range(1, 10))
    with pytest.raises(ValueError, match="ten"):
        word_to_label("ten")


@pytest.mark.parametrize(
    "text, words",
    [
        ("seven", ["seven"]),
        ("One OH seven", ["one", "oh", "seven"]),
        ("1 0 7", ["one", "zero", "seven"]),
        ("107", ["one", "zero", "seven"]),
        ("  z 1 o\t", ["zero", "one", "oh"]),
        ("1o7", ["one", "oh", "seven"]),
        ("zero oh", ["zero", "oh"]),
    ],
)
def test_normalize_transcript(text, words):
    assert normalize_transcript(text) == words


@pytest.mark.parametrize("text, bad", [("one ten", "'ten'"), ("1,2", "'1,2'"), ("seven x", "'x'"), ("", "empty")])
def test_normalize_transcript_rejects(text, bad):
    with pytest.raises(ValueError, match=re.escape(bad)):
        normalize_transcript(text)


# -------------------------------------------------------------------------------------- fsdd


def test_config_roundtrip():
    cfg = PrepareConfig("list", "/x/y.csv", list_format="csv")
    assert PrepareConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="corpus"):
        PrepareConfig("timit", "/x")
    with pytest.raises(ValueError, match="unknown"):
        PrepareConfig.from_dict({"corpus": "fsdd", "source": "/x", "bogus": 1})


def test_fsdd_subset(fsdd_subset, fsdd_subset_files, tmp_path):
    out = tmp_path / "out"
    s, kept, rej = _run(PrepareConfig("fsdd", str(fsdd_subset)), out)
    n = len(fsdd_subset_files)
    assert n == 42
    assert (s.total, s.kept, s.rejected, s.notes, s.speakers) == (n, n, 0, 0, 6)
    assert rej == []
    expect = sorted(
        (f"{spk}-{d}-{t:02d}", spk, WORDS[0] if d == 0 else WORDS[d + 1], "test" if t <= 4 else "train", f"{d}_{spk}_{t}.wav")
        for d, spk, t in fsdd_subset_files
    )
    got = [(r["id"], r["speaker"], r["transcript"], r["split"], Path(r["audio"]).name) for r in kept]
    assert got == expect
    assert s.splits == {"test": 18, "train": 24}
    r = next(r for r in kept if r["id"] == "george-7-05")
    info = sf.info(r["audio"])
    assert (r["sample_rate"], r["channels"], r["num_samples"], r["corpus"]) == (8000, 1, info.frames, "fsdd")
    assert r["audio"] == os.path.abspath(fsdd_subset / "recordings" / "7_george_5.wav")
    # the recordings dir itself is also accepted, and the config records the absolute source
    s2, kept2, _ = _run(PrepareConfig("fsdd", str(fsdd_subset / "recordings")), tmp_path / "out2")
    assert kept2 == kept
    assert json.loads((out / prep.CONFIG).read_text()) == PrepareConfig("fsdd", os.path.abspath(fsdd_subset)).to_dict()


def test_fsdd_full_corpus(fsdd_recordings, tmp_path):
    s, kept, rej = _run(PrepareConfig("fsdd", str(fsdd_recordings.parent)), tmp_path / "out", jobs=4)
    assert (s.total, s.kept, s.rejected, s.notes, s.speakers) == (3000, 3000, 0, 0, 6)
    assert s.splits == {"test": 300, "train": 2700}
    for spk in ("george", "jackson", "lucas", "nicolas", "theo", "yweweler"):
        ids = [r["id"] for r in kept if r["speaker"] == spk]
        assert ids == sorted(f"{spk}-{d}-{t:02d}" for d in range(10) for t in range(50))
    assert {r["sample_rate"] for r in kept} == {8000} and {r["channels"] for r in kept} == {1}


@pytest.fixture
def fsdd_messy(fsdd_subset, fsdd_audio, write_audio, write_sphere_shorten):
    """The FSDD subset plus one file of every problem kind; returns (root, expected reasons)."""
    rec = fsdd_subset / "recordings"
    a, sr = fsdd_audio(2, "george", 20)
    rng = np.random.default_rng(0)
    (rec / "2_george_40.wav").write_bytes(rng.bytes(5000))  # corrupt
    (rec / "2_george_41.wav").write_bytes(b"")  # empty file
    write_audio(rec / "2_george_42.wav", np.zeros(0, np.int16), 8000)  # zero-length WAV
    write_audio(rec / "2_george_43.wav", np.zeros(3000, np.int16), 8000)  # all-zero WAV
    (rec / "2_george_44.wav").write_text("this is a text file\n")  # not audio
    write_sphere_shorten(rec / "2_george_45.wav")
    write_audio(rec / "2_jackson_40.wav", np.stack([a, a // 2], axis=1), sr)  # stereo: kept
    t = np.arange(22050) / 44100
    write_audio(rec / "2_jackson_41.wav", (5000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16), 44100)  # 44.1k: kept
    write_audio(rec / "2_jackson_42.wav", a, sr, format="NIST")  # SPHERE named .wav: kept
    (rec / "george_2_1.wav").write_bytes((rec / "0_george_0.wav").read_bytes())  # bad name
    shutil.copyfile(rec / "7_george_5.wav", rec / "7_george_05.wav")  # duplicate id george-7-05
    (rec / "README.txt").write_text("not an input\n")  # ignored (not an audio extension)
    (rec / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored silently
    reasons = {
        "2_george_40.wav": "unreadable: ",
        "2_george_41.wav": "empty (0 bytes)",
        "2_george_42.wav": "empty (0 samples)",
        "2_george_43.wav": "zero energy (all samples are 0)",
        "2_george_44.wav": "not audio",
        "2_george_45.wav": "SPHERE shorten-compressed: decompress with sph2pipe first",
        "george_2_1.wav": "bad name",
        "7_george_5.wav": "duplicate id: 'george-7-05'",  # "7_george_05.wav" sorts first and wins
    }
    return fsdd_subset, reasons


def test_fsdd_problem_files(fsdd_messy, fsdd_subset_files, tmp_path):
    root, reasons = fsdd_messy
    n_good = len(fsdd_subset_files)
    s, kept, rej = _run(PrepareConfig("fsdd", str(root)), tmp_path / "out")
    assert s.total == n_good + 3 + len(reasons) and s.ignored == 1
    assert s.kept == n_good + 3 and s.rejected == len(reasons)
    got = {Path(r["path"]).name: r["reason"] for r in rej}
    assert set(got) == set(reasons)
    for name, reason in reasons.items():
        assert got[name].startswith(reason), (name, got[name])
    assert next(r for r in rej if r["reason"].startswith("bad name"))["id"] is None
    assert next(r for r in rej if r["path"].endswith("2_george_43.wav"))["id"] == "george-2-43"
    assert s.reasons == {
        "SPHERE shorten-compressed": 1, "bad name": 1, "duplicate id": 1, "empty": 2,
        "not audio": 1, "unreadable": 1, "zero energy": 1,
    }
    by_id = {r["id"]: r for r in kept}
    st = by_id["jackson-2-40"]
    assert st["channels"] == 2 and st["note"] == "downmixed 2 channels to mono"
    assert by_id["jackson-2-41"]["sample_rate"] == 44100 and by_id["jackson-2-41"]["duration"] == 0.5
    sph = by_id["jackson-2-42"]
    assert sph["sample_rate"] == 8000 and "note" not in sph
    info = inspect_audio(sph["audio"])
    assert info.is_sphere and info.format == "NIST"
    assert s.notes == 1 and sum("note" in r for r in kept) == 1
    line = s.line()
    assert line.startswith(f"prepare: kept {s.kept}, rejected {s.rejected} of {s.total} in ")
    assert "ignored 1 non-audio files" in line and "zero energy 1" in line
    assert by_id["george-7-05"]["audio"].endswith("7_george_05.wav")


def test_jobs_identical(fsdd_messy, tmp_path):
    root, _ = fsdd_messy
    cfg = PrepareConfig("fsdd", str(root))
    s1 = prepare_corpus(cfg, tmp_path / "j1", jobs=1, progress=False)
    s2 = prepare_corpus(cfg, tmp_path / "j2", jobs=2, progress=False)
    assert (s1.total, s1.kept, s1.rejected) == (s2.total, s2.kept, s2.rejected)
    for name in OUTPUTS:
        assert (tmp_path / "j1" / name).read_bytes() == (tmp_path / "j2" / name).read_bytes(), name


def test_rerun_overwrites_atomically(fsdd_messy, tmp_path, monkeypatch):
    root, _ = fsdd_messy
    out = tmp_path / "out"
    cfg = PrepareConfig("fsdd", str(root))
    _run(cfg, out)
    first = {n: (out / n).read_bytes() for n in OUTPUTS}
    # fewer inputs: every output is replaced, nothing stale is left behind
    for p in (root / "recordings").glob("*_theo_*.wav"):
        p.unlink()
    s, kept, _ = _run(cfg, out)
    assert not any(r["speaker"] == "theo" for r in kept)
    second = {n: (out / n).read_bytes() for n in OUTPUTS}
    assert second[prep.UTTERANCES] != first[prep.UTTERANCES]
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)

    # a run that dies while writing the manifest leaves the previous one intact
    real = prep.write_jsonl

    def dying(path, records):
        if Path(path).name == prep.UTTERANCES:
            def gen():
                for i, r in enumerate(records):
                    if i == 5:
                        raise KeyboardInterrupt
                    yield r
            return real(path, gen())
        return real(path, records)

    monkeypatch.setattr(prep, "write_jsonl", dying)
    shutil.copyfile(root / "recordings" / "0_george_0.wav", root / "recordings" / "0_theo_0.wav")
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(cfg, out, progress=False)
    assert (out / prep.UTTERANCES).read_bytes() == second[prep.UTTERANCES]
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError):
        prepare_corpus(PrepareConfig("fsdd", str(tmp_path / "nope")), tmp_path / "out", progress=False)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="no inputs"):
        prepare_corpus(PrepareConfig("fsdd", str(tmp_path / "emptydir")), tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError):
        prepare_corpus(PrepareConfig("tidigits", str(tmp_path / "emptydir")), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- tidigits


def _kaldi_tidigits(root: Path) -> tuple[dict, dict, dict]:
    """What Kaldi's egs/tidigits/s5/local/tidigits_data_prep.sh makes: wav.scp keys, text, utt2spk."""
    scp, text, utt2spk = {}, {}, {}
    for x in ("train", "test"):
        for p in sorted(str(q) for q in (root / x).rglob("*.wav")):
            m = re.search(r"/(..)/([1-9zo]+[ab])\.wav", p)
            assert m, p
            utt = f"{m.group(1)}_{m.group(2)}"
            scp[utt] = p
            text[utt] = " ".join(m.group(2)[:-1])
            utt2spk[utt] = m.group(1)
    return scp, text, utt2spk


def test_tidigits(tidigits_tree, tmp_path, write_sphere_shorten):
    root = tidigits_tree["root"]
    scp, text, utt2spk = _kaldi_tidigits(root / "tidigits")
    letter = {"z": "zero", "o": "oh", **{str(d): WORDS[d + 1] for d in range(1, 10)}}
    s, kept, rej = _run(PrepareConfig("tidigits", str(root)), tmp_path / "out")
    assert s.total == s.kept == len(scp) == 8 and rej == []
    assert [r["id"] for r in kept] == sorted(scp)
    for r in kept:
        assert r["audio"] == os.path.abspath(scp[r["id"]])
        assert r["speaker"] == utt2spk[r["id"]]
        assert r["transcript"] == " ".join(letter[c] for c in text[r["id"]].split())
        assert r["split"] == Path(r["audio"]).parts[-4]
        assert r["group"] == Path(r["audio"]).parts[-3]
        assert r["sample_rate"] == 20000 and r["channels"] == 1 and r["corpus"] == "tidigits"
        assert inspect_audio(r["audio"]).is_sphere
    by_id = {r["id"]: r for r in kept}
    assert by_id["ae_1o7a"]["transcript"] == "one oh seven"
    assert by_id["ae_z1oa"]["transcript"] == "zero one oh"
    assert by_id["ah_o4za"]["split"] == "test" and by_id["bd_5zb"]["group"] == "boy"
    assert s.splits == {"test": 3, "train": 5}

    # the tidigits/ dir itself works too; compressed and misnamed files are rejected
    write_sphere_shorten(root / "tidigits" / "test" / "man" / "ah" / "12a.wav")
    (root / "tidigits" / "test" / "man" / "ah" / "hello.wav").write_bytes(b"RIFF")
    (root / "tidigits" / "train" / "alien" / "xx" / "1a.wav").parent.mkdir(parents=True)
    shutil.copyfile(scp["ae_2b"], root / "tidigits" / "train" / "alien" / "xx" / "1a.wav")
    s2, kept2, rej2 = _run(PrepareConfig("tidigits", str(root / "tidigits")), tmp_path / "out2")
    assert kept2 == kept and s2.total == 11
    reasons = {Path(r["path"]).name: r["reason"] for r in rej2}
    assert reasons["12a.wav"].startswith("SPHERE shorten-compressed")
    assert reasons["hello.wav"].startswith("bad name") and reasons["1a.wav"].startswith("bad name")


# -------------------------------------------------------------------------------------- list


@pytest.fixture
def list_dir(tmp_path, fsdd_recordings):
    d = tmp_path / "lst"
    (d / "audio").mkdir(parents=True)
    for name in ("1_george_5.wav", "2_lucas_3.wav", "3_theo_30.wav", "4_nicolas_1.wav"):
        shutil.copyfile(fsdd_recordings / name, d / "audio" / name)
    return d


_LIST_ROWS = [  # path, transcript, speaker, split, id
    ("audio/1_george_5.wav", "one", "george", "train", ""),
    ("audio/2_lucas_3.wav", "Two", "lucas", "", "lucas-x"),
    ("audio/1_george_5.wav", "one ten", "george", "train", "george-bad"),  # bad transcript
    ("audio/missing.wav", "five", "george", "test", ""),  # missing file
    ("audio/3_theo_30.wav", "two", "lucas", "train", "lucas-x"),  # duplicate id
    ("audio/3_theo_30.wav", "3o7", "theo", "train", ""),  # normalised, with a note
    ("{abs}/audio/4_nicolas_1.wav", "four", "nicolas", "TEST", ""),  # absolute path
    ("audio/1_george_5.wav", "one", "george", "dev", "george-dev"),  # bad split
]


def _check_list(s, kept, rej, d, lines):
    by_id = {r["id"]: r for r in kept}
    assert set(by_id) == {"george-1_george_5", "lucas-x", "theo-3_theo_30", "nicolas-4_nicolas_1"}
    g = by_id["george-1_george_5"]
    assert g["audio"] == str(d / "audio" / "1_george_5.wav") and g["split"] == "train" and g["transcript"] == "one"
    assert by_id["lucas-x"]["split"] is None and by_id["lucas-x"]["transcript"] == "two"
    assert by_id["lucas-x"]["audio"].endswith("2_lucas_3.wav")  # the first lucas-x wins
    t = by_id["theo-3_theo_30"]
    assert t["transcript"] == "three oh seven" and t["note"] == "transcript normalised from '3o7'"
    n = by_id["nicolas-4_nicolas_1"]
    assert n["split"] == "test" and n["audio"] == str(d / "audio" / "4_nicolas_1.wav") and "note" not in n
    assert all(r["corpus"] == "list" for r in kept)
    reasons = [r["reason"] for r in rej]
    assert len(rej) == 4 and s.total == 8
    assert reasons[0].startswith("bad transcript") and "'ten'" in reasons[0] and rej[0]["id"] == "george-bad"
    assert reasons[1] == "file not found" and rej[1]["path"] == str(d / "audio" / "missing.wav")
    assert reasons[2].startswith("duplicate id: 'lucas-x'")
    assert reasons[3].startswith("bad split")
    assert [r["line"] for r in rej] == lines


def test_list_csv(list_dir, tmp_path):
    d = list_dir
    text = "path,transcript,speaker,split,id\n" + "".join(",".join(r).format(abs=d) + "\n" for r in _LIST_ROWS)
    (d / "list.csv").write_text(text)
    s, kept, rej = _run(PrepareConfig("list", str(d / "list.csv")), tmp_path / "out")
    _check_list(s, kept, rej, d, [4, 5, 6, 9])


def test_list_jsonl(list_dir, tmp_path):
    d = list_dir
    with open(d / "list.jsonl", "w") as f:
        for row in _LIST_ROWS:
            rec = {k: v.format(abs=d) for k, v in zip(("path", "transcript", "speaker", "split", "id"), row) if v}
            f.write(json.dumps(rec) + "\n")
    s, kept, rej = _run(PrepareConfig("list", str(d / "list.jsonl")), tmp_path / "out")
    _check_list(s, kept, rej, d, [3, 4, 5, 8])


def test_list_bad_lines_and_header(list_dir, tmp_path):
    d = list_dir
    (d / "l.jsonl").write_text(
        '{"path": "audio/1_george_5.wav", "transcript": "1", "speaker": "george"}\n'
        "not json\n"
        "[1, 2]\n"
        '{"path": "audio/2_lucas_3.wav", "transcript": "2"}\n'
        "\n"
    )
    s, kept, rej = _run(PrepareConfig("list", str(d / "l.jsonl")), tmp_path / "o1")
    assert (s.total, s.kept) == (4, 1) and kept[0]["transcript"] == "one" and "note" in kept[0]
    assert [r["reason"].split(":")[0] for r in rej] == ["bad list entry", "bad list entry", "bad speaker"]
    (d / "l.csv").write_text("file,transcript,speaker\na.wav,1,x\n")
    with pytest.raises(ValueError, match="path"):
        prepare_corpus(PrepareConfig("list", str(d / "l.csv")), tmp_path / "o2", progress=False)
    # a list with a non-list extension is sniffed
    (d / "l.txt").write_text("path,transcript,speaker\naudio/2_lucas_3.wav,2,lucas\n")
    s, kept, _ = _run(PrepareConfig("list", str(d / "l.txt")), tmp_path / "o3")
    assert [r["id"] for r in kept] == ["lucas-2_lucas_3"]


def test_entries_that_are_not_files_are_rejected_not_dropped(fsdd_subset, fsdd_subset_files, tmp_path):
    """Dangling symlinks, symlink loops and directories named *.wav look like input: each is
    rejected with its reason, so kept + rejected = every entry with an audio extension."""
    rec = fsdd_subset / "recordings"
    (rec / "3_theo_40.wav").symlink_to(tmp_path / "nowhere.wav")
    (rec / "3_theo_41.wav").symlink_to(rec / "3_theo_42.wav")
    (rec / "3_theo_42.wav").symlink_to(rec / "3_theo_41.wav")
    (rec / "3_theo_43.wav").mkdir()
    (rec / "3_theo_44.wav").symlink_to(rec / "0_theo_0.wav")  # a good symlink: kept
    s, kept, rej = _run(PrepareConfig("fsdd", str(fsdd_subset)), tmp_path / "out")
    got = {Path(r["path"]).name: r["reason"] for r in rej}
    assert got == {"3_theo_40.wav": "dangling symlink (target missing)", "3_theo_41.wav": "symlink loop",
                   "3_theo_42.wav": "symlink loop", "3_theo_43.wav": "a directory, not an audio file"}
    assert s.kept == len(fsdd_subset_files) + 1 and s.total == s.kept + s.rejected == len(list(rec.iterdir()))


@pytest.mark.parametrize("fmt", ["WAV", "NIST"])
def test_truncated_audio_is_rejected_or_kept_with_a_note(fsdd_subset, fsdd_audio, write_audio, tmp_path, fmt):
    """A file whose header declares more samples than it holds (an interrupted copy) is rejected
    by default, or kept with a note under --truncated keep; intact files are untouched."""
    from click.testing import CliRunner

    from pvae_data.cli import main

    rec = fsdd_subset / "recordings"
    a, sr = fsdd_audio(4, "lucas", 10)
    path = write_audio(rec / "4_lucas_10.wav", a, sr, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2 * (len(a) // 2)])  # drop the second half of the samples
    held = len(a) - len(a) // 2
    r = CliRunner().invoke(main, ["prepare", "fsdd", str(fsdd_subset), str(tmp_path / "rej"), "-q"])
    assert r.exit_code == 0, r.output
    rej = {Path(x["path"]).name: x["reason"] for x in read_jsonl(tmp_path / "rej" / "rejected.jsonl")}
    assert rej == {"4_lucas_10.wav": f"truncated: the header declares {len(a)} samples, the file holds {held}"}
    r = CliRunner().invoke(main, ["prepare", "fsdd", str(fsdd_subset), str(tmp_path / "keep"), "-q",
                                  "--truncated", "keep"])
    assert r.exit_code == 0, r.output
    kept = {x["id"]: x for x in read_jsonl(tmp_path / "keep" / "utterances.jsonl")}
    assert kept["lucas-4-10"]["num_samples"] == held and kept["lucas-4-10"]["note"].startswith("truncated: ")
    assert sum("note" in x for x in kept.values()) == 1


def test_prepare_kaldi_data_dir(tmp_path, fsdd_subset):
    """A Kaldi data dir (wav.scp with plain paths, text, utt2spk, segments) -> our manifest; a
    piped wav.scp entry, a segment past the end and an utterance without speaker are rejected."""
    import soundfile as sf

    from pvae_data.io_utils import read_jsonl

    d = tmp_path / "train"
    d.mkdir()
    files = [str(p) for p in sorted((fsdd_subset / "recordings").glob("*.wav"))[:4]]
    wav = [f"r{i} {p}" for i, p in enumerate(files)] + ["rpipe no-such-converter x.wav -t wav - |",
                                                         f"rcat cat {files[0]} |", "rbad cat /nonexistent.wav |"]
    durs = [sf.info(p).duration for p in files]
    segs = [f"u{i} r{i} 0.00 {durs[i]:.3f}" for i in range(4)] + ["u4 r0 0.05 0.15", "u5 r1 0 99", "u6 rpipe 0 1",
                                                                  "u8 rcat 0.0 0.2", "u9 rbad 0 1"]
    text = [f"u{i} {Path(files[i]).name[0]}" for i in range(4)] + ["u4 one", "u5 two", "u6 three", "u7 four",
                                                                    "u8 one", "u9 two"]
    spk = [f"u{i} george" for i in range(10) if i != 7]
    for name, lines in (("wav.scp", wav), ("segments", segs), ("text", text), ("utt2spk", spk)):
        (d / name).write_text("\n".join(lines) + "\n")
    s = prepare_corpus(PrepareConfig("kaldi", str(d)), tmp_path / "no_cmds", progress=False)
    assert (s.total, s.kept, s.rejected) == (10, 5, 5)  # without the opt-in, no command runs
    why = {r["id"]: r["reason"] for r in read_jsonl(tmp_path / "no_cmds" / "rejected.jsonl")}
    assert all("--allow-commands" in why[u] for u in ("u6", "u8", "u9"))
    assert not (tmp_path / "no_cmds" / "wav").exists()
    s = prepare_corpus(PrepareConfig("kaldi", str(d), allow_commands=True), tmp_path / "out", progress=False)
    assert (s.total, s.kept, s.rejected) == (10, 6, 4)
    kept = {r["id"]: r for r in read_jsonl(tmp_path / "out" / "utterances.jsonl")}
    assert kept["u4"]["start"] == 0.05 and kept["u4"]["end"] == 0.15 and kept["u4"]["duration"] == 0.1
    assert all(r["split"] == "train" and r["speaker"] == "george" for r in kept.values())
    why = {r["id"]: r["reason"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert "past the end of the recording" in why["u5"] and "'no-such-converter' is not installed" in why["u6"]
    assert "command failed" in why["u9"] and not (tmp_path / "out" / "wav" / "rbad.wav").exists()
    # a command that works (Kaldi's `... |` form) is run once, its WAV kept in OUT/wav/
    assert kept["u8"]["audio"] == str(tmp_path / "out" / "wav" / "rcat.wav")
    assert (tmp_path / "out" / "wav" / "rcat.wav").read_bytes() == Path(files[0]).read_bytes()
    assert "bad segments entry" in why["u7"]  # text and utt2spk name it, segments does not


def test_prepare_kaldi_bad_audio_and_duplicate_keys(tmp_path, fsdd_subset):
    """Corrupt and empty audio in a Kaldi dir are rejected with reasons (kept + rejected = total);
    a key given twice in a table is an error naming file and line, not a silent drop."""
    from pvae_data.io_utils import read_jsonl

    d = tmp_path / "test"
    d.mkdir()
    good = sorted((fsdd_subset / "recordings").glob("*.wav"))[0]
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really a wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    (d / "wav.scp").write_text(f"a-1 {good}\na-2 {tmp_path / 'corrupt.wav'}\na-3 {tmp_path / 'empty.wav'}\n")
    (d / "text").write_text("a-1 one\na-2 two\na-3 three\n")
    (d / "utt2spk").write_text("a-1 a\na-2 a\na-3 a\n")
    s = prepare_corpus(PrepareConfig("kaldi", str(d)), tmp_path / "out", progress=False)
    assert (s.total, s.kept, s.rejected) == (3, 1, 2)
    assert {r["id"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")} == {"a-2", "a-3"}
    (d / "text").write_text("a-1 one\na-2 two\na-1 three\n")
    with pytest.raises(ValueError, match=r"text:3: duplicate key 'a-1'"):
        prepare_corpus(PrepareConfig("kaldi", str(d)), tmp_path / "out2", progress=False)

"""lhotse both ways, against the real lhotse package (an optional extra; installed with dev)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from pvae_data.cli import main as data_main
from pvae_data.io_utils import read_jsonl

lhotse = pytest.importorskip("lhotse")


def cli(*args):
    r = CliRunner().invoke(data_main, [str(a) for a in args])
    return r.exit_code, r.output


def test_export_cuts_load_our_exact_features_and_import_back(tmp_path, fsdd_subset):
    """prepare -> trim -> fbank -> lhotse export: every cut's load_features() equals our matrix
    (max diff 0); lhotse import of those cuts -> a manifest that fbank turns into the same features."""
    import kaldiio

    assert cli("prepare", "fsdd", fsdd_subset, tmp_path / "p", "-q")[0] == 0
    assert cli("trim", tmp_path / "p", tmp_path / "t", "-q")[0] == 0
    assert cli("fbank", tmp_path / "t", tmp_path / "f", "-q")[0] == 0
    code, out = cli("lhotse", "export", tmp_path / "f", tmp_path / "lh")
    assert code == 0, out
    cuts = lhotse.load_manifest(tmp_path / "lh" / "cuts.jsonl.gz")
    ours = kaldiio.load_scp(str(tmp_path / "f" / "feats.scp"))
    assert len(cuts) == len(ours) > 30
    assert max(float(np.abs(c.load_features() - ours[c.id]).max()) for c in cuts) == 0.0
    c = cuts[0]
    assert c.supervisions[0].text in {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert c.recording is not None and c.load_audio().shape[1] > 0
    # back: lhotse cuts -> our manifest -> fbank gives the same matrices (start/end kept)
    code, out = cli("lhotse", "import", tmp_path / "lh" / "cuts.jsonl.gz", tmp_path / "imp")
    assert code == 0 and "kept" in out, out
    recs = read_jsonl(tmp_path / "imp" / "utterances.jsonl")
    assert all(r["end"] > r["start"] >= 0 for r in recs)


def test_export_passes_lhotses_own_validation_with_perturbed_copies(tmp_path, fsdd_subset):
    """Issue 27 item 7: lhotse.qa.validate(cuts, read_data=True) on our export: FSDD's 8 kHz
    recordings are resampled to the features' 16 kHz, speed copies carry lhotse's speed
    transform, and each supervision lies inside its cut."""
    from lhotse.qa import validate

    assert cli("prepare", "fsdd", fsdd_subset, tmp_path / "p", "-q")[0] == 0
    assert cli("trim", tmp_path / "p", tmp_path / "t", "-q")[0] == 0
    assert cli("perturb", tmp_path / "t" / "segments.jsonl", tmp_path / "sp", "--speed", "0.9,1.0,1.1", "-q")[0] == 0
    assert cli("fbank", tmp_path / "sp" / "segments.jsonl", tmp_path / "f", "-q")[0] == 0
    code, out = cli("lhotse", "export", tmp_path / "f", tmp_path / "lh")
    assert code == 0, out
    cuts = lhotse.load_manifest(tmp_path / "lh" / "cuts.jsonl.gz")
    assert any(c.id.startswith("sp0.9-") for c in cuts) and any(c.start > 0 for c in cuts)
    validate(cuts, read_data=True)
    c = next(c for c in cuts if c.id.startswith("sp1.1-"))
    assert c.recording.sampling_rate == 16000 and c.supervisions[0].custom["perturbed_from"] in c.id


def test_import_checks_what_lhotse_and_kaldi_check(tmp_path, fsdd_subset):
    """Issue 27 item 6: duplicate ids, a span ending before it starts, a span past the recording,
    ids and speakers with whitespace are rejected with reasons; garbage and a truncated .gz are
    one-line errors naming the file."""
    import gzip

    wav = sorted((fsdd_subset / "recordings").glob("*.wav"))[0]
    rec = lhotse.Recording.from_file(wav)
    S = lhotse.SupervisionSegment
    sups = [S(id="ok", recording_id=rec.id, start=0.0, duration=0.2, text="one", speaker="a"),
            S(id="ok", recording_id=rec.id, start=0.0, duration=0.1, text="one", speaker="a"),
            S(id="neg", recording_id=rec.id, start=0.2, duration=-0.1, text="one", speaker="a"),
            S(id="past", recording_id=rec.id, start=rec.duration + 1, duration=0.1, text="one", speaker="a"),
            S(id="sp ace", recording_id=rec.id, start=0.0, duration=0.1, text="one", speaker="a"),
            S(id="spk", recording_id=rec.id, start=0.0, duration=0.1, text="one", speaker="s p")]
    lhotse.RecordingSet.from_recordings([rec]).to_file(tmp_path / "r.jsonl.gz")
    with gzip.open(tmp_path / "s.jsonl.gz", "wt") as f:  # written by hand: lhotse's own writer would refuse some
        import json

        for s in sups:
            f.write(json.dumps(s.to_dict()) + "\n")
    code, out = cli("lhotse", "import", tmp_path / "r.jsonl.gz", tmp_path / "s.jsonl.gz", tmp_path / "o")
    assert code == 0 and "kept 1, rejected 5 of 6" in out, out
    why = [r["reason"] for r in read_jsonl(tmp_path / "o" / "rejected.jsonl")]
    assert "duplicate id" in why[0] and "bad span" in why[1] and "past the end" in why[2]
    assert "whitespace" in why[3] and "bad speaker" in why[4]
    (tmp_path / "garbage.jsonl").write_text("this is not json\n")
    data = (tmp_path / "r.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    for bad in ("garbage.jsonl", "cut.jsonl.gz"):
        code, out = cli("lhotse", "import", tmp_path / bad, tmp_path / "s.jsonl.gz", tmp_path / "o2")
        assert code == 1 and bad in out and "not a readable lhotse manifest" in out, out
        assert len(out.strip().splitlines()) == 1 and "Aborted" not in out


def test_import_recordings_and_supervisions_with_bad_sources(tmp_path, fsdd_subset):
    wavs = sorted((fsdd_subset / "recordings").glob("*.wav"))[:3]
    recs = lhotse.RecordingSet.from_recordings(lhotse.Recording.from_file(w) for w in wavs)
    url = lhotse.Recording(id="remote", sources=[lhotse.audio.AudioSource(type="url", channels=[0],
                                                                            source="http://x/y.wav")],
                           sampling_rate=8000, num_samples=8000, duration=1.0)
    recs = lhotse.RecordingSet.from_recordings(list(recs) + [url])
    sups = lhotse.SupervisionSet.from_segments(
        [lhotse.SupervisionSegment(id=f"s{i}", recording_id=r.id, start=0.05, duration=0.2, text="one", speaker="x")
         for i, r in enumerate(recs)]
        + [lhotse.SupervisionSegment(id="orphan", recording_id="nope", start=0, duration=0.1, text="two")])
    recs.to_file(tmp_path / "recordings.jsonl.gz")
    sups.to_file(tmp_path / "supervisions.jsonl.gz")
    code, out = cli("lhotse", "import", tmp_path / "recordings.jsonl.gz", tmp_path / "supervisions.jsonl.gz",
                    tmp_path / "o", "--split", "train")
    assert code == 0 and "kept 3, rejected 2 of 5" in out, out
    kept = read_jsonl(tmp_path / "o" / "utterances.jsonl")
    assert all(r["start"] == 0.05 and r["end"] == 0.25 and r["split"] == "train" for r in kept)
    why = {r["id"]: r["reason"] for r in read_jsonl(tmp_path / "o" / "rejected.jsonl")}
    assert "not one local file" in why["s3"] and "not in the RecordingSet" in why["orphan"]
    # and the imported manifest goes through trim like prepare's output
    assert cli("trim", tmp_path / "o", tmp_path / "t", "-q")[0] == 0


def test_kaldi_data_dir_from_fbank_validates_and_lhotse_kaldi_import_reads_our_features(tmp_path, fsdd_subset):
    """Kaldi data dir -> prepare kaldi -> trim -> fbank -> export --format kaldi: complete data dirs (wav.scp, segments,
    text, utt2spk, spk2utt, feats.scp, cmvn.scp) passing validate_data_dir's checks, and lhotse's
    own Kaldi importer loads features equal to ours (max diff 0)."""
    import kaldiio

    pytest.importorskip("kaldi_native_io")  # lhotse reads Kaldi feats.scp through it
    from lhotse.kaldi import load_kaldi_data_dir

    from conftest import validate_kaldi_data_dir

    # a Kaldi data dir made from FSDD (wav.scp with plain paths, text, utt2spk) -> prepare kaldi
    kd = tmp_path / "train"
    kd.mkdir()
    wavs = sorted((fsdd_subset / "recordings").glob("*.wav"))
    ids = {w: f"{w.stem.split('_')[1]}-{w.stem}" for w in wavs}
    words = "zero one two three four five six seven eight nine".split()
    (kd / "wav.scp").write_text("".join(f"{ids[w]} {w}\n" for w in wavs))
    (kd / "text").write_text("".join(f"{ids[w]} {words[int(w.stem[0])]}\n" for w in wavs))
    (kd / "utt2spk").write_text("".join(f"{ids[w]} {w.stem.split('_')[1]}\n" for w in wavs))
    code, out = cli("prepare", "kaldi", kd, tmp_path / "p", "-q")
    assert code == 0 and f"kept {len(wavs)}" in out, out
    assert cli("trim", tmp_path / "p", tmp_path / "t", "-q")[0] == 0
    assert cli("fbank", tmp_path / "t", tmp_path / "f", "-q")[0] == 0
    validate_kaldi_data_dir(tmp_path / "f", cmvn_from_feats=False)  # the fbank stage's OUT is one too
    code, out = cli("export", tmp_path / "f", tmp_path / "k", "--format", "kaldi")
    assert code == 0, out
    ours = kaldiio.load_scp(str(tmp_path / "f" / "feats.scp"))
    n = 0
    for d in sorted((tmp_path / "k").iterdir()):
        validate_kaldi_data_dir(d, cmvn_from_feats=False)
        segs = {ln.split()[0]: ln.split()[1:] for ln in (d / "segments").read_text().splitlines()}
        wavs = dict(ln.split(maxsplit=1) for ln in (d / "wav.scp").read_text().splitlines())
        assert all(s[0] in wavs and 0 <= float(s[1]) < float(s[2]) for s in segs.values())
        recs, sups, feats = load_kaldi_data_dir(d, sampling_rate=8000, frame_shift=0.01)
        assert len(sups) == len(segs) and len(recs) == len(wavs)
        for f in feats:
            key = f.storage_key.split("-", 1)[1]  # our id behind the speaker prefix
            assert np.array_equal(f.load(), ours[key if key in ours else f.storage_key])
            n += 1
    assert n == len(ours)

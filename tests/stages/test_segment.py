"""The segment stage and the forced aligner, on connected digits built from real FSDD takes.

A small aligner is trained once per session on utterances built from training takes; the
quality bar is then checked on utterances built from test takes (takes never seen in training).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from pvae_data.align import AlignConfig, align_words, load_model
from pvae_data.align.ctm import read_ctm, write_ctm
from pvae_data.align.score import iou, score_boundaries
from pvae_data.cli import main as data_main
from pvae_data.io_utils import read_jsonl, write_jsonl
from pvae_data.stages.align_train import train_aligner
from pvae_data.stages.segment import SegmentConfig, segment_manifest, segment_utterance
from pvae_data.synth_digits import SynthConfig, build_tidigits, synth_utterances, write_synth

TRAIN_TAKES = tuple(range(5, 25))  # a subset of the training takes keeps the session fixture fast


def spans_by_utt(segments: list[dict]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list] = defaultdict(list)
    for s in sorted(segments, key=lambda s: (s["utterance"], s["position"])):
        out[s["utterance"]].append((s["start"], s["end"]))
    return dict(out)


def cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(data_main, list(args))
    return r.exit_code, r.output


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, fsdd_recordings) -> dict:
    """Connected-digit train/test sets on disk and an aligner trained on the train set."""
    root = tmp_path_factory.mktemp("segment")
    train = synth_utterances(fsdd_recordings, takes=TRAIN_TAKES, cfg=SynthConfig(seed=0), prefix="train")
    test = synth_utterances(fsdd_recordings, takes=tuple(range(5)), cfg=SynthConfig(seed=1), prefix="test")
    tr = write_synth(train, root / "train", split="train")
    te = write_synth(test, root / "test", split="test")
    summary = train_aligner(tr["utterances"], root / "model", show_progress=False)
    return {"root": root, "train": tr, "test": te, "model": root / "model", "train_summary": summary}


def test_synth_is_deterministic_and_truth_is_inside_the_audio(fsdd_recordings):
    a = synth_utterances(fsdd_recordings, speakers=("theo",), takes=(0, 1), cfg=SynthConfig(seed=3))
    b = synth_utterances(fsdd_recordings, speakers=("theo",), takes=(0, 1), cfg=SynthConfig(seed=3))
    assert [u.id for u in a] == [u.id for u in b] and all(np.array_equal(x.wave, y.wave) for x, y in zip(a, b))
    for u in a:
        assert 1 <= len(u.digits) <= 7 and len(u.spans) == len(u.digits)
        ends = [0.0] + [e for _, e in u.spans]
        assert all(s >= prev and e > s for (s, e), prev in zip(u.spans, ends))  # ordered, non-overlapping
        assert u.spans[-1][1] < len(u.wave) / u.sample_rate
    pauses = [b[0] - a_[1] for u in synth_utterances(fsdd_recordings, takes=(0, 1, 2)) for a_, b in zip(u.spans, u.spans[1:])]
    assert min(pauses) == 0.0 and max(pauses) <= 0.3 + 1e-6 and np.mean(np.array(pauses) == 0) > 0.1


def test_score_boundaries():
    truth = {"u": [(0.1, 0.5), (0.5, 0.9)], "v": [(0.0, 1.0)]}
    s = score_boundaries({"u": [(0.11, 0.5), (0.56, 0.9)]}, truth)
    assert s["missing"] == 1 and s["boundaries"] == 4
    assert s["within_pct"] == 75.0 and s["median_ms"] == pytest.approx(5.0)
    assert iou((0.0, 1.0), (0.5, 1.5)) == pytest.approx(1 / 3)


def test_model_file_round_trip(corpus):
    m = load_model(corpus["model"])
    assert m.words == sorted(m.words) and "zero" in m.words and len(m.words) == 10
    assert corpus["train_summary"].kept == corpus["train_summary"].total
    assert {"min_score", "max_deficit", "max_word_deficit", "durations"} <= set(m.calibration)
    with pytest.raises(ValueError, match="not an aligner model"):
        load_model(corpus["root"])


def test_quality_bar_on_unseen_takes(corpus):
    """Trained on takes 5-24, scored on takes 0-4: the issue's bars, on every digit boundary."""
    out = corpus["root"] / "seg_quality"
    s = segment_manifest(corpus["test"]["utterances"], out, model=corpus["model"], show_progress=False)
    assert s.kept + s.rejected == s.total and s.rejected <= 1
    truth = {r["id"]: [tuple(x) for x in r["spans"]] for r in read_jsonl(corpus["test"]["truth"])}
    score = score_boundaries(spans_by_utt(read_jsonl(out / "segments.jsonl")), truth)
    print(f"\nsegment quality: {score}")
    assert score["wrong_count"] == 0 and score["words"] >= 250
    assert score["median_ms"] <= 20.0
    assert score["within_pct"] >= 95.0
    assert score["iou_pct"] >= 97.0


def test_segment_records_and_deterministic_ids(corpus):
    recs = read_jsonl(corpus["test"]["utterances"])[:12]
    write_jsonl(corpus["root"] / "small.jsonl", recs)
    a = segment_manifest(corpus["root"] / "small.jsonl", corpus["root"] / "ids_a", model=corpus["model"],
                         show_progress=False)
    b = segment_manifest(corpus["root"] / "small.jsonl", corpus["root"] / "ids_b", model=corpus["model"], jobs=2,
                         chunk_size=5, show_progress=False)
    sa = (corpus["root"] / "ids_a" / "segments.jsonl").read_bytes()
    assert sa == (corpus["root"] / "ids_b" / "segments.jsonl").read_bytes() and a.extra == b.extra
    segs = read_jsonl(corpus["root"] / "ids_a" / "segments.jsonl")
    by = {r["id"]: r for r in recs}
    for s in segs:
        u = by[s["utterance"]]
        assert s["id"] == f"{u['id']}-d{s['position']}"
        assert s["word"] == u["transcript"].split()[s["position"]] == s["transcript"]
        assert s["label"] == ("zero one two three four five six seven eight nine".split().index(s["word"]))
        assert s["speaker"] == u["speaker"] and s["split"] == "test" and s["audio"] == u["audio"]
        assert 0 <= s["start"] < s["end"] <= u["duration"] and s["duration"] == pytest.approx(s["end"] - s["start"])
    assert len(segs) == sum(len(r["transcript"].split()) for r in recs)


def test_rejections_are_reasons_not_cuts(corpus, tmp_path, write_audio):
    """Wrong transcript, too-short audio, silence, unknown word, missing file: each rejected with why."""
    good = read_jsonl(corpus["test"]["utterances"])[0]
    words = good["transcript"].split()
    wrong = [("five" if w != "five" else "two") for w in words]
    x, sr = sf.read(good["audio"], dtype="int16")
    rng = np.random.default_rng(0)
    silence = write_audio(tmp_path / "silence.wav", rng.normal(0, 3, sr * 2).astype(np.int16), sr)
    t0 = read_jsonl(corpus["test"]["truth"])[0]["spans"][0][0]  # 0.25 s from the first word's onset
    short = write_audio(tmp_path / "short.wav", x[int((t0 - 0.05) * sr): int((t0 + 0.2) * sr)], sr)
    recs = [
        good,
        {**good, "id": "x-wrong", "transcript": " ".join(wrong)},
        {**good, "id": "x-short", "audio": str(short), "transcript": "one two three four five six seven"},
        {**good, "id": "x-silence", "audio": str(silence), "transcript": "one two"},
        {**good, "id": "x-unknown", "transcript": "one uno"},
        {**good, "id": "x-missing", "audio": str(tmp_path / "nope.wav")},
        {**good, "id": "x-dropped", "transcript": " ".join(words[:-1])},
    ]
    write_jsonl(tmp_path / "m.jsonl", recs)
    s = segment_manifest(tmp_path / "m.jsonl", tmp_path / "out", model=corpus["model"], show_progress=False)
    assert (s.total, s.kept, s.rejected) == (7, 1, 6)
    why = {r["id"]: r["reason"] for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")}
    assert "mismatch" in why["x-wrong"]
    assert "too short" in why["x-short"]
    assert "no speech" in why["x-silence"]
    assert "not in the aligner's vocabulary" in why["x-unknown"]
    assert "file not found" in why["x-missing"]
    assert "mismatch" in why["x-dropped"]
    assert {r["utterance"] for r in read_jsonl(tmp_path / "out" / "segments.jsonl")} == {good["id"]}


def test_mismatch_detection_rate(corpus):
    """A substituted word is caught in >= 90 % of utterances; correct transcripts pass."""
    m = load_model(corpus["model"])
    recs = read_jsonl(corpus["test"]["utterances"])[:30]
    rng = np.random.default_rng(1)
    caught = passed = 0
    for r in recs:
        x, sr = sf.read(r["audio"], dtype="int16")
        words = r["transcript"].split()
        k = int(rng.integers(len(words)))
        sub = list(words)
        sub[k] = str(rng.choice([w for w in m.words if w != words[k]]))
        caught += not align_words(m, x.astype(np.float32), sub, AlignConfig()).ok
        passed += align_words(m, x.astype(np.float32), words, AlignConfig()).ok
    assert caught >= 27 and passed >= 29


def test_ctm_round_trip_and_bad_ctm(corpus, tmp_path):
    recs = read_jsonl(corpus["test"]["utterances"])[:8]
    # a real single-word recording (the first digit of recs[0], cut with 0.15 s around it)
    truth = read_jsonl(corpus["test"]["truth"])[0]
    x, sr = sf.read(recs[0]["audio"], dtype="int16")
    a0, b0 = truth["spans"][0]
    sf.write(tmp_path / "single.wav", x[max(0, int((a0 - 0.15) * sr)):int((b0 + 0.15) * sr)], sr)
    single = {**recs[0], "id": "single", "audio": str(tmp_path / "single.wav"), "transcript": truth["words"][0]}
    single.pop("duration", None), single.pop("num_samples", None)
    recs.append(single)
    write_jsonl(tmp_path / "m.jsonl", recs)
    a = segment_manifest(tmp_path / "m.jsonl", tmp_path / "ours", model=corpus["model"],
                         export_ctm=tmp_path / "ours.ctm", show_progress=False)
    assert a.kept == 9, read_jsonl(tmp_path / "ours" / "rejected.jsonl")
    lines = (tmp_path / "ours.ctm").read_text().splitlines()
    assert len(lines) == a.extra["ctm words"] == a.extra["segments"] and lines[0].split()[1] == "1"
    b = segment_manifest(tmp_path / "m.jsonl", tmp_path / "imported", ctm=tmp_path / "ours.ctm", show_progress=False)
    assert read_jsonl(tmp_path / "ours" / "segments.jsonl") == read_jsonl(tmp_path / "imported" / "segments.jsonl")
    assert b.kept == a.kept
    # an external CTM (MFA style: silence tokens, another utterance, a wrong word, a malformed line)
    ctm, _ = read_ctm(tmp_path / "ours.ctm")
    u0, u1 = recs[0]["id"], recs[1]["id"]
    rows = [(u0, w, s, e, None) for w, s, e in ctm[u0]] + [(u0, "sil", 0.0, 0.05, None), ("ghost", "one", 0, 1, None)]
    rows += [(u1, "nine" if w != "nine" else "one", s, e, None) for w, s, e in ctm[u1][:1]] + \
            [(u1, w, s, e, None) for w, s, e in ctm[u1][1:]]
    write_ctm(tmp_path / "ext.ctm", rows)
    with open(tmp_path / "ext.ctm", "a") as f:
        f.write("broken line\n")
    c = segment_manifest(tmp_path / "m.jsonl", tmp_path / "ext", ctm=tmp_path / "ext.ctm", show_progress=False)
    why = {r["id"]: r["reason"] for r in read_jsonl(tmp_path / "ext" / "rejected.jsonl")}
    assert "differ from the transcript" in why[u1]
    assert all("no alignment" in why[r["id"]] for r in recs[2:8])
    assert c.kept == 2 and c.kept + c.rejected == c.total == 9  # u0 and the single word
    assert c.extra["ctm utterances not in manifest"] == 1 and c.extra["malformed ctm lines"] == 1


def test_cli_segment_fbank_shard(corpus, tmp_path):
    """segment -> fbank -> shard audio on a small connected-digit set, all through the CLI."""
    recs = read_jsonl(corpus["test"]["utterances"])[:10] + read_jsonl(corpus["train"]["utterances"])[:10]
    write_jsonl(tmp_path / "m.jsonl", recs)
    code, out = cli("segment", str(tmp_path / "m.jsonl"), str(tmp_path / "seg"), "--model", str(corpus["model"]),
                    "--write-audio", "--export-ctm", str(tmp_path / "a.ctm"), "-q")
    assert code == 0, out
    n_words = sum(len(r["transcript"].split()) for r in recs)
    assert "kept 20, rejected 0 of 20" in out and f"segments {n_words}" in out
    segs = read_jsonl(tmp_path / "seg" / "segments.jsonl")
    for s in segs[:5]:
        cut, sr = sf.read(s["cut_audio"])
        assert abs(len(cut) / sr - s["duration"]) < 2 / sr
    code, out = cli("fbank", str(tmp_path / "seg" / "segments.jsonl"), str(tmp_path / "fb"), "-q")
    assert code == 0 and f"kept {n_words}, rejected 0 of {n_words}" in out, out
    code, out = cli("shard", "audio", str(tmp_path / "fb"), str(tmp_path / "sh"), "-q")
    assert code == 0 and f"kept {n_words}" in out, out
    index = json.loads((tmp_path / "sh" / "index.json").read_text())
    assert {e["split"] for e in index["shards"]} == {"train", "test"}
    assert sum(e["num_items"] for e in index["shards"]) == n_words
    code, out = cli("segment", str(tmp_path / "m.jsonl"), str(tmp_path / "x"), "--model", str(tmp_path))
    assert code != 0 and "not an aligner model" in out and "Traceback" not in out
    assert (tmp_path / "seg" / "adapted").is_dir()  # speaker adaptation is on by default
    code, out = cli("segment", str(tmp_path / "m.jsonl"), str(tmp_path / "plain"), "--model", str(corpus["model"]),
                    "--no-speaker-adapt", "-q")
    assert code == 0 and "kept 20, rejected 0 of 20" in out, out
    assert not (tmp_path / "plain" / "adapted").exists()
    assert json.loads((tmp_path / "plain" / "segment_config.json").read_text())["config"]["adapt"]["iterations"] == 0


def test_tidigits_layout_through_the_cli(tmp_path, fsdd_recordings):
    """SPHERE TIDIGITS layout -> prepare tidigits -> segment (trains its own aligner) -> fbank -> shard."""
    truth = build_tidigits(fsdd_recordings, tmp_path / "ldc", SynthConfig(seed=5, max_digits=5), max_per_split=70,
                           speakers=("george", "jackson", "nicolas"))
    assert any("oh" in t["words"] for t in truth.values()) and any("zero" in t["words"] for t in truth.values())
    head = (next(iter(truth.values()))["path"])
    assert open(head, "rb").read(7) == b"NIST_1A"
    code, out = cli("prepare", "tidigits", str(tmp_path / "ldc"), str(tmp_path / "prep"), "-q")
    assert code == 0 and f"kept {len(truth)}, rejected 0" in out, out
    code, out = cli("segment", str(tmp_path / "prep" / "utterances.jsonl"), str(tmp_path / "seg"), "-q")
    assert code == 0, out
    assert (tmp_path / "seg" / "model" / "model.json").is_file()
    first = (tmp_path / "seg" / "segments.jsonl").read_bytes()
    code, again = cli("segment", str(tmp_path / "prep" / "utterances.jsonl"), str(tmp_path / "seg"), "-q")
    assert code == 0 and f"({len(truth)} already done, reused)" in again and "already there, reused" in again, again
    assert "trained on" in out and "trained on" not in again  # the rerun neither retrains nor realigns
    assert (tmp_path / "seg" / "segments.jsonl").read_bytes() == first
    model = load_model(tmp_path / "seg" / "model")
    assert "oh" in model.words and "zero" in model.words  # distinct words
    segs = read_jsonl(tmp_path / "seg" / "segments.jsonl")
    kept = {s["utterance"] for s in segs}
    assert len(kept) >= 0.9 * len(truth)
    test_ids = [k for k, t in truth.items() if t["split"] == "test" and k in kept]
    score = score_boundaries({k: v for k, v in spans_by_utt(segs).items() if k in test_ids},
                             {k: [tuple(s) for s in truth[k]["spans"]] for k in test_ids})
    print(f"\nTIDIGITS-layout test split: {score}")
    assert score["within_pct"] >= 90.0
    for s in segs:
        assert s["word"] == truth[s["utterance"]]["words"][s["position"]]
        assert s["label"] == (0 if s["word"] in ("oh", "zero") else s["label"])
    code, out = cli("fbank", str(tmp_path / "seg" / "segments.jsonl"), str(tmp_path / "fb"), "-q")
    assert code == 0, out
    code, out = cli("shard", "audio", str(tmp_path / "fb"), str(tmp_path / "sh"), "-q")
    assert code == 0 and f"kept {len(segs)}" in out, out


# --------------------------------------------------------------------------------- job arrays, resume


def array_manifest(corpus, path: Path) -> Path:
    """14 utterances -> chunks of 4: 0-3 (4, 4, 4, 2); a mislabelled single word and a missing file among them."""
    recs = read_jsonl(corpus["test"]["utterances"])[:12]
    recs.insert(5, {**recs[0], "id": "single", "transcript": "seven"})
    recs.append({**recs[1], "id": "gone", "audio": str(path.parent / "nope.wav")})
    write_jsonl(path, recs)
    return path


def test_segment_array_union_equals_one_run(corpus, tmp_path):
    """3 members (run one after the other) + the plain-run merge == one plain run, byte for byte."""
    m = array_manifest(corpus, tmp_path / "m.jsonl")
    opts = ["--model", str(corpus["model"]), "--chunk-size", "4", "-q"]
    code, full = cli("segment", str(m), str(tmp_path / "full"), *opts, "--export-ctm", str(tmp_path / "full.ctm"))
    assert code == 0 and "kept 12, rejected 2 of 14" in full and "already done" not in full, full
    out = tmp_path / "array"
    outs = []
    for i in range(3):  # chunks {0, 3}, {1}, {2}: 6, 4 and 4 utterances
        code, o = cli("segment", str(m), str(out), *opts, "--num-jobs", "3", "--job-index", str(i),
                      "--export-ctm", str(tmp_path / "array.ctm"))
        assert code == 0 and f"job {i} of 3" in o and "merge: once every member has finished" in o, o
        outs.append(o)
    assert [o.split(" of ")[1].split()[0] for o in outs] == ["6", "4", "4"]
    assert sorted(p.name for p in (out / "parts").iterdir()) == [f"segment.{i:05d}.json" for i in range(4)]
    assert not (out / "segments.jsonl").exists() and not (tmp_path / "array.ctm").exists()  # members merge nothing
    code, merged = cli("segment", str(m), str(out), *opts, "--export-ctm", str(tmp_path / "array.ctm"))
    assert code == 0 and "kept 12, rejected 2 of 14" in merged and "(14 already done, reused)" in merged, merged
    for name in ("segments.jsonl", "rejected.jsonl", "segment_config.json"):
        assert (out / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
    assert (tmp_path / "array.ctm").read_bytes() == (tmp_path / "full.ctm").read_bytes()
    assert [r["id"] for r in read_jsonl(out / "rejected.jsonl")] == ["single", "gone"]


def test_segment_resumes_from_parts(corpus, tmp_path):
    """A plain run keeps its finished chunks: an interrupted run (some parts, no outputs) resumes;
    parts made for another config are recomputed."""
    m = array_manifest(corpus, tmp_path / "m.jsonl")
    opts = ["--model", str(corpus["model"]), "--chunk-size", "4", "-q"]
    code, o = cli("segment", str(m), str(tmp_path / "full"), *opts)
    assert code == 0, o
    out = tmp_path / "out"
    code, o = cli("segment", str(m), str(out), *opts, "--num-jobs", "2", "--job-index", "1")  # chunks 1, 3: 6 utts
    assert code == 0 and "job 1 of 2" in o, o
    (out / "parts" / ".segment.00000.json.killed.tmp").write_text("{")  # a killed attempt's leftover
    code, o = cli("segment", str(m), str(out), *opts)
    assert code == 0 and "(6 already done, reused)" in o, o
    assert not list((out / "parts").glob(".*.tmp"))
    assert (out / "segments.jsonl").read_bytes() == (tmp_path / "full" / "segments.jsonl").read_bytes()
    # The plain run wrote its own parts too: interrupted after chunks 0-2, a rerun redoes chunk 3 only.
    (out / "parts" / "segment.00003.json").unlink()
    (out / "segments.jsonl").unlink()
    s = segment_manifest(m, out, model=corpus["model"], chunk_size=4, show_progress=False)
    assert s.skipped_done == 12 and (s.kept, s.rejected) == (12, 2)
    assert (out / "segments.jsonl").read_bytes() == (tmp_path / "full" / "segments.jsonl").read_bytes()
    (out / "parts" / "segment.00001.json").write_text('{"key": "truncated')  # unreadable: recomputed
    assert segment_manifest(m, out, model=corpus["model"], chunk_size=4, show_progress=False).skipped_done == 10
    code, o = cli("segment", str(m), str(out), *opts, "--margin", "0.05")  # another config: nothing reused
    assert code == 0 and "already done" not in o, o


def test_segment_array_needs_an_existing_aligner(corpus, tmp_path, monkeypatch):
    """Members never train: without --model or OUT/model they fail with the fix; with an aligner
    in OUT/model (align-train's output) members and the merge use it."""
    import shutil

    m = array_manifest(corpus, tmp_path / "m.jsonl")
    out = tmp_path / "out"
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    code, o = cli("segment", str(m), str(out), "--chunk-size", "4", "-q", "--num-jobs", "3")
    assert code == 1 and "need an existing aligner" in o and "--model" in o and "align-train" in o, o
    assert "Traceback" not in o and not (out / "model").exists() and not (out / "parts").exists()
    shutil.copytree(corpus["model"], out / "model")  # as `pvae-data align-train MANIFEST OUT/model` leaves it
    for i in range(3):
        code, o = cli("segment", str(m), str(out), "--chunk-size", "4", "-q", "--num-jobs", "3", "--job-index", str(i))
        assert code == 0 and f"job {i} of 3" in o, o
    code, o = cli("segment", str(m), str(out), "--chunk-size", "4", "-q", "--export-ctm", str(tmp_path / "w.ctm"))
    assert code == 0 and "(14 already done, reused)" in o and "already there, reused" in o and "trained on" not in o, o
    # OUT/model that segment trained for another manifest is not used by members.
    (out / "model" / "segment_train.json").write_text('{"manifest_sha256": "other"}')
    code, o = cli("segment", str(m), str(out), "--chunk-size", "4", "-q", "--num-jobs", "3", "--job-index", "0")
    assert code == 1 and "for another manifest" in o and "Traceback" not in o, o
    # Only an aligner needs one: spans from a CTM work in an array without a model.
    code, o = cli("segment", str(m), str(tmp_path / "ctm"), "--ctm", str(tmp_path / "w.ctm"), "--chunk-size", "4",
                  "-q", "--num-jobs", "2", "--job-index", "0")
    assert code == 0 and "job 0 of 2" in o and not (tmp_path / "ctm" / "model").exists(), o


def test_single_word_transcripts_are_checked_by_the_aligner(corpus):
    """A two- or three-digit recording labelled with one of its digits is rejected (it used to be
    kept, every digit's audio labelled as that one), a real one-digit recording is kept."""
    m = load_model(corpus["model"])
    recs = [r for r in read_jsonl(corpus["test"]["utterances"]) if 2 <= len(r["transcript"].split()) <= 3][:12]
    assert len(recs) >= 6
    rejected = 0
    for r in recs:
        segs, rej, _ = segment_utterance({**r, "transcript": r["transcript"].split()[0]}, m, SegmentConfig())
        rejected += rej is not None and "mismatch" in rej["reason"]
    assert rejected >= len(recs) - 1
    # without an aligner (a corpus of single words only) they are only trimmed, as before
    segs, rej, _ = segment_utterance({**recs[0], "transcript": "one"}, None, SegmentConfig())
    assert rej is None and len(segs) == 1


def test_background_comes_from_outside_the_words():
    """The VAD's floor is taken between and around the words, never from inside one; a recording
    with no background keeps the aligner's edges."""
    from pvae_data.word_edges import background_reference, trim_words

    rate = 8000
    rng = np.random.default_rng(0)
    t = np.arange(int(0.3 * rate)) / rate
    word = 3000 * np.sin(2 * np.pi * 300 * t) * np.hanning(len(t))  # a 300 ms "word"
    quiet = rng.normal(0, 5, int(0.2 * rate))
    wave = np.concatenate([quiet, word, word])  # background only before the first word
    spans = [(0.2, 0.5), (0.5, 0.8)]
    cfg = SegmentConfig()
    ref = background_reference(wave, rate, spans, cfg)
    assert ref is not None and len(ref) == int(cfg.noise_ref_s * rate) and np.std(ref) < 10
    tight = wave[int(0.2 * rate):]  # cut tight: no stretch outside the words
    assert background_reference(tight, rate, [(0.0, 0.3), (0.3, 0.6)], cfg) is None
    assert trim_words(tight, rate, [(0.0, 0.3), (0.3, 0.6)], cfg) == [(0, 2400), (2400, 4800)]
    # a "gap" that is as loud as the words is speech, not background
    loud = np.concatenate([3000 * np.sin(2 * np.pi * 300 * t[:800]), word, word])
    assert background_reference(loud, rate, [(0.1, 0.4), (0.4, 0.7)], cfg) is None


def test_speaker_adaptation_is_made_once_per_speaker_and_reused(corpus, tmp_path):
    """Segment adapts the aligner to each speaker of the manifest (OUT/adapted/<speaker>/, made
    from the whole manifest, so job-array members agree) and a rerun reuses it; with
    ``adapt.iterations: 0`` the unadapted model aligns everything."""
    from pvae_data.align.adapt import AdaptConfig
    from pvae_data.stages.segment_adapt import ADAPT_MARKER, ADAPT_SUBDIR

    recs = read_jsonl(corpus["test"]["utterances"])
    speakers = {r["speaker"] for r in recs}
    out = tmp_path / "seg"
    segment_manifest(corpus["test"]["utterances"], out, model=corpus["model"], show_progress=False)
    made = sorted((out / ADAPT_SUBDIR).iterdir())
    assert len(made) == len(speakers) and all((d / ADAPT_MARKER).is_file() for d in made)
    info = json.loads((made[0] / "model.json").read_text())["info"]["adapted"]
    assert info["iterations"] == SegmentConfig().adapt.iterations and info["frames"] > 0
    stamps = {d: (d / "model.npz").stat().st_mtime_ns for d in made}
    first = (out / "segments.jsonl").read_bytes()
    segment_manifest(corpus["test"]["utterances"], tmp_path / "seg", model=corpus["model"], show_progress=False)
    assert {d: (d / "model.npz").stat().st_mtime_ns for d in made} == stamps
    assert (out / "segments.jsonl").read_bytes() == first
    plain = tmp_path / "plain"
    segment_manifest(corpus["test"]["utterances"], plain, model=corpus["model"],
                     cfg=SegmentConfig(adapt=AdaptConfig(iterations=0)), show_progress=False)
    assert not (plain / ADAPT_SUBDIR).exists()
    truth = {r["id"]: [tuple(s) for s in r["spans"]] for r in read_jsonl(corpus["test"]["truth"])}
    adapted_score = score_boundaries(spans_by_utt(read_jsonl(out / "segments.jsonl")), truth)
    plain_score = score_boundaries(spans_by_utt(read_jsonl(plain / "segments.jsonl")), truth)
    assert adapted_score["within_pct"] >= plain_score["within_pct"] - 1.0


def test_a_20_minute_2000_word_recording_is_refused_up_front_in_bounded_memory(corpus, tmp_path, fsdd_recordings):
    """Issue 27 item 10: the forced Viterbi's back-pointers grow as frames x graph states (20 min,
    2,000 words: ~14 GB); segment refuses such a record before allocating, naming the limit, and
    its peak memory stays far under 2 GB."""
    import subprocess
    import sys

    import soundfile as sf

    rng = np.random.default_rng(0)
    names = ["zero", "one", "two", "three"]
    takes = {d: sf.read(fsdd_recordings / f"{d}_jackson_{t}.wav", dtype="int16")[0] for d in range(4) for t in (7,)}
    digits = rng.integers(0, 4, 2000)
    pause = np.zeros(int(0.2 * 8000), np.int16)
    wave = np.concatenate([np.concatenate([takes[d], pause]) for d in digits])
    wave = np.resize(wave, 20 * 60 * 8000)  # 20 minutes
    wav = tmp_path / "long.wav"
    sf.write(wav, wave, 8000)
    words = " ".join(names[d] for d in digits)
    from pvae_data.io_utils import write_jsonl

    write_jsonl(tmp_path / "m.jsonl", [{"id": "long", "audio": str(wav), "speaker": "s", "transcript": words,
                                        "split": "test"}])
    code = ("import resource, sys; from pvae_data.cli import main\n"
            "try:\n main(sys.argv[1:])\nexcept SystemExit as e:\n"
            " print('maxrss_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); raise\n")
    r = subprocess.run([sys.executable, "-c", code, "segment", str(tmp_path / "m.jsonl"), str(tmp_path / "out"),
                        "--model", str(corpus["model"]), "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "every input was rejected" in r.stderr, r.stderr[-2000:]
    rss = float(r.stdout.split("maxrss_mb")[1].split()[0])
    rej = json.loads((tmp_path / "out" / "rejected.jsonl").read_text())
    assert "max_trellis_mb" in rej["reason"] and "bounded memory" in rej["reason"]
    assert rss < 2048, rss


def test_adaptation_data_option(corpus, tmp_path):
    """``adapt.data`` (issue 26): "aligned" (the default) adapts on every transcript the forced path
    fits, so a voice far from the training voices, whose transcripts the unadapted aligner rejects,
    still gets adapted; "accepted" only on those the unadapted aligner accepts. On FSDD's own
    voices the default rejects nothing more."""
    from pvae_data.align.adapt import AdaptConfig

    assert AdaptConfig().data == "aligned"
    with pytest.raises(ValueError, match="adapt.data must be"):
        AdaptConfig(iterations=1, data="everything")
    acc = SegmentConfig(adapt=AdaptConfig(iterations=3, tau=10.0, data="accepted"))
    s = segment_manifest(corpus["test"]["utterances"], tmp_path / "acc", model=corpus["model"], cfg=acc,
                         show_progress=False)
    base = segment_manifest(corpus["test"]["utterances"], tmp_path / "al", model=corpus["model"], show_progress=False)
    assert s.kept + s.rejected == s.total and base.rejected <= s.rejected
    saved = json.loads((tmp_path / "acc" / "segment_config.json").read_text())["config"]["adapt"]
    assert saved["data"] == "accepted"


def test_the_noise_threshold_follows_the_speaker(corpus):
    """``adapt.score_shift_max`` (issue 26): a speaker whose speech scores lower than the training
    voices' (here: the test utterances with their spectrum tilted, a different channel/voice) gets
    its "noise, not speech" threshold lowered by that much, at most score_shift_max; white noise is
    still refused; the base model is untouched; 0 switches it off."""
    import scipy.signal

    from pvae_data.align.adapt import AdaptConfig, map_adapt
    from pvae_data.align.hmm import load_model
    from pvae_data.align.mfcc import align_features
    from pvae_data.audio import load_audio
    from pvae_data.digits import transcript_words
    from pvae_data.stages.segment_adapt import _speaker_min_score

    base = load_model(corpus["model"])
    before = dict(base.calibration)
    recs = [r for r in read_jsonl(corpus["test"]["utterances"]) if r["speaker"] == "theo"][:8]
    data = []
    for r in recs:
        wave, _ = load_audio(r["audio"], target_rate=base.features.sample_rate)
        tilted = scipy.signal.lfilter([1.0, -0.95], [1.0], wave)  # a strong high-frequency tilt
        data.append((align_features(tilted, base.features), transcript_words(r)))
    cfg = AdaptConfig(iterations=3, tau=10.0, score_shift_max=15.0)
    adapted = _speaker_min_score(map_adapt(base, data, cfg), base, data, cfg)
    shift = adapted.info["speaker_score_shift"]
    assert 0 < shift <= 15 and adapted.calibration["min_score"] == pytest.approx(before["min_score"] - shift, abs=1e-3)
    assert base.calibration == before
    off = AdaptConfig(iterations=3, tau=10.0, score_shift_max=0.0)
    assert _speaker_min_score(map_adapt(base, data, off), base, data, off).calibration["min_score"] == before["min_score"]
    noise = np.random.default_rng(0).normal(0, 3000, 16000)  # white noise is still refused (by the
    assert not align_words(adapted, noise, ["five", "two"]).ok  # duration and recognition checks)
    with pytest.raises(ValueError, match="score_shift_max"):
        AdaptConfig(score_shift_max=-1.0)

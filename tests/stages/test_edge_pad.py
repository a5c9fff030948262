"""The perturb stage's noise floor at a copy's edges (``edge_pad_s``) and the fbank stage applying it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pvae_data.cli import main as data_main
from pvae_data.perturb import edge_pad
from pvae_data.stages.perturb import PerturbConfig, perturb_manifest


def _trimmed(tmp_path: Path, fsdd_recordings: Path) -> Path:
    """Three train takes: one cut at both file edges, one inside its file, one cut at the start only."""
    from pvae_data.audio import load_audio

    recs = []
    for take, (a, b) in enumerate([(0.0, None), (0.05, -0.05), (0.0, -0.05)]):
        p = fsdd_recordings / f"3_jackson_{take + 5}.wav"
        wave, rate = load_audio(p)
        dur = len(wave) / rate
        recs.append({"id": f"jackson-3-{take + 5:02d}", "audio": str(p), "speaker": "jackson", "transcript": "three",
                     "split": "train", "sample_rate": rate, "num_samples": len(wave), "start": a,
                     "end": round(dur if b is None else dur + b, 6)})
        recs[-1]["duration"] = round(recs[-1]["end"] - a, 6)
    recs.append({**recs[0], "id": "jackson-3-00", "split": "test"})
    path = tmp_path / "segments.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_edge_pad_adds_a_seeded_floor_at_the_asked_level():
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(8000) * 0.1).astype(np.float32)
    out = edge_pad(wave, 8000, 0.25, 0.125, 40.0, seed=3)
    assert len(out) == 8000 + 2000 + 1000
    np.testing.assert_array_equal(out[2000:10000], wave)
    floor_db = 10 * np.log10(np.mean(out[:2000].astype(np.float64) ** 2) / np.mean(wave.astype(np.float64) ** 2))
    assert -41.0 < floor_db < -39.0
    np.testing.assert_array_equal(out, edge_pad(wave, 8000, 0.25, 0.125, 40.0, seed=3))
    assert not np.array_equal(out, edge_pad(wave, 8000, 0.25, 0.125, 40.0, seed=4))


def test_perturb_pads_only_copies_cut_at_their_files_edge(tmp_path, fsdd_recordings):
    seg = _trimmed(tmp_path, fsdd_recordings)
    cfg = PerturbConfig(speed=(0.9, 1.0, 1.1), edge_pad_s=0.05, edge_pad_db=(30.0, 60.0))
    s = perturb_manifest(seg, tmp_path / "p", cfg)
    assert s.kept + s.rejected == s.total == 4 and s.extra["copies"] == 6
    recs = {r["id"]: r for r in map(json.loads, (tmp_path / "p" / "segments.jsonl").read_text().splitlines())}
    assert not any("edge_pad" in r for r in recs.values() if not r.get("perturbed_from"))  # sources as they are
    for f in ("0.9", "1.1"):
        both, inside, start = (recs[f"sp{f}-jackson-3-{t:02d}"].get("edge_pad") for t in (5, 6, 7))
        assert inside is None
        assert 0 < both[0] <= 0.05 and 0 < both[1] <= 0.05 and 30.0 <= both[2] <= 60.0
        assert 0 < start[0] <= 0.05 and start[1] == 0.0
    c = recs["sp0.9-jackson-3-05"]
    src = recs["jackson-3-05"]
    assert c["duration"] == pytest.approx((src["end"] - src["start"]) / 0.9 + c["edge_pad"][0] + c["edge_pad"][1], abs=1e-5)
    first = (tmp_path / "p" / "segments.jsonl").read_bytes()
    perturb_manifest(seg, tmp_path / "p", cfg)
    assert (tmp_path / "p" / "segments.jsonl").read_bytes() == first  # the same draws again
    # a padded copy is not perturbed again
    s2 = perturb_manifest(tmp_path / "p" / "segments.jsonl", tmp_path / "p2", PerturbConfig())
    assert s2.rejected == 6 and s2.kept + s2.rejected == s2.total


def test_fbank_stage_applies_the_edge_pad_and_refuses_a_crafted_one(tmp_path, fsdd_recordings):
    from pvae_data.fbank import FbankConfig
    from pvae_data.stages.fbank import FbankStageConfig, compute_features, load_features

    seg = _trimmed(tmp_path, fsdd_recordings)
    perturb_manifest(seg, tmp_path / "p", PerturbConfig(speed=(0.9, 1.0), edge_pad_s=0.05))
    recs = [json.loads(x) for x in (tmp_path / "p" / "segments.jsonl").read_text().splitlines()]
    recs.append({**recs[0], "id": "x-pad", "edge_pad": [0.05, 0.0, 50.0]})
    recs.append({**recs[0], "id": "x-huge", "edge_pad": [1e9, 0.0, 40.0]})  # memory bounded: refused
    recs.append({**recs[0], "id": "x-nan", "edge_pad": [float("nan"), 0.0, 40.0]})
    recs.append({**recs[0], "id": "x-text", "edge_pad": "rm -rf /"})
    path = tmp_path / "crafted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    fb = FbankConfig()
    s = compute_features(path, tmp_path / "f", FbankStageConfig(fbank=fb), show_progress=False)
    assert s.rejected == 3 and s.kept + s.rejected == s.total == len(recs)
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "f" / "rejected.jsonl").read_text().splitlines()]
    assert all(r.startswith("bad perturbation: edge_pad") for r in reasons)
    out = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "f" / "features.jsonl").read_text().splitlines()}
    c = next(r for r in recs if r["id"] == "sp0.9-jackson-3-05")
    assert out[c["id"]]["num_frames"] > out["jackson-3-05"]["num_frames"] / 0.9 + 1  # the drawn floor is there
    # 50 ms before the word (five whole frame shifts): the word's frames are the unpadded take's, shifted
    feats = load_features(tmp_path / "f", out["x-pad"])
    plain = load_features(tmp_path / "f", out["jackson-3-05"])
    np.testing.assert_allclose(feats[5:], plain, atol=1e-4)
    floor = feats[:3]  # frames wholly inside the floor
    assert floor.mean() < plain.mean() - 5
    top = fb.num_mel_bins * 3 // 4  # over 5.5 kHz: nothing in an 8 kHz file, nor in its room's floor
    assert floor[:, top:].mean() < plain[:, top:].mean() + 1


@pytest.mark.parametrize("flag,value,field", [("--edge-pad", "-0.1", "edge_pad_s"), ("--edge-pad", "5", "edge_pad_s")])
def test_perturb_cli_refuses_a_bad_edge_pad_by_name(tmp_path, fsdd_recordings, flag, value, field):
    seg = _trimmed(tmp_path, fsdd_recordings)
    r = CliRunner().invoke(data_main, ["perturb", str(seg), str(tmp_path / "o"), flag, value])
    assert r.exit_code != 0 and field in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o" / "segments.jsonl").exists()
    with pytest.raises(ValueError, match="edge_pad_db"):
        PerturbConfig(edge_pad_db=(60.0, 30.0))

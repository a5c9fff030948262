"""The perturb stage's clipped copies (``clip_prob``, ``clip_db``) and the fbank stage applying them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pvae_data.cli import main as data_main
from pvae_data.perturb import clip
from pvae_data.stages.perturb import PerturbConfig, perturb_manifest


def _takes(tmp_path: Path, fsdd_recordings: Path, n: int = 8) -> Path:
    """``n`` train takes of jackson's "three" and one test take."""
    recs = [{"id": f"jackson-3-{t:02d}", "audio": str(fsdd_recordings / f"3_jackson_{t}.wav"), "speaker": "jackson",
             "transcript": "three", "split": "train"} for t in range(1, n + 1)]
    recs.append({**recs[0], "id": "jackson-3-00", "audio": str(fsdd_recordings / "3_jackson_0.wav"), "split": "test"})
    path = tmp_path / "segments.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_clip_cuts_the_wave_at_the_asked_depth_and_keeps_its_peak():
    t = np.arange(8000) / 8000.0
    wave = (0.4 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    out = clip(wave, 20.0)
    assert np.max(np.abs(out)) == pytest.approx(0.4, rel=1e-6)
    # driven 10x over the level it is cut at: a sine spends ~94 % of its time beyond a tenth of its peak
    assert 0.9 < np.mean(np.abs(out) >= 0.4 * (1 - 1e-6)) < 0.97
    np.testing.assert_allclose(clip(wave, 0.0), wave)
    assert np.mean(np.abs(clip(wave, 6.0)) >= 0.4 * (1 - 1e-6)) < 0.7  # shallower: fewer samples cut
    assert not np.any(clip(np.zeros(10, np.float32), 20.0))


def test_perturb_clips_a_drawn_share_of_the_copies_and_never_a_source(tmp_path, fsdd_recordings):
    seg = _takes(tmp_path, fsdd_recordings)
    cfg = PerturbConfig(speed=(0.9, 1.0, 1.1), clip_prob=0.5, clip_db=(8.0, 12.0))
    s = perturb_manifest(seg, tmp_path / "p", cfg)
    assert s.kept + s.rejected == s.total == 9 and s.extra["copies"] == 16
    recs = [json.loads(x) for x in (tmp_path / "p" / "segments.jsonl").read_text().splitlines()]
    assert not any("clip_db" in r for r in recs if not r.get("perturbed_from"))
    clipped = [r["clip_db"] for r in recs if "clip_db" in r]
    assert 2 <= len(clipped) <= 14 and all(8.0 <= d <= 12.0 for d in clipped)
    first = (tmp_path / "p" / "segments.jsonl").read_bytes()
    perturb_manifest(seg, tmp_path / "p", cfg)
    assert (tmp_path / "p" / "segments.jsonl").read_bytes() == first  # the same draws again
    none = perturb_manifest(seg, tmp_path / "q", PerturbConfig(speed=(0.9, 1.0, 1.1)))
    assert none.extra["copies"] == 16 and "clip_db" not in (tmp_path / "q" / "segments.jsonl").read_text()
    everyone = perturb_manifest(seg, tmp_path / "r", PerturbConfig(speed=(0.9, 1.0, 1.1), clip_prob=1.0))
    assert (tmp_path / "r" / "segments.jsonl").read_text().count("clip_db") == everyone.extra["copies"]
    s2 = perturb_manifest(tmp_path / "r" / "segments.jsonl", tmp_path / "r2", PerturbConfig())
    assert s2.rejected == 16 and s2.kept + s2.rejected == s2.total  # a clipped copy is not perturbed again


def test_fbank_stage_applies_the_clip_and_refuses_a_crafted_one(tmp_path, fsdd_recordings):
    from pvae_data.stages.fbank import FbankStageConfig, compute_features, load_features

    seg = _takes(tmp_path, fsdd_recordings, n=1)
    src = json.loads(seg.read_text().splitlines()[0])
    recs = [src, {**src, "id": "x-clip", "clip_db": 20.0}, {**src, "id": "x-mild", "clip_db": 0.0}]
    recs += [{**src, "id": f"x-bad{i}", "clip_db": v} for i, v in enumerate([-1.0, 1e9, float("nan"), "rm -rf /"])]
    path = tmp_path / "crafted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = compute_features(path, tmp_path / "f", FbankStageConfig(), show_progress=False)
    assert s.rejected == 4 and s.kept + s.rejected == s.total == len(recs)
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "f" / "rejected.jsonl").read_text().splitlines()]
    assert all(r.startswith("bad perturbation: clip_db") for r in reasons)
    out = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "f" / "features.jsonl").read_text().splitlines()}
    plain, mild, clipped = (load_features(tmp_path / "f", out[i]) for i in (src["id"], "x-mild", "x-clip"))
    np.testing.assert_allclose(mild, plain, atol=1e-4)
    assert clipped.shape == plain.shape
    # clipping spreads the energy of the loud frames into harmonics: the upper bins of the loudest
    # frames gain, relative to their lowest bins
    loud = np.argsort(plain.mean(1))[-10:]
    top = plain.shape[1] // 2
    assert (clipped[loud, top:].mean() - clipped[loud, :top].mean()) > (plain[loud, top:].mean() - plain[loud, :top].mean()) + 1


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_perturb_cli_refuses_a_bad_clip_share_by_name(tmp_path, fsdd_recordings, value):
    seg = _takes(tmp_path, fsdd_recordings, n=1)
    r = CliRunner().invoke(data_main, ["perturb", str(seg), str(tmp_path / "o"), "--clip", value])
    assert r.exit_code != 0 and "clip_prob" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o" / "segments.jsonl").exists()
    with pytest.raises(ValueError, match="clip_db"):
        PerturbConfig(clip_db=(20.0, 6.0))
    with pytest.raises(ValueError, match="clip_db"):
        PerturbConfig(clip_db=(6.0, 80.0))

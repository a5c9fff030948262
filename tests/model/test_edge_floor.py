"""A noise floor around the training words, for the speech encoders only (TrainConfig.edge_floor)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pvae_data.fbank import FLT_EPS, FbankConfig, compute_fbank
from pvae_data.perturb import edge_pad
from pvae_model.noise import EdgeFloorConfig, NoiseConfig, add_edge_floors, noise_bank

FSDD_BAND = FbankConfig(sample_rate=8000, low_freq=40, high_freq=3700)  # make demo's FBank


@pytest.mark.parametrize("field, value", [("prob", 1.5), ("prob", -0.1), ("max_frames", -1), ("max_frames", 2.5),
                                          ("db_min", float("nan")), ("db_max", 200.0)])
def test_edge_floor_config_refuses_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=f"edge_floor.{field}"):
        EdgeFloorConfig(**{"prob": 0.5, field: value})
    with pytest.raises(ValueError, match="db_min/db_max"):
        EdgeFloorConfig(prob=0.5, db_min=60, db_max=40)
    assert not EdgeFloorConfig().enabled and not EdgeFloorConfig(prob=1.0, max_frames=0).enabled


def _floored(clean: np.ndarray, db: float, seed: int = 3) -> tuple[np.ndarray, int]:
    """``clean`` with floors at ``db``; the number of frames added before it."""
    g = torch.Generator().manual_seed(seed)
    out, lengths = add_edge_floors(torch.from_numpy(clean)[None], torch.tensor([len(clean)]),
                                   EdgeFloorConfig(prob=1.0, max_frames=20, db_min=db, db_max=db), g,
                                   noise_bank(FSDD_BAND))
    again = torch.Generator().manual_seed(seed)
    torch.rand(1, generator=again, dtype=torch.float64)
    left = int(torch.randint(0, 21, (1, 2), generator=again)[0, 0])  # the same draws add_edge_floors made
    assert int(lengths[0]) == len(out[0])
    return out[0].numpy(), left


def test_the_feature_floor_is_perturbs_waveform_floor_moved_by_the_bands_share_of_power(fsdd_audio):
    """The floor in the features has the spectrum of ``perturb --edge-pad``'s white noise through
    the same FBank, and moves dB for dB with the level; its level is taken against the FBank's mean
    frame power, which lies a few dB under the waveform's (pre-emphasis, the 40-3700 Hz band)."""
    gaps = []
    for digit, speaker, take in ((0, "george", 0), (3, "jackson", 7), (8, "theo", 12)):
        wave, rate = fsdd_audio(digit, speaker, take)
        wave = wave.astype(np.float32)
        clean = compute_fbank(wave, FSDD_BAND)
        per_level = []
        for db in (35.0, 90.0):
            out, left = _floored(clean, db)
            assert left >= 4
            ours = out[:left]
            np.testing.assert_array_equal(out[left: left + len(clean)], clean)  # the word itself untouched
            theirs = compute_fbank(edge_pad(wave, rate, 0.2, 0.0, db, seed=1), FSDD_BAND)[:15]  # frames of noise only
            profile = np.corrcoef(ours.mean(0), theirs.mean(0))[0, 1]
            assert profile > 0.9, profile  # white noise through the same filters
            gap = (ours.mean() - theirs.mean()) * 10 / np.log(10)
            per_level.append(gap)
        assert abs(per_level[0] - per_level[1]) < 1.0, per_level  # dB for dB with the level
        gaps.append(per_level[0])
    assert all(-14.0 < g < 2.0 for g in gaps), gaps


def test_a_floor_deeper_than_the_fbank_can_hold_sits_at_kaldis_log_floor(fsdd_audio):
    wave, _ = fsdd_audio(5, "lucas", 3)
    clean = compute_fbank(wave.astype(np.float32), FSDD_BAND)
    out, left = _floored(clean, 150.0)
    assert out[:left].min() >= np.float32(np.log(FLT_EPS)) - 1e-5
    assert np.mean(out[:left] <= np.log(FLT_EPS) + 1e-3) > 0.3  # much of it at the floor


def test_add_edge_floors_is_seeded_lengthens_a_share_and_keeps_the_rest():
    raw = torch.randn(64, 30, 80) + 10
    lengths = torch.full((64,), 30)
    lengths[::3] = 12
    cfg = EdgeFloorConfig(prob=0.5, max_frames=6)
    a, la = add_edge_floors(raw, lengths, cfg, torch.Generator().manual_seed(0), noise_bank(FSDD_BAND))
    b, lb = add_edge_floors(raw, lengths, cfg, torch.Generator().manual_seed(0), noise_bank(FSDD_BAND))
    assert torch.equal(a, b) and torch.equal(la, lb)
    added = la - lengths
    assert ((added >= 0) & (added <= 12)).all() and 10 < int((added > 0).sum()) < 54
    assert a.shape[1] == int(la.max())
    for i in torch.nonzero(added == 0).flatten().tolist():
        assert torch.equal(a[i, : lengths[i]], raw[i, : lengths[i]])
    for i in range(64):
        assert (a[i, la[i]:] == 0).all()  # padding stays 0


def test_paired_epochs_edge_floor_feeds_the_encoders_longer_words_and_the_decoders_the_word(small_shards):
    from pvae_model.data import PairedEpochs, load_audio_split, load_image_split

    images = load_image_split(small_shards[1], "test")
    plain = load_audio_split(small_shards[0], "train", mode="utterance")
    cfg = EdgeFloorConfig(prob=0.5, max_frames=5)
    with pytest.raises(ValueError, match="raw FBank"):
        PairedEpochs(plain, images, 16, edge_floor=cfg, fbank=FSDD_BAND)
    audio = load_audio_split(small_shards[0], "train", mode="utterance", keep_raw=True)
    with pytest.raises(ValueError, match="edge_floor and noise"):
        PairedEpochs(audio, images, 16, edge_floor=cfg, noise=NoiseConfig(prob=0.5), fbank=FSDD_BAND)
    b = next(iter(PairedEpochs(audio, images, 16, edge_floor=cfg, fbank=FSDD_BAND).batches(0)))
    assert b["audio_input"].shape[1] == int(b["input_lengths"].max())
    assert (b["input_lengths"] >= b["lengths"]).all() and (b["input_lengths"] > b["lengths"]).any()
    assert torch.equal(b["audio"], next(iter(PairedEpochs(audio, images, 16).batches(0)))["audio"])
    for i in range(len(b["lengths"])):  # each encoder input normalised over its own frames, floor included
        x = b["audio_input"][i, : b["input_lengths"][i]]
        assert x.mean(0).abs().max() < 1e-4
    again = next(iter(PairedEpochs(audio, images, 16, edge_floor=cfg, fbank=FSDD_BAND).batches(0)))
    assert torch.equal(b["audio_input"], again["audio_input"])  # seeded by (seed, epoch, batch)


def test_training_with_edge_floors_is_deterministic_and_named(tmp_path, small_shards):
    from pvae_model.config import TrainConfig
    from pvae_model.train import train

    d = {"audio_shards": str(small_shards[0]), "image_shards": str(small_shards[1]), "epochs": 1, "batch_size": 32,
         "eval_every": 0, "eval_coherence": False, "num_threads": 1, "seed": 3, "cmvn": "utterance",
         "spec_augment": {"time_masks": 1, "time_width": 4},
         "edge_floor": {"prob": 0.5, "max_frames": 4},
         "pvae": {"hidden": 16, "z_shared": 4, "z_audio": 4, "z_image": 4, "image_channels": [4, 8]}}
    cfg = TrainConfig.from_dict(d)
    assert cfg.deviations()["edge_floor"]["max_frames"] == 4 and "edge_floor" not in TrainConfig().deviations()
    for name in ("a", "b"):
        train(cfg, tmp_path / name, show_progress=False)
    strip = lambda run: [{k: v for k, v in json.loads(x).items() if k not in ("pairs_per_s", "minutes")}  # noqa: E731
                         for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert strip("a") == strip("b") and len(strip("a")) == 1

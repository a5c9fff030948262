"""The noise floors ``perturb --edge-pad`` adds at the cut edges, left out of the speech
reconstruction losses (``TrainConfig.edge_pad_manifest``): which frames they are, and that the
losses then do not see them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pvae_model.data import PairedEpochs, edge_pad_frames, load_audio_split, load_image_split
from pvae_model.modules import gaussian_nll_audio
from pvae_model.train import train

from test_train import epochs_of, tiny  # tests/model is on sys.path (pytest prepend mode)


def _manifest(path, pads: dict) -> str:
    path.write_text("".join(json.dumps({"id": k, **({"edge_pad": v} if v is not None else {})}) + "\n"
                            for k, v in pads.items()))
    return str(path)


def test_floor_frames_are_those_whose_centre_lies_in_the_floor(tmp_path):
    m = _manifest(tmp_path / "m.jsonl", {"a": [0.15, 0.05, 40.0], "b": [0.0, 0.012, 90.0], "c": None,
                                         "d": [1.0, 1.0, 50.0]})
    f = edge_pad_frames(m, ["a", "b", "c", "d", "e"], np.array([80, 80, 80, 30, 80]), 10.0, 25.0)
    # 150 ms: frame 13 is centred at 142.5 ms (in the floor), frame 14 at 152.5 ms (in the word);
    # 50 ms: frames 0-3 (centres 12.5-42.5 ms); 12 ms: no frame's centre; "c" has no floor, "e" no record
    assert f[0].tolist() == [14, 4] and f[1].tolist() == [0, 0] and f[2].tolist() == [0, 0] and f[4].tolist() == [0, 0]
    assert f[3].sum() == 29  # a floor longer than the utterance leaves one frame
    bad = _manifest(tmp_path / "bad.jsonl", {"x": [0.1, 5.0, 40.0]})
    with pytest.raises(ValueError, match="record 'x': edge_pad: right_s"):
        edge_pad_frames(bad, ["x"], np.array([50]), 10.0, 25.0)


def test_the_masked_loss_ignores_the_floor_frames_and_is_the_plain_loss_without_them():
    g = torch.Generator().manual_seed(0)
    x, mean = torch.randn(3, 20, 5, generator=g), torch.randn(3, 20, 5, generator=g)
    lengths = torch.tensor([20, 15, 9])
    full = (torch.arange(20)[None, :] < lengths[:, None])
    logvar = torch.randn(5, generator=g)
    for lv in (None, logvar):
        assert torch.allclose(gaussian_nll_audio(x, mean, lengths, lv), gaussian_nll_audio(x, mean, lengths, lv, full))
    mask = full.clone()
    mask[:, :4] = False  # four floor frames at the start of each utterance
    y = x.clone()
    y[:, :4] = 100.0
    for lv in (None, logvar):
        a, b = gaussian_nll_audio(x, mean, lengths, lv, mask), gaussian_nll_audio(y, mean, lengths, lv, mask)
        assert torch.allclose(a, b)
        # the same as the plain loss over the utterances with their floors cut off
        cut = gaussian_nll_audio(x[:, 4:], mean[:, 4:], lengths - 4, lv)
        assert torch.allclose(a, cut)
    assert not torch.allclose(gaussian_nll_audio(x, mean, lengths), gaussian_nll_audio(y, mean, lengths))


def test_batches_carry_the_frames_to_reconstruct_and_a_run_trains_with_them(tmp_path, small_shards):
    audio = load_audio_split(small_shards[0], "train")
    keys = list(audio.keys)
    m = _manifest(tmp_path / "m.jsonl", {k: [0.05, 0.03, 60.0] for k in keys[::2]})
    floors = edge_pad_frames(m, keys, audio.lengths, 10.0, 25.0)
    assert floors[0].tolist() == [4, 2] and floors[1].tolist() == [0, 0]
    data = PairedEpochs(audio, load_image_split(small_shards[1], "train"), 16, seed=0, floor_frames=floors)
    b = next(iter(data.batches(0)))
    mask = b["recon_mask"]
    assert mask.shape == b["audio"].shape[:2]
    assert (mask.sum(1) <= b["lengths"]).all() and (mask.sum(1) < b["lengths"]).any()
    assert ((mask.sum(1) == b["lengths"]) | (mask.sum(1) == b["lengths"] - 6)).all()
    run = tmp_path / "r"
    with pytest.raises(ValueError, match="edge_pad_manifest: no such file"):
        train(tiny(small_shards, epochs=1, edge_pad_manifest=str(tmp_path / "none.jsonl")), run, show_progress=False)
    train(tiny(small_shards, epochs=1, edge_pad_manifest=m), run, show_progress=False)
    assert np.isfinite(epochs_of(run)[-1]["loss"])
    assert "edge_pad_manifest" in (run / "config.yaml").read_text()

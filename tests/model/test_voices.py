"""The voices a PVAE speaks in (pvae_model.voices): each training speaker's mean z_a, the typical
one a medoid, perturbed copies left out, a bundle's copy checked as data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pvae_model.data import AudioSet
from pvae_model.voices import speaker_voices, typical_voice, voices_from_json, voices_to_json


class MeanEncoder(torch.nn.Module):
    """z_a = the utterance's mean feature vector over its own frames (a stand-in encoder)."""

    def encode_audio(self, x, lengths):
        mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).float()[..., None]
        return {"a": [(x * mask).sum(1) / lengths[:, None]]}


def audio_set(items) -> AudioSet:
    """items: (key, speaker, value): a 3-frame, 2-dim utterance whose every frame is ``value``."""
    feats = [torch.full((3, 2), float(v)) for _, _, v in items]
    return AudioSet(feats, np.full(len(items), 3), np.zeros(len(items), int), [k for k, _, _ in items],
                    [s for _, s, _ in items])


def test_a_voice_is_the_mean_of_its_speakers_own_takes_not_of_perturbed_copies():
    a = audio_set([("a-1", "alice", 1.0), ("a-2", "alice", 3.0), ("sp0.9-a-1", "sp0.9-alice", 100.0),
                   ("b-1", "bob", -2.0), ("c-1", "carol", 10.0)])
    v = speaker_voices(MeanEncoder(), a)
    assert list(v) == ["alice", "bob", "carol"]  # sorted; the perturbed speaker is no voice
    assert torch.equal(v["alice"], torch.tensor([2.0, 2.0])) and torch.equal(v["bob"], torch.tensor([-2.0, -2.0]))
    # the first max_takes by key, whatever order the split lists them in
    assert torch.equal(speaker_voices(MeanEncoder(), a, max_takes=1)["alice"], torch.tensor([1.0, 1.0]))
    # the typical voice: nearest the mean of the voices (mean 10/3): alice at 2, not bob or carol
    assert typical_voice(v) == "alice" and typical_voice({}) is None


def test_a_bundles_voices_round_trip_exactly_and_bad_ones_are_named():
    v = {"alice": torch.tensor([0.1, -2.5, 3.25], dtype=torch.float32), "bob": torch.tensor([1e-7, 0.0, 7.0])}
    back = voices_from_json(voices_to_json(v), 3, "b/config.json")
    assert all(torch.equal(back[k], v[k]) for k in v) and voices_to_json(v)["default"] in v
    assert voices_from_json(None, 3, "b/config.json") == {}  # a bundle from before voices
    with pytest.raises(ValueError, match="b/config.json: voices: bob is not 3 finite numbers"):
        voices_from_json({"z_a": {"alice": [0, 0, 0], "bob": [0, 0]}}, 3, "b/config.json")
    with pytest.raises(ValueError, match="b/config.json: voices: bob is not 3 finite numbers"):
        voices_from_json({"z_a": {"alice": [0, 0, 0], "bob": [0, float("nan"), 0]}}, 3, "b/config.json")
    with pytest.raises(ValueError, match="b/config.json: voices: not a map"):
        voices_from_json({"z_a": [1, 2]}, 3, "b/config.json")

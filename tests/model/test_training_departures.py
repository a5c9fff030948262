"""Training departures: the speaker critic on z_s, the image encoder's layout; and the retired ones (shifted training images, a moving average of the
weights), which old runs' configs still name at their neutral value."""

from __future__ import annotations

import pytest
import torch

from pvae_model.config import TrainConfig
from pvae_model.data import PairedEpochs, load_audio_split, load_image_split
from pvae_model.models.pvae import PVAE, PVAEConfig
from pvae_model.modules import ImagePreEncoder
from pvae_model.run import load_model
from pvae_model.train import train

from test_train import epochs_of, tiny  # tests/model is on sys.path (pytest prepend mode)


@pytest.fixture(scope="module")
def shards(small_shards):
    return small_shards


def test_retired_training_departures_load_at_their_neutral_value_and_are_refused_when_used():
    """image_shift and ema_decay (docs/study/pvae.md), edge_floor, edge_pad_manifest and
    word_span_manifest (docs/voices.md) were not kept: an old run's config.yaml, which records them
    at their neutral value, loads; one that used them, or a --set of them, is refused by name."""
    from pvae_model.config import load_config

    assert TrainConfig.from_dict({"epochs": 3, "image_shift": 0, "ema_decay": 0.0}) == TrainConfig(epochs=3)
    assert TrainConfig().deviations() == {}
    for name, used in (("image_shift", 2), ("ema_decay", 0.999)):
        with pytest.raises(ValueError, match=f"^{name}: an experiment that was not kept.*commit 3468425"):
            TrainConfig.from_dict({name: used})
        with pytest.raises(ValueError, match=name):
            load_config(None, {name: used})
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"no_such_field": 1})
    # edge_floor (commit c3c4aef): a run trained while it existed records it whole
    neutral = {"prob": 0.0, "max_frames": 15, "db_min": 35.0, "db_max": 120.0}
    assert TrainConfig.from_dict({"epochs": 3, "edge_floor": neutral}) == TrainConfig(epochs=3)
    with pytest.raises(ValueError, match="^edge_floor: an experiment that was not kept.*commit c3c4aef"):
        TrainConfig.from_dict({"edge_floor": {**neutral, "prob": 0.5}})
    with pytest.raises(ValueError, match="edge_floor"):
        load_config(None, {"edge_floor.prob": 0.5})
    # the manifests (edge_pad_manifest: commit 6d98394; word_span_manifest: commit f97011d): "" in
    # the configs of runs trained while they existed
    for name, commit in (("edge_pad_manifest", "6d98394"), ("word_span_manifest", "f97011d")):
        assert TrainConfig.from_dict({"epochs": 3, name: ""}) == TrainConfig(epochs=3)
        with pytest.raises(ValueError, match=f"^{name}: an experiment that was not kept.*commit {commit}"):
            TrainConfig.from_dict({name: "exp/demo/perturb/segments.jsonl"})


def test_the_image_encoder_keeps_the_spec_layout_old_checkpoints_load_into():
    spec = ImagePreEncoder((4, 8), 16)
    assert spec(torch.rand(3, 1, 28, 28)).shape == (3, 16)
    assert [c.stride for c in spec.net if isinstance(c, torch.nn.Conv2d)] == [(2, 2), (2, 2)]
    assert list(spec.state_dict()) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias",
                                       "net.5.weight", "net.5.bias"]


# ---- the speaker critic on z_s (issue 26) ------------------------------------------------------

def test_speaker_critic_pushes_z_s_only_up_to_chance_and_learns_itself():
    """``speaker_adv_weight``: the critic trains on detached z_s; the encoders get the frozen
    critic's cross-entropy raised per item up to ln(classes), and no further."""
    import math

    torch.manual_seed(0)
    cfg = PVAEConfig(hidden=16, z_shared=4, z_audio=3, z_image=5, feat_dim=8, image_channels=(4, 8),
                     departures=dict(speaker_adv_weight=1.0, speaker_classes=3))
    model = PVAE(cfg)
    speakers = torch.tensor([0, 1, 0, 2])
    with torch.no_grad():  # a critic that always says speaker 0: right on items 0 and 2, wrong on 1 and 3
        model.speaker_critic[2].bias.copy_(torch.tensor([30.0, 0.0, 0.0]))
    z = torch.randn(4, 4, requires_grad=True)
    loss, critic_ce = model.speaker_adversary(speakers, (z,))
    loss.sum().backward()
    assert (z.grad[[1, 3]] == 0).all()  # already beyond chance: left alone
    assert z.grad[[0, 2]].abs().sum() > 0  # read: pushed
    assert model.speaker_critic[0].weight.grad.abs().sum() > 0  # the critic is trained
    assert critic_ce.shape == (4,) and (critic_ce[[1, 3]] > math.log(3)).all()
    # the term is named, and the metric reported by forward
    assert cfg.deviations()["speaker_adv_weight"] == 1.0
    batch = {"audio": torch.randn(4, 7, 8), "lengths": torch.tensor([7, 5, 3, 6]), "image": torch.rand(4, 1, 28, 28),
             "label": torch.tensor([1, 2, 3, 4]), "speaker": speakers}
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(out.metrics["speaker_critic_ce"]) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="speaker_classes"):
        PVAE(PVAEConfig(departures=dict(speaker_adv_weight=1.0)))
    with pytest.raises(ValueError, match="speaker_adv_weight"):
        PVAEConfig(departures=dict(speaker_adv_weight=-1.0))


def test_speaker_critic_size_comes_from_the_training_speakers(tmp_path, shards):
    from pvae_model.data import base_speakers
    from pvae_model.train import with_speaker_classes

    audio = load_audio_split(shards[0], "train")
    n = len(base_speakers(audio.speakers))
    assert n >= 2 and base_speakers(["sp0.9-george", "george", "vtlp1.1-jackson"]) == ["george", "jackson"]
    cfg = with_speaker_classes(tiny(shards, pvae={**tiny(shards).pvae.to_dict(), "departures": {"speaker_adv_weight": 2.0}}))
    assert cfg.pvae.departures.speaker_classes == n
    with pytest.raises(ValueError, match="speaker_classes 1 is less than"):
        with_speaker_classes(tiny(shards, pvae={**tiny(shards).pvae.to_dict(),
                                                "departures": {"speaker_adv_weight": 2.0, "speaker_classes": 1}}))
    # batches carry each utterance's speaker index; a run trains, saves the size, and resumes
    data = PairedEpochs(audio, load_image_split(shards[1], "train"), 32, seed=0)
    b = next(iter(data.batches(0)))
    assert b["speaker"].dtype == torch.long and int(b["speaker"].max()) < n
    run = tmp_path / "r"
    small = tiny(shards, epochs=1, pvae={**tiny(shards).pvae.to_dict(), "departures": {"speaker_adv_weight": 2.0}})
    train(small, run, show_progress=False, stop_after_batches=1)
    assert f"speaker_classes: {n}" in (run / "config.yaml").read_text()
    train(small, run, resume=True, show_progress=False)
    assert "speaker_critic_ce" in epochs_of(run)[-1]
    model, _, _ = load_model(run, "last")
    assert model.speaker_critic[2].out_features == n


def test_utterance_norm_can_take_its_statistics_between_the_edges():
    """``masked_utterance_norm(edge=k)``: the word's own mean and std after k frames were added at
    each end (edge_sensitivity.py); padding stays 0 and ``edge=0`` is the plain norm."""
    from pvae_model.modules import masked_utterance_norm

    torch.manual_seed(0)
    x, lengths, k = torch.randn(2, 30, 8) * 3 + 1, torch.tensor([30, 20]), 4
    out = masked_utterance_norm(x, lengths, edge=k)
    for b, n in enumerate(lengths.tolist()):
        word = x[b, k:n - k]
        want = (x[b, :n] - word.mean(0)) / word.std(0, unbiased=False)
        assert torch.allclose(out[b, :n], want, atol=1e-5) and not out[b, n:].any()
    assert torch.equal(masked_utterance_norm(x, lengths, edge=0), masked_utterance_norm(x, lengths))


@pytest.mark.parametrize("knob,neutral,used,commit", [
    # attention over frames (docs/study/voices.md, "attention over frames")
    ("audio_encoder_readout", "last", "attention", "640ff34"),
    # the frequency-convolution front ("A convolution over frequency in front of the speech
    # encoders": it cost the espeak-ng voices 23 points on three seeds)
    ("audio_front", "none", "freq_conv", "49b12ea"),
    # consistency between two views ("Two views of each word, one z_s")
    ("audio_view_consistency", 0.0, 1.0, "4f01be7"),
])
def test_retired_speech_encoder_departures_load_at_their_neutral_value_and_are_refused_when_used(
        knob, neutral, used, commit):
    """Experiments that were not kept: a run's config that names the knob at its neutral value loads
    as today's model; one that used it is refused by name and pointed at the commit with the code."""
    assert PVAEConfig.from_dict({"departures": {knob: neutral}}) == PVAEConfig()
    with pytest.raises(ValueError, match=f"{knob}.*{commit}"):
        PVAEConfig.from_dict({"departures": {knob: used}})

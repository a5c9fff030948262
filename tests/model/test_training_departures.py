"""The training departures that raise the image z_s ceiling: shifted training images
(``image_shift``), a moving average of the weights (``ema_decay``) and a deeper image encoder
(``pvae.departures.image_encoder: deep``): what they do, that they are seeded and resume exactly, and that
they are named wherever a run's departures are."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pvae_model.config import TrainConfig
from pvae_model.data import PairedEpochs, load_audio_split, load_image_split, random_shift
from pvae_model.models.pvae import PVAE, PVAEConfig
from pvae_model.modules import ImagePreEncoder
from pvae_model.run import load_model
from pvae_model.train import train

from test_train import epochs_of, tiny  # tests/model is on sys.path (pytest prepend mode)


@pytest.fixture(scope="module")
def shards(small_shards):
    return small_shards


def test_random_shift_moves_each_image_by_its_own_offset_within_bounds():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 10:18, 12:16] = torch.rand(64, 8, 4)  # a blob well inside the frame: no pixel leaves it
    y = random_shift(x, 2, g)
    assert y.shape == x.shape and torch.allclose(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    offsets = set()
    for a, b in zip(x, y):
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(torch.roll(a, (dy, dx), (1, 2)), b)]
        assert len(match) == 1
        offsets.add(match[0])
    assert len(offsets) > 10  # offsets vary over the batch
    assert random_shift(x, 0, g) is x
    edge = torch.zeros(1, 1, 28, 28)
    edge[0, 0, :, 0] = 1.0  # a left-edge column moved right by one leaves zeros, not a wrap-around
    moved = [random_shift(edge, 1, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(m.sum() <= 28 for m in moved) and any(m.sum() < 28 for m in moved)


def test_shifted_batches_are_seeded_per_epoch_and_keep_pairing_and_labels(shards):
    audio, images = load_audio_split(shards[0], "train"), load_image_split(shards[1], "train")
    plain = PairedEpochs(audio, images, 16, seed=3)
    shifted = PairedEpochs(audio, images, 16, seed=3, image_shift=2)
    again = PairedEpochs(audio, images, 16, seed=3, image_shift=2)
    moved = 0
    for a, b, c in zip(plain.batches(0), shifted.batches(0), again.batches(0)):
        assert torch.equal(a["label"], b["label"]) and torch.equal(a["audio"], b["audio"])
        assert torch.equal(b["image"], c["image"])  # same seed and epoch: same shifts
        ink, kept = a["image"].sum((1, 2, 3)), b["image"].sum((1, 2, 3))
        assert (kept <= ink + 1e-4).all() and (kept >= 0.9 * ink).all()  # MNIST's margin: little ink leaves
        moved += int((a["image"] != b["image"]).flatten(1).any(1).sum())
    assert moved > 0.8 * len(audio.labels)  # 24 of 25 offsets move the image
    e0 = torch.cat([b["image"] for b in shifted.batches(0)])
    e0_again = torch.cat([b["image"] for b in shifted.batches(0)])
    e1_plain = torch.cat([b["image"] for b in plain.batches(1)])
    e1 = torch.cat([b["image"] for b in shifted.batches(1)])
    assert torch.equal(e0, e0_again) and not torch.equal(e1, e1_plain)


def test_training_departures_are_validated_and_named():
    assert TrainConfig().deviations() == {}
    cfg = TrainConfig(image_shift=2, ema_decay=0.999)
    assert cfg.deviations() == {"image_shift": 2, "ema_decay": 0.999}
    assert TrainConfig(model="vae-sp", image_shift=2).deviations() == {}  # no images reach it
    for bad in ({"image_shift": -1}, {"image_shift": 8}, {"ema_decay": 1.0}, {"ema_decay": -0.1}):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="image_encoder"):
        PVAEConfig(departures=dict(image_encoder="resnet"))
    assert PVAEConfig(departures=dict(image_encoder="deep")).size_changes() == {"image_encoder": "deep"}


def test_deep_image_encoder_adds_a_conv_before_each_strided_one_and_spec_keys_are_unchanged():
    spec, deep = ImagePreEncoder((4, 8), 16), ImagePreEncoder((4, 8), 16, "deep")
    x = torch.rand(3, 1, 28, 28)
    assert spec(x).shape == deep(x).shape == (3, 16)
    convs = lambda m: [l for l in m.net if isinstance(l, torch.nn.Conv2d)]  # noqa: E731
    assert [c.stride for c in convs(spec)] == [(2, 2), (2, 2)]
    assert [c.stride for c in convs(deep)] == [(1, 1), (2, 2), (1, 1), (2, 2)]
    # checkpoints written before `depth` existed load into the spec encoder unchanged
    assert list(spec.state_dict()) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias",
                                       "net.5.weight", "net.5.bias"]
    model = PVAE(PVAEConfig(hidden=16, z_shared=4, z_audio=4, z_image=4, feat_dim=8, image_channels=(4, 8),
                            departures=dict(image_encoder="deep")))
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 2 * 4  # multimodal and unimodal image encoders


def test_ema_run_resumes_exactly_and_delivers_the_average(tmp_path, shards):
    cfg = tiny(shards, ema_decay=0.9, image_shift=2, eval_every=1, epochs=2)
    per_epoch = PairedEpochs(load_audio_split(shards[0], "train"), load_image_split(shards[1], "train"),
                             cfg.batch_size, seed=cfg.seed).num_batches()
    train(cfg, tmp_path / "full", show_progress=False)
    train(cfg, tmp_path / "cut", show_progress=False, stop_after_batches=per_epoch + 1)
    train(cfg, tmp_path / "cut", resume=True, show_progress=False)
    assert epochs_of(tmp_path / "cut") == epochs_of(tmp_path / "full")
    first = epochs_of(tmp_path / "full")[0]
    assert "raw_purity_zs_image" in first and "purity_zs_image" in first
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert a["ema_steps"] == b["ema_steps"] == 2 * per_epoch
    assert all(torch.equal(a["ema_model"][k], b["ema_model"][k]) for k in a["ema_model"])
    # the average is not the last weights, and it is what a run's model is
    k = next(k for k in a["model"] if k.endswith("weight"))
    assert not torch.equal(a["ema_model"][k], a["model"][k])
    delivered, _, _ = load_model(tmp_path / "full", "last")
    assert torch.equal(delivered.state_dict()[k], a["ema_model"][k])


def test_evaluate_names_training_departures(tmp_path, shards):
    from pvae_model.eval.evaluate import EvalConfig, evaluate

    run = tmp_path / "r"
    train(tiny(shards, model="vae-im", ema_decay=0.5, image_shift=1, epochs=1), run, show_progress=False)
    evaluate(run, EvalConfig(checkpoint="last", seeds=1, max_k=3, tsne_images=50, probe_images=500))
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["deviations"]["ema_decay"] == 0.5 and m["deviations"]["image_shift"] == 1
    assert np.isfinite(m["purity"]["zs_image"]["mean"])


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

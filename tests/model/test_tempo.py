"""The tempo on the fly (``spec_augment.tempo_min/tempo_max``): each training utterance stretched
in time on the features, its new length read by the encoders, the targets left as they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pvae_model.augment import SpecAugmentConfig, tempo_stretch


def test_tempo_stretch_reads_each_utterance_at_its_new_rate():
    t = torch.arange(40, dtype=torch.float32)
    x = torch.zeros(3, 40, 2)
    x[0, :40, 0], x[1, :20, 0], x[2, :7, 0] = t, t[:20], t[:7]
    x[..., 1] = 5.0 * (x[..., 0] != 0)
    out, lens = tempo_stretch(x, torch.tensor([40, 20, 7]), torch.tensor([1.0, 0.8, 1.25], dtype=torch.float64))
    assert lens.tolist() == [40, 25, 6]  # round(T / r): slower speech is longer
    assert torch.equal(out[0], x[0])  # a factor of 1 changes nothing
    # a ramp stays a ramp: frame j of the stretched copy is the source read at (j + 0.5) * T / new - 0.5
    j = np.arange(25)
    want = np.clip((j + 0.5) * 20 / 25 - 0.5, 0, 19)
    assert np.allclose(out[1, :25, 0].numpy(), want, atol=1e-5)
    assert out[1, 25:].abs().sum() == 0 and out[2, 6:].abs().sum() == 0  # padding stays zero
    assert float(out[2, :6, 0].max()) <= 6.0 and float(out[2, :6, 0].min()) >= 0.0  # never reads past its end


@pytest.mark.parametrize("bad", [dict(tempo_min=0.0), dict(tempo_max=2.5), dict(tempo_min=1.2, tempo_max=1.1),
                                 dict(tempo_min=float("nan"))])
def test_tempo_out_of_range_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="spec_augment.tempo"):
        SpecAugmentConfig(**bad)


def test_paired_epochs_give_the_encoders_the_stretched_lengths(small_shards):
    from pvae_model.data import PairedEpochs, load_audio_split, load_image_split
    from pvae_model.models.pvae import PVAE, PVAEConfig
    from pvae_model.modules import audio_input

    audio, images = load_audio_split(small_shards[0], "train", mode="utterance"), load_image_split(small_shards[1], "test")
    cfg = SpecAugmentConfig(tempo_min=0.8, tempo_max=1.25)
    assert cfg.enabled and cfg.stretches and not SpecAugmentConfig().stretches
    b = next(iter(PairedEpochs(audio, images, 16, spec_augment=cfg).batches(0)))
    ratio = b["lengths"].double() / b["input_lengths"].double()
    assert not torch.equal(b["input_lengths"], b["lengths"])
    assert float(ratio.min()) >= 0.8 - 0.1 and float(ratio.max()) <= 1.25 + 0.1  # within the range, up to rounding
    x_in, lens = audio_input(b)
    assert torch.equal(lens, b["input_lengths"]) and x_in.shape[1] == int(lens.max())
    again = next(iter(PairedEpochs(audio, images, 16, spec_augment=cfg).batches(0)))
    assert torch.equal(b["audio_input"], again["audio_input"])  # seeded by (seed, epoch, batch)
    # without a tempo, the batch is what it was: no input_lengths, and the masks' draws unchanged
    masks = SpecAugmentConfig(time_masks=2, time_width=3)
    plain = next(iter(PairedEpochs(audio, images, 16, spec_augment=masks).batches(0)))
    assert "input_lengths" not in plain and torch.equal(audio_input(plain)[1], plain["lengths"])
    torch.manual_seed(0)
    model = PVAE(PVAEConfig(hidden=16, z_shared=4, z_audio=4, z_image=4, image_channels=(4, 8)))
    out = model(b)  # the encoders read the stretched copy, the decoders rebuild the clean features
    assert torch.isfinite(out.loss)

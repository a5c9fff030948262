"""The speech pre-encoders' read-out (``pvae.departures.audio_encoder_pool`` / ``audio_encoder_dropout``)."""

from __future__ import annotations

import pytest
import torch

from pvae_model.models.pvae import PVAE, PVAEConfig
from pvae_model.models.pvae_config import Departures
from pvae_model.modules import AudioPreEncoder, masked_utterance_norm


def _batch(lengths, t_max, feat=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), t_max, feat, generator=g)
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    return x, torch.tensor(lengths)


def test_mean_pool_is_the_mean_of_the_real_frames_and_padding_never_reaches_it():
    torch.manual_seed(0)
    enc = AudioPreEncoder(80, 16, "utterance", pool="mean").eval()
    x, lengths = _batch([7, 12, 3], 12)
    h = enc(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        out, _ = enc.lstm(masked_utterance_norm(x[b:b + 1, :n], torch.tensor([n])))
        assert torch.allclose(h[b], out[0].mean(0), atol=1e-6)
    x_more = torch.cat([x, torch.full((3, 9, 80), 5.0)], 1)  # more (non-zero) padding: the same read-out
    assert torch.allclose(enc(x_more, lengths), h, atol=1e-6)
    last = AudioPreEncoder(80, 16, "utterance", pool="last").eval()
    last.load_state_dict(enc.state_dict())
    assert not torch.allclose(last(x, lengths), h, atol=1e-3)  # the pool changes what the heads read


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    enc = AudioPreEncoder(80, 64, dropout=0.5)
    plain = AudioPreEncoder(80, 64)
    plain.load_state_dict(enc.state_dict())
    x, lengths = _batch([10, 6], 10)
    enc.train()
    h = enc(x, lengths)
    assert (h == 0).float().mean() > 0.3  # about half the units dropped
    enc.eval(), plain.eval()
    assert torch.equal(enc(x, lengths), plain(x, lengths))


def test_the_options_are_refused_by_name_and_listed_as_deviations():
    with pytest.raises(ValueError, match="audio_encoder_pool"):
        Departures(audio_encoder_pool="max")
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="audio_encoder_dropout"):
            Departures(audio_encoder_dropout=bad)
    cfg = PVAEConfig.from_dict({"hidden": 16, "departures": {"audio_encoder_pool": "mean",
                                                             "audio_encoder_dropout": 0.2}})
    assert cfg.deviations()["audio_encoder_pool"] == "mean"
    assert cfg.deviations()["audio_encoder_dropout"] == 0.2
    assert "audio_encoder_pool" not in PVAEConfig().deviations()
    model = PVAE(cfg)  # every speech pre-encoder of the model is the one the config names
    pres = [m for m in model.modules() if isinstance(m, AudioPreEncoder)]
    assert len(pres) == 2 and all(p.pool == "mean" and p.dropout.p == 0.2 for p in pres)

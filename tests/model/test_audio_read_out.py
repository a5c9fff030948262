"""The speech pre-encoders' read-out: dropout (``pvae.departures.audio_encoder_dropout``), and the
mean over frames that left the library (``audio_encoder_pool``)."""

from __future__ import annotations

import pytest
import torch

from pvae_model.models.pvae import PVAE, PVAEConfig
from pvae_model.models.pvae_config import Departures
from pvae_model.modules import AudioPreEncoder


def _batch(lengths, t_max, feat=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), t_max, feat, generator=g)
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    return x, torch.tensor(lengths)


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


def test_dropout_is_refused_by_name_and_listed_as_a_deviation():
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="audio_encoder_dropout"):
            Departures(audio_encoder_dropout=bad)
    cfg = PVAEConfig.from_dict({"hidden": 16, "departures": {"audio_encoder_dropout": 0.2}})
    assert cfg.deviations()["audio_encoder_dropout"] == 0.2
    assert "audio_encoder_dropout" not in PVAEConfig().deviations()
    model = PVAE(cfg)  # every speech pre-encoder of the model is the one the config names
    pres = [m for m in model.modules() if isinstance(m, AudioPreEncoder)]
    assert len(pres) == 2 and all(p.dropout.p == 0.2 for p in pres)


def test_the_mean_pool_left_the_library_and_a_run_that_used_it_is_refused_by_name():
    assert PVAEConfig.from_dict({"departures": {"audio_encoder_pool": "last"}}).deviations() == {}
    with pytest.raises(ValueError, match="audio_encoder_pool"):
        PVAEConfig.from_dict({"departures": {"audio_encoder_pool": "mean"}})

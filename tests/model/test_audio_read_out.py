"""The speech pre-encoders' read-out: two experiments that left the library (docs/voices.md)."""

from __future__ import annotations

import pytest

from pvae_model.models.pvae import PVAEConfig


@pytest.mark.parametrize("name, neutral, used", [("audio_encoder_pool", "last", "mean"),
                                                 ("audio_encoder_dropout", 0.0, 0.3)])
def test_a_run_naming_the_neutral_value_loads_and_one_that_used_it_is_refused_by_name(name, neutral, used):
    assert PVAEConfig.from_dict({"departures": {name: neutral}}).deviations() == {}
    with pytest.raises(ValueError, match=name):
        PVAEConfig.from_dict({"departures": {name: used}})

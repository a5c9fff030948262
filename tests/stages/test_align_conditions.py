"""What makes the aligner hold up on corpora unlike its training data (issue 13): multi-condition
training (copies of each utterance without its silence) and speaker adaptation (MAP means)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from pvae_data.align.adapt import AdaptConfig, map_adapt
from pvae_data.align.hmm import WordHMMs, forced_align
from pvae_data.align.mfcc import AlignFeatureConfig, align_features
from pvae_data.align.train import AlignTrainConfig, TrainUtterance, train_word_hmms, without_silence


def _shape(fc: AlignFeatureConfig) -> WordHMMs:
    D, S = fc.dim, 3 + 3
    return WordHMMs(["one"], [3], 3, np.zeros((S, 1, D)), np.ones((S, 1, D)), np.zeros((S, 1)), np.full(S, -0.7), fc)


@pytest.mark.parametrize("cvn", [False, True])
def test_without_silence_is_the_identity_on_an_utterance_with_none(fsdd_recordings, cvn):
    fc = AlignFeatureConfig(cvn=cvn)
    x, _ = sf.read(fsdd_recordings / "3_theo_0.wav", dtype="int16")
    feats = align_features(x.astype(np.float32), fc)
    states = np.zeros(len(feats), np.int64)  # every frame in a word state
    np.testing.assert_allclose(without_silence(feats, states, _shape(fc), fc, pauses=True), feats, atol=1e-4)


def test_without_silence_drops_exactly_the_silence_frames(fsdd_recordings):
    fc = AlignFeatureConfig()
    m = _shape(fc)
    x, _ = sf.read(fsdd_recordings / "7_george_1.wav", dtype="int16")
    feats = align_features(x.astype(np.float32), fc)
    T = len(feats)
    states = np.zeros(T, np.int64)
    sil = np.zeros(T, bool)
    sil[:5] = sil[-7:] = sil[T // 2: T // 2 + 4] = True  # edges and one "pause"
    states[sil] = m.sil_offset
    tight = without_silence(feats, states, m, fc, pauses=False)
    both = without_silence(feats, states, m, fc, pauses=True)
    assert len(tight) == T - 12 and len(both) == T - 16
    n = fc.num_ceps  # statics are the kept frames' own, shifted by one constant (the new CMN)
    for out, keep in ((tight, np.arange(5, T - 7)), (both, np.flatnonzero(~sil))):
        shift = out[:, :n] - feats[keep, :n]
        np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-4)
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
    assert len(without_silence(feats, np.full(T, m.sil_offset), m, fc, pauses=True)) == 0


def test_augmented_training_adds_passes_and_rejects_unknown_modes(fsdd_recordings):
    fc = AlignFeatureConfig()
    data = []
    for d in range(3):
        for take in range(6):
            x, _ = sf.read(fsdd_recordings / f"{d}_jackson_{take}.wav", dtype="int16")
            pad = np.random.default_rng(take).normal(0, 3, 2000)
            wave = np.concatenate([pad, x, pad]).astype(np.float32)
            data.append(TrainUtterance(align_features(wave, fc), [["zero", "one", "two"][d]],
                                       (25, len(align_features(wave, fc)) - 25)))
    cfg = AlignTrainConfig(mixtures=1, iterations=2, augment="tight+abut", augment_iterations=1)
    model = train_word_hmms(data, cfg)
    steps = [h for h in model.info["history"] if str(h["iteration"]).startswith("augment")]
    assert len(steps) == 1 and steps[0]["copies"] == len(data) and steps[0]["aligned"] == 2 * len(data)
    assert model.info["train_config"]["augment"] == "tight+abut"
    with pytest.raises(ValueError, match="augment"):
        AlignTrainConfig(augment="pauses")


def _speaker_data(fsdd_recordings, speaker: str, takes, fc: AlignFeatureConfig) -> list[TrainUtterance]:
    data = []
    for d in range(3):
        for take in takes:
            x, _ = sf.read(fsdd_recordings / f"{d}_{speaker}_{take}.wav", dtype="int16")
            pad = np.random.default_rng(take).normal(0, 3, 2000)
            feats = align_features(np.concatenate([pad, x, pad]).astype(np.float32), fc)
            data.append(TrainUtterance(feats, [["zero", "one", "two"][d]], (25, len(feats) - 25)))
    return data


def test_map_adaptation_moves_each_mean_by_its_share_of_the_speakers_frames(fsdd_recordings):
    fc = AlignFeatureConfig()
    model = train_word_hmms(_speaker_data(fsdd_recordings, "jackson", range(8), fc),
                            AlignTrainConfig(mixtures=1, iterations=2, augment="none"))
    other = [(u.feats, u.words) for u in _speaker_data(fsdd_recordings, "nicolas", range(4), fc)]
    assert map_adapt(model, other, AdaptConfig(iterations=0)) is model
    tau = 10.0
    adapted = map_adapt(model, other, AdaptConfig(iterations=1, tau=tau))
    # one Gaussian per state: mean' = (tau * mean + sum of the state's frames) / (tau + n), exactly
    S = model.means.shape[0]
    acc, n = np.zeros((S, fc.dim)), np.zeros(S)
    for feats, words in other:
        _, path, g = forced_align(model, model.loglik(feats), words)
        st = g["state"][path]
        np.add.at(acc, st, feats.astype(np.float64))
        n += np.bincount(st, minlength=S)
    want = (tau * model.means[:, 0] + acc) / (tau + n)[:, None]
    np.testing.assert_allclose(adapted.means[:, 0], want, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(adapted.variances, model.variances)
    assert adapted.calibration == model.calibration
    # and the new voice fits better
    def fit(m):
        return sum(forced_align(m, m.loglik(f), w)[0] for f, w in other)
    assert fit(map_adapt(model, other, AdaptConfig(iterations=3, tau=tau))) > fit(model)
    with pytest.raises(ValueError):
        AdaptConfig(tau=0.0)


def test_anchored_loglik_keeps_words_near_the_vad_span_and_pauses_free():
    from pvae_data.align.hmm import NEG
    from pvae_data.align.train import anchored_loglik

    fc = AlignFeatureConfig()
    m = _shape(fc)
    ll = np.zeros((40, m.num_states))
    out = anchored_loglik(m, ll, (10, 30), slack=2)
    words = np.arange(m.sil_offset)
    sil0, pause, sil2 = m.sil_state_ids()
    assert (out[:8, words] == NEG).all() and (out[8:32, words] == 0).all() and (out[32:, words] == NEG).all()
    assert (out[12:28, [sil0, sil2]] == NEG).all() and (out[:12, [sil0, sil2]] == 0).all()
    assert (out[:, pause] == 0).all() and (ll == 0).all()  # the input is not modified
    _, path, g = forced_align(m, out, ["one"])
    st = g["state"][path]
    first = np.flatnonzero(st < m.sil_offset)
    assert 8 <= first[0] <= 12 and 28 <= first[-1] + 1 <= 32


def test_loglik_of_some_states_equals_the_full_computation_there(fsdd_recordings):
    fc = AlignFeatureConfig()
    model = train_word_hmms(_speaker_data(fsdd_recordings, "theo", range(6), fc),
                            AlignTrainConfig(mixtures=2, iterations=1, augment="none"))
    feats = _speaker_data(fsdd_recordings, "theo", [7], fc)[1].feats
    full = model.loglik(feats)
    g = model.forced_graph(["one"])
    part = model.loglik(feats, g["state"])
    used = np.unique(g["state"])
    np.testing.assert_allclose(part[:, used], full[:, used], rtol=1e-5, atol=1e-3)  # float32 matmuls
    from pvae_data.align.hmm import NEG
    assert (np.delete(part, used, axis=1) == NEG).all()
    a, b = forced_align(model, full, ["one"]), forced_align(model, part, ["one"], g)
    assert a[0] == pytest.approx(b[0]) and np.array_equal(a[1], b[1])

"""The speaker-adapted word judge (pvae_model/eval/word_judge.py) on real FSDD takes: trained on
four voices, tested on a fifth it never heard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pvae_model.eval.word_judge import WordJudge, WordJudgeConfig, judge_features

TRAIN = ("jackson", "lucas", "theo", "yweweler")
HELD = "george"


def _fbank(paths):
    from pvae_data.audio import load_audio
    from pvae_data.fbank import FbankConfig, compute_fbank_batch

    waves = [load_audio(p, target_rate=16000)[0] for p in paths]
    return compute_fbank_batch(waves, FbankConfig(low_freq=40.0, high_freq=3700.0, vtln_high=3200.0))


@pytest.fixture(scope="module")
def judged(fsdd_recordings):
    def take(spk, takes):
        items = [(fsdd_recordings / f"{d}_{spk}_{t}.wav", d) for d in range(10) for t in takes]
        return _fbank([p for p, _ in items]), np.array([d for _, d in items])

    tr = [take(s, range(5, 17)) for s in TRAIN]
    feats = [f for fs, _ in tr for f in fs]
    labels = np.concatenate([y for _, y in tr])
    judge = WordJudge.train(feats, labels)
    test_feats, test_labels = take(HELD, range(0, 12))
    return judge, test_feats, test_labels


def test_word_judge_hears_a_new_voice_and_adapts_to_it_without_labels(judged):
    judge, feats, labels = judged
    plain = (judge.predict(feats, adapt=False) == labels).mean()
    adapted = (judge.predict(feats) == labels).mean()
    # 120 takes of a voice never heard, 480 training takes of four others
    assert plain > 0.5, plain
    assert adapted >= plain, (plain, adapted)


def test_word_judge_is_blind_to_the_callers_normalisation(judged):
    judge, feats, labels = judged
    rng = np.random.default_rng(0)
    gain, offset = rng.uniform(0.5, 2.0, 80), rng.normal(0, 3, 80)  # any per-bin affine map, e.g. global CMVN
    a = judge.predict(feats[:40], adapt=False)
    b = judge.predict([f * gain + offset for f in feats[:40]], adapt=False)
    assert (a == b).all()
    x = feats[0]
    assert np.allclose(judge_features(x, judge.scale, 13), judge_features(x * gain + offset, judge.scale, 13), atol=1e-3)


def test_word_judge_adapts_each_group_on_its_own(judged):
    judge, feats, labels = judged
    groups = ["a"] * 60 + ["b"] * 60
    both = judge.predict(feats, groups=groups)
    assert (both[:60] == judge.predict(feats[:60])).all() and (both[60:] == judge.predict(feats[60:])).all()
    assert judge.predict([np.zeros((0, 80), np.float32)], adapt=False).tolist() == [-1]  # empty: no digit


def test_word_judge_round_trips_and_refuses_a_broken_cache_by_name(judged, tmp_path):
    judge, feats, labels = judged
    judge.save(tmp_path / "wj")
    again = WordJudge.load(tmp_path / "wj")
    assert (again.predict(feats[:30]) == judge.predict(feats[:30])).all()
    meta = json.loads((tmp_path / "wj" / "word_judge.json").read_text())
    (tmp_path / "wj" / "word_judge.json").write_text(json.dumps({**meta, "scale": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="word_judge.json"):
        WordJudge.load(tmp_path / "wj")
    (tmp_path / "wj" / "word_judge.json").write_text("{not json")
    with pytest.raises(ValueError, match="word_judge.json"):
        WordJudge.load(tmp_path / "wj")
    with pytest.raises(ValueError, match="config"):
        WordJudgeConfig(mixtures=0)


def test_word_judge_cache_is_reused_and_a_damaged_one_trained_anew(small_shards, tmp_path, capsys):
    from pvae_model.eval.classifiers import load_or_train_word_judge

    audio, _ = small_shards
    judge, info = load_or_train_word_judge(audio, tmp_path)
    assert info["word_judge_train_utterances"] > 0 and 0 <= info["word_judge_seen_accuracy"] <= 1
    stamp = (tmp_path / "word_judge" / "model.npz").stat().st_mtime_ns
    again, info2 = load_or_train_word_judge(audio, tmp_path)  # cached: not trained again
    assert info2 == info and (tmp_path / "word_judge" / "model.npz").stat().st_mtime_ns == stamp
    (tmp_path / "word_judge" / "word_judge.json").write_text("{broken")
    third, info3 = load_or_train_word_judge(audio, tmp_path)
    assert "unreadable word judge cache" in capsys.readouterr().err and info3 == info

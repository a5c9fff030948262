"""The speaker-adapted word judge (pvae_model/eval/word_judge.py) on real FSDD takes: trained on
four voices, tested on a fifth it never heard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pvae_model.eval.word_judge import WordJudge, WordJudgeConfig, judge_features, word_scores

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
    for bad in (dict(mixtures=0), dict(frames_per_state=0.5), dict(fmllr_min_frames=-1)):
        with pytest.raises(ValueError, match="config"):
            WordJudgeConfig(**bad)


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


def _voice(judged, n=60):
    """The held-out voice's judge features with their true words (fMLLR's statistics need words)."""
    judge, feats, labels = judged
    xs = [judge_features(f, judge.scale, judge.cfg.ceps, judge.cfg.deltas) for f in feats[:n]]
    return judge.model, xs, [[str(int(y))] for y in labels[:n]]


def test_fmllr_is_equivariant_to_any_affine_map_of_the_voice(judged):
    """Kaldi's fMLLR finds the transform of a voice that the models fit best, so a voice seen through
    any invertible affine map (a channel, a normalisation) is brought to the same place."""
    from pvae_data.align.fmllr import apply_fmllr, estimate_fmllr, fmllr_objective, fmllr_stats, identity_transform

    model, xs, words = _voice(judged)
    d = xs[0].shape[1]
    rng = np.random.default_rng(0)
    m = np.concatenate([np.eye(d) + 0.1 * rng.normal(size=(d, d)), rng.normal(size=(d, 1))], axis=1)
    m_inv = np.linalg.inv(m[:, :d])
    back = np.concatenate([m_inv, -m_inv @ m[:, d:]], axis=1)  # y -> x
    ys = [apply_fmllr(m, x) for x in xs]
    stats_x = fmllr_stats(model, list(zip(xs, words)))
    stats_y = fmllr_stats(model, list(zip(ys, words)), transform=back)  # the same alignment as x's
    assert stats_x.beta == stats_y.beta > 2000
    # the best fit reached from either side is the same, less the map's own log-determinant per frame
    w_x, w_y = estimate_fmllr(stats_x, iterations=60), estimate_fmllr(stats_y, iterations=60)
    shift = np.linalg.slogdet(m_inv)[1]
    assert abs(fmllr_objective(stats_y, w_y) - shift - fmllr_objective(stats_x, w_x)) < 0.02
    # and the map composed with the voice's transform is as good a fit of y as the one found for it
    w_composed = np.concatenate([w_x[:, :d] @ m_inv, w_x[:, :d] @ back[:, d:] + w_x[:, d:]], axis=1)
    assert abs(fmllr_objective(stats_y, w_composed) - fmllr_objective(stats_y, w_y)) < 0.02
    # it fits better than the voice as it is, and each pass of row updates cannot lower the fit
    fits = [fmllr_objective(stats_x, estimate_fmllr(stats_x, iterations=k)) for k in range(4)]
    assert fits[0] == fmllr_objective(stats_x, identity_transform(d))
    assert all(b >= a - 1e-9 for a, b in zip(fits, fits[1:])) and fits[-1] > fits[0] + 0.1, fits


def test_fmllr_keeps_the_voice_as_it_is_on_thin_or_singular_statistics(judged):
    from pvae_data.align.fmllr import FmllrStats, estimate_fmllr, fmllr_stats, identity_transform

    model, xs, words = _voice(judged, n=2)
    stats = fmllr_stats(model, list(zip(xs, words)))
    assert 0 < stats.beta < 400
    assert (estimate_fmllr(stats, min_frames=400) == identity_transform(xs[0].shape[1])).all()
    d = stats.K.shape[0]
    empty = FmllrStats(50.0, np.zeros((d, d + 1)), np.zeros((d, d + 1, d + 1)))
    assert (estimate_fmllr(empty) == identity_transform(d)).all()
    # an utterance no path fits (fewer frames than the word has states) is left out of the statistics
    short = fmllr_stats(model, [(xs[0][:2], words[0])])
    assert short.beta == 0 and not short.K.any()


def test_judge_cache_is_written_whole_and_reused(small_shards, tmp_path):
    """The judges' cache appears file by file under temporary names, its info last: runs started
    together on the same shards never read a half-written file; a second load trains nothing."""
    import torch

    from pvae_model.eval.classifiers import load_or_train

    audio, images = small_shards
    sp, im, info, _ = load_or_train(audio, images, cache=tmp_path / "c", image_train_limit=200, word_judge=False)
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["classifiers.json", "image.pt", "speech.pt"]  # no temporary file left behind
    stamp = (tmp_path / "c" / "image.pt").stat().st_mtime_ns
    sp2, im2, info2, _ = load_or_train(audio, images, cache=tmp_path / "c", image_train_limit=200, word_judge=False)
    assert info2 == info and (tmp_path / "c" / "image.pt").stat().st_mtime_ns == stamp
    assert all(torch.equal(a, b) for a, b in zip(im.state_dict().values(), im2.state_dict().values()))


def test_judges_belong_to_their_shards_not_to_their_folder(small_shards, tmp_path, monkeypatch):
    """Two shards in one folder (``make demo``'s ``audio`` and ``audio_clean``) get a judge cache
    each; shards made anew with other contents at the same place train theirs anew; the same
    shards moved keep theirs."""
    import shutil

    from pvae_data.shards.writer import ShardConfig
    from pvae_data.stages.shard import shard_audio
    from pvae_model.eval import classifiers

    trained = []
    real = classifiers.train_speech_classifier
    monkeypatch.setattr(classifiers, "train_speech_classifier",
                        lambda train_set, **k: trained.append(len(train_set.labels)) or real(train_set, epochs=1))
    audio, images = small_shards
    shutil.copytree(audio, tmp_path / "shards" / "audio")
    shard_audio(audio.parent / "fbank", tmp_path / "shards" / "audio_clean", ShardConfig(seed=1), show_progress=False)
    load = lambda name: classifiers.load_or_train(tmp_path / "shards" / name, images, image_train_limit=200,
                                                  word_judge=False)[2]
    first = load("audio")
    assert (tmp_path / "shards" / "classifiers" / "classifiers.json").exists() and len(trained) == 1
    other = load("audio_clean")  # other shards beside them: their own judges, the first cache untouched
    assert len(trained) == 2 and other["shards_fingerprint"] != first["shards_fingerprint"]
    assert other["audio_shards"] == str((tmp_path / "shards" / "audio_clean").resolve())
    assert (tmp_path / "shards" / "classifiers-audio_clean" / "classifiers.json").exists()
    assert load("audio") == first and load("audio_clean") == other and len(trained) == 2  # each reused
    shutil.move(tmp_path / "shards", tmp_path / "moved")
    moved = classifiers.load_or_train(tmp_path / "moved" / "audio", images, cache=tmp_path / "moved" / "classifiers",
                                      image_train_limit=200, word_judge=False)[2]
    assert moved == first and len(trained) == 2
    shutil.rmtree(tmp_path / "moved" / "audio")  # the shards made anew at the same place, other contents
    shard_audio(audio.parent / "fbank", tmp_path / "moved" / "audio", ShardConfig(seed=2), show_progress=False)
    remade = classifiers.load_or_train(tmp_path / "moved" / "audio", images, image_train_limit=200, word_judge=False)[2]
    assert len(trained) == 3
    assert remade["shards_fingerprint"] not in (first["shards_fingerprint"], other["shards_fingerprint"])
    assert not (tmp_path / "moved" / "classifiers-audio").exists()  # trained anew in its own folder's cache


def test_a_judge_cache_write_that_fails_leaves_no_partial_file(small_shards, tmp_path, monkeypatch):
    import torch

    from pvae_model.eval import classifiers

    real_save = torch.save

    def dies_halfway(obj, path):  # a process killed while writing the image judge
        if "image" in str(path):
            Path(path).write_bytes(b"PK\x03\x04 half")
            raise KeyboardInterrupt
        real_save(obj, path)

    monkeypatch.setattr(torch, "save", dies_halfway)
    audio, images = small_shards
    with pytest.raises(KeyboardInterrupt):
        classifiers.load_or_train(audio, images, cache=tmp_path / "c", image_train_limit=200, word_judge=False)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["speech.pt"]


def test_judge_cap_tools_count_frication_and_widen_the_graph_only(judged, fsdd_recordings):
    """benchmarks/judge_cap.py: a tone holds no fricative frame and high-band noise many; theo's
    "six" holds its /s/; entries and exits inside a word only add paths; MMI lifts the training fit."""
    import sys

    import soundfile as sf

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import judge_cap

    t = np.arange(8000) / 8000
    assert judge_cap.fricative_frames(0.3 * np.sin(2 * np.pi * 300 * t), 8000) == 0
    noise = np.diff(np.random.default_rng(0).normal(size=8001))  # tilted up: most energy above 2 kHz
    assert judge_cap.fricative_frames(0.1 * noise, 8000) > 90
    wave, rate = sf.read(fsdd_recordings / "6_theo_0.wav", dtype="float64")
    assert judge_cap.fricative_frames(wave, rate) >= 4

    judge, feats, labels = judged
    model = judge.model
    x = judge_features(feats[0], judge.scale, judge.cfg.ceps, judge.cfg.deltas)
    plain = word_scores(model, x, {w: model.forced_graph([w]) for w in model.words})
    same = word_scores(model, x, {w: judge_cap.edge_graph(model, w, 0.0, -5.0) for w in model.words})
    wide = word_scores(model, x, {w: judge_cap.edge_graph(model, w, 0.34, -5.0) for w in model.words})
    assert np.allclose(same, plain)
    assert (wide >= plain - 1e-6).all() and (wide > plain + 1e-6).any(), (plain, wide)

    data = [(judge_features(f, judge.scale, judge.cfg.ceps, judge.cfg.deltas).astype(np.float64), int(y))
            for f, y in zip(feats[::3], labels[::3])]
    _, history = judge_cap.mmi(model, data, iters=2, kappa=0.05)
    assert history[1] > history[0], history

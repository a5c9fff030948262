"""Voices it has never heard: speaker-disjoint splits, perturbation (speed, VTLN/VTLP), SpecAugment,
per-utterance CMVN, per-speaker evaluation rows and the leave-one-speaker-out pooling."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pvae_data.cli import main as data_main
from pvae_data.fbank import FbankConfig, compute_fbank, mel_banks
from pvae_data.perturb import base_speaker, speaker_summary, speed_perturb
from pvae_data.stages.perturb import PerturbConfig, perturb_manifest
from pvae_data.stages.prepare import PrepareConfig, SplitError, hold_out_speakers, prepare_corpus
from pvae_model.augment import SpecAugmentConfig, spec_augment
from pvae_model.normalize import normalize_utterance

BAND = dict(low_freq=40.0, high_freq=3700.0)


# ---- VTLN warp of the Mel filters: kaldi-native-fbank's MelBanks is the oracle --------------

@pytest.mark.parametrize("warp,band", [(0.9, {}), (1.1, {}), (0.85, BAND), (1.15, BAND), (1.0, BAND)])
def test_vtln_mel_banks_match_kaldi_native_fbank(warp, band):
    knf = pytest.importorskip("kaldi_native_fbank")
    cfg = FbankConfig(vtln_warp=warp, **band)
    o = knf.MelBanksOptions()
    o.num_bins, o.low_freq, o.high_freq = 80, cfg.low_freq, cfg.high_freq
    o.vtln_low = cfg.vtln_low
    o.vtln_high = cfg.vtln_high if not band else cfg.high_freq + cfg.vtln_high  # ours: offset from high_freq
    fo = knf.FrameExtractionOptions()
    fo.samp_freq = 16000
    ref = np.array(knf.MelBanks(o, fo, warp).get_matrix())  # [80, 257]
    ours = mel_banks(cfg).T
    assert np.abs(ref - ours[:, : ref.shape[1]]).max() < 1e-4
    if warp != 1.0:
        assert np.abs(ours - mel_banks(replace(cfg, vtln_warp=1.0)).T).max() > 0.1  # the warp moved the filters


@pytest.mark.parametrize("bad", [0.0, -1.0, 2.5])
def test_vtln_warp_out_of_range_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="vtln_warp"):
        FbankConfig(vtln_warp=bad)


def test_speed_perturbation_changes_duration_and_pitch():
    sr = 16000
    t = np.arange(sr) / sr
    wave = (8000 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    fast = speed_perturb(wave, sr, 1.25)
    assert abs(len(fast) - sr / 1.25) <= 2
    peak = np.argmax(np.abs(np.fft.rfft(fast))) * sr / len(fast)
    assert abs(peak - 625) < 5  # every frequency x 1.25
    assert np.array_equal(speed_perturb(wave, sr, 1.0), wave)
    with pytest.raises(ValueError, match="speed"):
        speed_perturb(wave, sr, 0)


# ---- the perturb stage and the fbank stage reading its copies -------------------------------

def _segments(tmp_path: Path, fsdd_recordings: Path) -> Path:
    recs = []
    for spk in ("george", "jackson"):
        for d in (1, 2):
            for take in (0, 7):
                p = fsdd_recordings / f"{d}_{spk}_{take}.wav"
                recs.append({"id": f"{spk}-{d}-{take:02d}", "audio": str(p), "speaker": spk,
                             "transcript": ["zero", "one", "two"][d], "split": "test" if take < 5 else "train"})
    path = tmp_path / "segments.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_perturb_copies_train_only_with_prefixed_ids_and_speakers(tmp_path, fsdd_recordings):
    seg = _segments(tmp_path, fsdd_recordings)
    s = perturb_manifest(seg, tmp_path / "p", PerturbConfig(speed=(0.9, 1.0, 1.1), vtlp=(1.1,)))
    recs = [json.loads(x) for x in (tmp_path / "p" / "segments.jsonl").read_text().splitlines()]
    assert s.total == 8 and s.kept == 8 and s.rejected == 0 and s.extra["copies"] == 4 * 3
    ids = {r["id"] for r in recs}
    assert {"sp0.9-george-1-07", "sp1.1-george-1-07", "vtlp1.1-george-1-07"} <= ids
    assert not any(i.startswith(("sp", "vtlp")) and "-00" in i[-3:] for i in ids)  # test takes are never copied
    sp = next(r for r in recs if r["id"] == "sp0.9-george-1-07")
    assert sp["speaker"] == "sp0.9-george" and sp["speed"] == 0.9 and sp["perturbed_from"] == "george-1-07"
    assert base_speaker(sp["speaker"]) == "george" and base_speaker("vtlp1.1-sp0.9-x") == "x"
    # copies of the retired perturb --pitch, in shards made while it existed, stay their source's
    assert base_speaker("pitch1.7-lucas") == "lucas" and base_speaker("pitchy-lucas") == "pitchy-lucas"
    summary = speaker_summary(recs)
    assert summary["train"] == ["george", "jackson"] and summary["held_out"] == [] and summary["perturbed"] == 12
    first = (tmp_path / "p" / "segments.jsonl").read_bytes()
    perturb_manifest(seg, tmp_path / "p", PerturbConfig(speed=(0.9, 1.0, 1.1), vtlp=(1.1,)))
    assert (tmp_path / "p" / "segments.jsonl").read_bytes() == first  # byte-reproducible
    # a copy is not perturbed again: rejected with its reason, every input accounted for
    s2 = perturb_manifest(tmp_path / "p" / "segments.jsonl", tmp_path / "p2", PerturbConfig())
    assert s2.rejected == 12 and s2.kept + s2.rejected == s2.total == 20


@pytest.mark.parametrize("flag,value", [("--speed", "0,1"), ("--speed", "2.5"), ("--vtlp", "-1")])
def test_perturb_cli_refuses_bad_factors_by_name(tmp_path, fsdd_recordings, flag, value):
    seg = _segments(tmp_path, fsdd_recordings)
    r = CliRunner().invoke(data_main, ["perturb", str(seg), str(tmp_path / "o"), flag, value])
    assert r.exit_code != 0 and flag.strip("-") in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o" / "segments.jsonl").exists()


def test_fbank_stage_applies_speed_and_warp(tmp_path, fsdd_recordings):
    from pvae_data.audio import load_audio
    from pvae_data.stages.fbank import FbankStageConfig, compute_features, load_features

    seg = _segments(tmp_path, fsdd_recordings)
    perturb_manifest(seg, tmp_path / "p", PerturbConfig(speed=(0.9, 1.0), vtlp=(0.9,)))
    fb = FbankConfig(**BAND)
    s = compute_features(tmp_path / "p" / "segments.jsonl", tmp_path / "f", FbankStageConfig(fbank=fb),
                         show_progress=False)
    assert s.rejected == 0
    recs = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "f" / "features.jsonl").read_text().splitlines()}
    orig = recs["george-1-07"]
    wave, _ = load_audio(orig["audio"], target_rate=16000)
    np.testing.assert_allclose(load_features(tmp_path / "f", orig), compute_fbank(wave, fb), atol=1e-5)
    np.testing.assert_allclose(load_features(tmp_path / "f", recs["sp0.9-george-1-07"]),
                               compute_fbank(speed_perturb(wave, 16000, 0.9), fb), atol=1e-5)
    np.testing.assert_allclose(load_features(tmp_path / "f", recs["vtlp0.9-george-1-07"]),
                               compute_fbank(wave, replace(fb, vtln_warp=0.9)), atol=1e-5)
    assert recs["sp0.9-george-1-07"]["num_frames"] > orig["num_frames"] * 1.05
    # per-speaker statistics of copies stay apart from their sources'
    cmvn = json.loads((tmp_path / "f" / "cmvn.json").read_text())
    assert {"george", "sp0.9-george", "vtlp0.9-george"} <= set(cmvn["speakers"])


def test_the_trim_config_travels_from_trim_to_the_shards_and_the_front_end(tmp_path, fsdd_recordings):
    """A model's front end trims a new recording as its training data were trimmed: the trim
    stage's VAD config is found up the lineage (trim -> perturb -> fbank), recorded in the shards'
    index, and read back by ``load_vad_config``; shards without it get the trim stage's defaults."""
    from pvae_data.stages.fbank import FbankStageConfig, compute_features
    from pvae_data.stages.shard import shard_audio
    from pvae_data.stages.trim import trim_manifest, upstream_vad_config
    from pvae_data.vad import VadConfig
    from pvae_model.run import load_vad_config

    seg = _segments(tmp_path, fsdd_recordings)
    vad = VadConfig(margin_s=0.02)
    trim_manifest(seg, tmp_path / "t", vad, show_progress=False)
    perturb_manifest(tmp_path / "t" / "segments.jsonl", tmp_path / "p", PerturbConfig(speed=(0.9, 1.0)))
    assert upstream_vad_config(tmp_path / "p" / "segments.jsonl") == vad.to_dict()
    compute_features(tmp_path / "p" / "segments.jsonl", tmp_path / "f", FbankStageConfig(), show_progress=False)
    shard_audio(tmp_path / "f", tmp_path / "s", show_progress=False)
    assert json.loads((tmp_path / "s" / "index.json").read_text())["trim"]["margin_s"] == 0.02
    assert load_vad_config(tmp_path / "s") == vad.to_dict()
    # features made from an untrimmed manifest: nothing upstream, so the defaults, said by absence
    compute_features(seg, tmp_path / "f2", FbankStageConfig(), show_progress=False)
    shard_audio(tmp_path / "f2", tmp_path / "s2", show_progress=False)
    assert "trim" not in json.loads((tmp_path / "s2" / "index.json").read_text())
    assert load_vad_config(tmp_path / "s2") == VadConfig().to_dict()
    # a lineage that loops or names garbage ends with None, never an error
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "x_config.json").write_text(json.dumps({"manifest": str(tmp_path / "loop" / "m.jsonl")}))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "y_config.json").write_text("not json")
    assert upstream_vad_config(tmp_path / "loop" / "m.jsonl") is None
    assert upstream_vad_config(tmp_path / "bad" / "m.jsonl") is None
    # a segment stage trims with its own VAD: the search ends there, not at a trim further up
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "segment_config.json").write_text(json.dumps(
        {"config": {"vad": VadConfig(margin_s=0.0).to_dict()}, "manifest": str(tmp_path / "t" / "segments.jsonl")}))
    assert upstream_vad_config(tmp_path / "seg" / "segments.jsonl")["margin_s"] == 0.0
    # a crafted "trim" in a shard set's index: refused with the file and the field named
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    index["trim"]["margin_s"] = -1
    (tmp_path / "s" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"index\.json: \"trim\": margin_s"):
        load_vad_config(tmp_path / "s")


def test_fbank_stage_rejects_a_bad_perturbation_field_by_name(tmp_path, fsdd_recordings):
    from pvae_data.stages.fbank import FbankStageConfig, compute_features

    seg = _segments(tmp_path, fsdd_recordings)
    recs = [json.loads(x) for x in seg.read_text().splitlines()]
    recs[0]["speed"] = 7
    recs[1]["vtln_warp"] = 0
    seg.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = compute_features(seg, tmp_path / "f", FbankStageConfig(), show_progress=False)
    assert s.kept == 6 and s.rejected == 2
    rej = [json.loads(x)["reason"] for x in (tmp_path / "f" / "rejected.jsonl").read_text().splitlines()]
    assert any("speed" in r for r in rej) and any("vtln_warp" in r for r in rej)


# ---- speaker-disjoint prepare ---------------------------------------------------------------

def test_prepare_holds_out_test_speakers(tmp_path, fsdd_subset):
    s = prepare_corpus(PrepareConfig(corpus="fsdd", source=str(fsdd_subset), test_speakers=("jackson",)),
                       tmp_path / "p", progress=False)
    recs = [json.loads(x) for x in (tmp_path / "p" / "utterances.jsonl").read_text().splitlines()]
    held = [r for r in recs if r["speaker"] == "jackson"]
    assert held and all(r["split"] == "test" and r.get("held_out") for r in held)
    assert all(not r.get("held_out") for r in recs if r["speaker"] != "jackson")
    assert s.kept == len(recs)
    cfg = json.loads((tmp_path / "p" / "prepare_config.json").read_text())
    assert cfg["test_speakers"] == ["jackson"]
    assert speaker_summary(recs)["held_out"] == ["jackson"]


def test_prepare_refuses_an_unknown_or_exhausting_test_speaker(tmp_path, fsdd_subset):
    r = CliRunner().invoke(data_main, ["prepare", "fsdd", str(fsdd_subset), str(tmp_path / "o"),
                                       "--test-speakers", "bob", "-q"])
    assert r.exit_code == 1 and "bob" in r.output and "not in the corpus" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()  # nothing written
    speakers = sorted({p.name.split("_")[1] for p in (fsdd_subset / "recordings").glob("*.wav")}
                      or {p.name.split("_")[1] for p in fsdd_subset.glob("*.wav")})
    r = CliRunner().invoke(data_main, ["prepare", "fsdd", str(fsdd_subset), str(tmp_path / "o"),
                                       "--test-speakers", ",".join(speakers), "-q"])
    assert r.exit_code == 1 and "no training speaker" in r.output


def test_hold_out_refuses_a_split_leaving_a_digit_untrained():
    recs = [{"speaker": "a", "transcript": "one", "split": None}, {"speaker": "a", "transcript": "two", "split": None},
            {"speaker": "b", "transcript": "one", "split": None}]
    with pytest.raises(SplitError, match="no training data for two"):
        hold_out_speakers([dict(r) for r in recs], ["a"])
    ok = [dict(r) for r in recs]
    hold_out_speakers(ok, ["b"])
    assert [r["split"] for r in ok] == ["train", "train", "test"]


# ---- SpecAugment and per-utterance CMVN -----------------------------------------------------

def test_spec_augment_masks_within_each_utterance_and_is_seeded():
    x = torch.ones(3, 20, 8)
    lengths = torch.tensor([20, 5, 1])
    cfg = SpecAugmentConfig(freq_masks=1, freq_width=3, time_masks=2, time_width=30)
    a = spec_augment(x, lengths, cfg, torch.Generator().manual_seed(0))
    b = spec_augment(x, lengths, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and (a == 0).any()
    t = spec_augment(x, lengths, replace(cfg, freq_masks=0), torch.Generator().manual_seed(1))
    assert (t[1, 5:] == 1).all() and (t[2, 1:] == 1).all()  # a time mask stays within its utterance
    assert (t[1, :5] == 0).any() and (t[0] == 0).any()
    assert torch.equal(spec_augment(x, lengths, SpecAugmentConfig(), torch.Generator()), x)
    with pytest.raises(ValueError, match="freq_width"):
        spec_augment(x, lengths, SpecAugmentConfig(freq_masks=1, freq_width=9), torch.Generator())
    with pytest.raises(ValueError, match="time_masks"):
        SpecAugmentConfig(time_masks=-1)


def test_mel_warp_is_kaldis_vtln_warp_read_off_the_features():
    """A SpecAugment warp of the Mel axis lands near the FBank Kaldi's VTLN-warped filters compute
    (our filters match kaldi-native-fbank's above): the envelope moves the right way, by the right amount."""
    import soundfile as sf

    from pvae_model.augment import mel_warp, warp_source_bins

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings" / "3_george_0.wav"
    if not data.exists():
        pytest.skip(f"{data} not found")
    wave, sr = sf.read(data, dtype="float32")
    cfg = FbankConfig(sample_rate=sr, num_mel_bins=40, **BAND)
    plain = compute_fbank(wave * 32768, cfg)
    x = torch.from_numpy(plain)[None]
    assert np.array_equal(warp_source_bins(1.0, cfg).round(3), np.arange(40.0))
    assert torch.allclose(mel_warp(x, torch.tensor([1.0]), cfg), x, atol=1e-4)
    for warp in (0.9, 1.15):
        kaldi = compute_fbank(wave * 32768, replace(cfg, vtln_warp=warp))
        ours = mel_warp(x, torch.tensor([warp]), cfg)[0].numpy()
        assert np.abs(ours - kaldi).mean() < 0.35 * np.abs(plain - kaldi).mean()
    up = warp_source_bins(1.2, cfg)
    assert (up[5:-5] < np.arange(40.0)[5:-5]).all()  # a factor above 1 reads lower bins: the envelope moves up


def test_spec_augment_warp_is_seeded_and_refused_out_of_range():
    cfg = FbankConfig(**BAND)
    x, lengths = torch.randn(4, 30, 80), torch.tensor([30, 20, 10, 5])
    x[3, 5:] = 0  # padding
    aug = SpecAugmentConfig(warp_min=0.9, warp_max=1.3)
    a = spec_augment(x, lengths, aug, torch.Generator().manual_seed(0), cfg)
    assert torch.equal(a, spec_augment(x, lengths, aug, torch.Generator().manual_seed(0), cfg))
    assert not torch.equal(a, x) and (a[3, 5:] == 0).all()  # padding stays padding
    assert SpecAugmentConfig(warp_min=1.1, warp_max=1.1).enabled and not SpecAugmentConfig().enabled
    with pytest.raises(ValueError, match="fbank"):
        spec_augment(x, lengths, aug, torch.Generator())
    for bad in (dict(warp_min=0.0), dict(warp_max=2.5), dict(warp_min=1.2, warp_max=1.1)):
        with pytest.raises(ValueError, match="spec_augment.warp_m"):
            SpecAugmentConfig(**bad)


def test_a_retired_spec_augment_field_loads_at_its_neutral_value_and_is_refused_when_used():
    assert SpecAugmentConfig.from_dict({"warp_min": 0.9, "warp_max": 1.3, "warp_spread": 0.0}) == \
        SpecAugmentConfig(warp_min=0.9, warp_max=1.3)
    with pytest.raises(ValueError, match="^spec_augment.warp_spread: an experiment that was not kept.*895edee"):
        SpecAugmentConfig.from_dict({"warp_min": 0.9, "warp_max": 1.3, "warp_spread": 0.15})
    with pytest.raises(ValueError, match="^spec_augment.edge_frames: an experiment that was not kept.*1146695"):
        SpecAugmentConfig.from_dict({"edge_frames": 5})


def test_utterance_cmvn_is_blind_to_a_channel_and_to_global_cmvn():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, 80)).astype(np.float32) * 3 + 10
    n = normalize_utterance(f)
    np.testing.assert_allclose(n.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(n.std(0), 1, atol=1e-4)
    gain, shift = rng.uniform(0.5, 2, 80), rng.normal(size=80)  # a channel / global CMVN: per-bin affine
    np.testing.assert_allclose(normalize_utterance(f * gain + shift), n, atol=1e-4)


def test_train_config_refuses_an_unknown_cmvn_mode():
    from pvae_model.config import TrainConfig

    with pytest.raises(ValueError, match="cmvn"):
        TrainConfig(cmvn="speaker-ish")
    c = TrainConfig.from_dict({"cmvn": "utterance", "spec_augment": {"time_masks": 2, "time_width": 5}})
    assert c.deviations()["cmvn"] == "utterance" and c.deviations()["spec_augment"]["time_width"] == 5


# ---- pooling leave-one-speaker-out folds ----------------------------------------------------

def test_pool_folds_weights_held_out_speakers_by_utterances(tmp_path):
    from pvae_model.eval.pool import markdown, pool_folds

    runs = []  # laid out as pipelines/loso.sh does: OUT/<speaker>/pvae for every fold
    for name, n, acc in (("a", 100, 0.9), ("b", 300, 0.5)):
        d = tmp_path / name / "pvae" / "eval"
        d.mkdir(parents=True)
        g = {"speakers": [name], "n": n, "purity": acc, "speech_to_image": acc, "speech_own": acc, "judge": acc,
             "judge_adapted": acc + 0.05}
        (d / "metrics.json").write_text(json.dumps({"epoch": 3, "speaker_groups": {"held_out": g},
                                                    "coherence": {"image_to_speech_prior": acc,
                                                                  "word_judge": {"image_to_speech_prior": acc / 2}},
                                                    "voices": {"default": "v", "image_to_speech": {"v": 1 - acc, "w": 0},
                                                               "image_to_speech_word_judge": {"v": 0.8, "w": 0}}}))
        runs.append(tmp_path / name / "pvae")
    p = pool_folds(runs)
    assert abs(p["pooled"]["image_to_speech_voice"] - 0.3) < 1e-9  # the typical voice's, mean over folds
    assert "**30.0** |" in markdown(p)
    assert list(p["folds"]) == ["a/pvae", "b/pvae"]  # same directory names: each fold kept apart
    assert p["pooled"]["n"] == 400 and abs(p["pooled"]["purity"] - 0.6) < 1e-9
    assert abs(p["pooled"]["image_to_speech"] - 0.7) < 1e-9 and p["pooled"]["worst_judge"] == 0.5
    # the speaker-adapted word judge: over utterances on the real takes, over folds for image -> speech
    assert abs(p["pooled"]["judge_adapted"] - 0.65) < 1e-9 and abs(p["pooled"]["worst_judge_adapted"] - 0.55) < 1e-9
    assert abs(p["pooled"]["image_to_speech_word"] - 0.35) < 1e-9
    assert abs(p["pooled"]["image_to_speech_voice_word"] - 0.8) < 1e-9 and "**65.0** |" in markdown(p)
    (tmp_path / "c" / "eval").mkdir(parents=True)
    (tmp_path / "c" / "eval" / "metrics.json").write_text(json.dumps({"speaker_groups": {}}))
    with pytest.raises(ValueError, match="no held-out speaker"):
        pool_folds([tmp_path / "c"])
    with pytest.raises(ValueError, match="given twice"):
        pool_folds([runs[0], runs[0]])


def test_spec_augment_wider_than_an_utterance_is_refused_by_name(small_shards):
    from pvae_model.data import PairedEpochs, load_audio_split, load_image_split

    audio, images = load_audio_split(small_shards[0], "train", mode="utterance"), load_image_split(small_shards[1], "test")
    shortest = int(audio.lengths.min())
    with pytest.raises(ValueError, match="spec_augment.time_width"):
        PairedEpochs(audio, images, 16, spec_augment=SpecAugmentConfig(time_masks=1, time_width=shortest + 1))
    data = PairedEpochs(audio, images, 16, spec_augment=SpecAugmentConfig(time_masks=2, time_width=3))
    b = next(iter(data.batches(0)))
    assert "audio_input" in b and not torch.equal(b["audio_input"], b["audio"])  # encoders read the masked copy
    again = next(iter(PairedEpochs(audio, images, 16, spec_augment=SpecAugmentConfig(time_masks=2, time_width=3)).batches(0)))
    assert torch.equal(b["audio_input"], again["audio_input"])  # seeded by (seed, epoch, batch)


def test_training_with_utterance_cmvn_and_spec_augment_is_deterministic(tmp_path, small_shards):
    from pvae_model.config import TrainConfig
    from pvae_model.train import train

    d = {"audio_shards": str(small_shards[0]), "image_shards": str(small_shards[1]), "epochs": 2, "batch_size": 32,
         "eval_every": 0, "eval_coherence": False, "num_threads": 1, "seed": 3, "cmvn": "utterance",
         "spec_augment": {"freq_masks": 1, "freq_width": 8, "time_masks": 1, "time_width": 4,
                          "warp_min": 0.9, "warp_max": 1.3},
         "pvae": {"hidden": 16, "z_shared": 4, "z_audio": 4, "z_image": 4, "image_channels": [4, 8]}}
    for name in ("a", "b"):
        train(TrainConfig.from_dict(d), tmp_path / name, show_progress=False)
    strip = lambda run: [{k: v for k, v in json.loads(x).items() if k not in ("pairs_per_s", "minutes")}  # noqa: E731
                         for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert strip("a") == strip("b") and len(strip("a")) == 2


def test_audio_input_norm_makes_the_speech_encoders_blind_to_a_channel():
    from pvae_model.models.baselines import UnimodalVAE
    from pvae_model.models.pvae import PVAE, PVAEConfig

    small = dict(hidden=16, z_shared=4, z_audio=4, z_image=4, image_channels=(4, 8))
    torch.manual_seed(0)
    x, lengths = torch.randn(3, 20, 80), torch.tensor([20, 10, 5])
    gain, shift = torch.rand(80) + 0.5, torch.randn(80)  # per-bin affine: a channel, or another CMVN
    m = PVAE(PVAEConfig(**small, departures=dict(audio_input_norm="utterance"))).eval()
    with torch.no_grad():
        a, b = m.encode_audio(x, lengths), m.encode_audio(x * gain + shift, lengths)
    assert all(torch.allclose(a[k][0], b[k][0], atol=1e-5) for k in ("s", "a"))
    plain = PVAE(PVAEConfig(**small)).eval()
    with torch.no_grad():
        assert not torch.allclose(plain.encode_audio(x, lengths)["s"][0], plain.encode_audio(x * gain + shift, lengths)["s"][0])
    assert PVAEConfig(departures=dict(audio_input_norm="utterance")).size_changes()["audio_input_norm"] == "utterance"
    with pytest.raises(ValueError, match="audio_input_norm"):
        PVAEConfig(departures=dict(audio_input_norm="speaker"))
    vae = UnimodalVAE(PVAEConfig(**small, departures=dict(audio_input_norm="utterance")), "audio").eval()
    with torch.no_grad():
        assert torch.allclose(vae.encode_audio(x, lengths)["s"][0], vae.encode_audio(x * gain + shift, lengths)["s"][0], atol=1e-5)


def test_speaker_cmvn_uses_each_speakers_stats_and_falls_back_by_name(small_shards):
    from pvae_data.shards.reader import AudioShards
    from pvae_model.data import load_audio_split

    raw = AudioShards(small_shards[0], "train")
    per = raw.cmvn["speakers"]
    a = load_audio_split(small_shards[0], "train", mode="speaker", min_speaker_frames=0)
    i = 0
    st = per[raw.speakers[i]]
    np.testing.assert_allclose(a.feats[i].numpy(), (raw[i].feats - np.asarray(st["mean"], np.float32))
                               / np.asarray(st["std"], np.float32), atol=1e-4)
    assert a.cmvn_fallback == []
    few = load_audio_split(small_shards[0], "train", mode="speaker", min_speaker_frames=10**9)
    assert few.cmvn_fallback == sorted(set(raw.speakers))  # every speaker named, none silently global
    np.testing.assert_allclose(few.feats[i].numpy(), normalize_utterance(raw[i].feats), atol=1e-5)


def test_evaluate_reads_a_speaker_cmvn_run_both_ways(small_shards):
    """speaker_rows(one_wav=True): each take normalised by itself alone, what one WAV of a new voice
    gets. A model whose speech encoders normalise per utterance themselves reads both the same."""
    from pvae_data.shards.reader import AudioShards
    from pvae_model.data import load_audio_split, load_image_split
    from pvae_model.eval.speakers import speaker_rows
    from pvae_model.models.pvae import PVAE, PVAEConfig

    class RecordingJudge:  # records what it was shown; the answers do not matter here
        words, shown = None, []

        def image_predictions(self, imgs):
            self.shown.append(imgs.clone())
            return np.zeros(len(imgs), dtype=np.int64)

        def speech_predictions(self, x, lengths):
            return np.zeros(len(x), dtype=np.int64)

    audio = load_audio_split(small_shards[0], "test", mode="speaker", min_speaker_frames=0)
    images = load_image_split(small_shards[1], "test")
    info = {"train": sorted(set(AudioShards(small_shards[0], "train").speakers))}
    small = dict(hidden=16, z_shared=4, z_audio=4, z_image=4, image_channels=(4, 8))
    for norm, same in (("utterance", True), ("none", False)):
        torch.manual_seed(0)
        model, judge = PVAE(PVAEConfig(**small, departures=dict(audio_input_norm=norm))).eval(), RecordingJudge()
        judge.shown = []
        r = speaker_rows(model, judge, audio, images, info, n_images=20, one_wav=True)
        assert "speech_to_image_one_wav" in r["groups"]["seen"] and len(judge.shown) == 2
        assert torch.allclose(judge.shown[0], judge.shown[1], atol=1e-4) == same, norm
    assert "speech_to_image_one_wav" not in speaker_rows(model, judge, audio, images, info, n_images=20)["groups"]["seen"]


def test_report_shows_the_one_wav_column_only_for_a_speaker_cmvn_run():
    from pvae_model.eval.report import speaker_section

    g = {"n": 500, "speakers": ["george"], "purity": 0.8, "speech_to_image": 0.81, "speech_own": 0.8, "judge": 0.7}
    m = {"speakers": {"train": ["jackson"], "held_out": ["george"]}, "speaker_groups": {"held_out": g}}
    assert "one WAV" not in "".join(speaker_section(m))
    m["speaker_groups"]["held_out"] = {**g, "speech_to_image_one_wav": 0.708}
    page = "".join(speaker_section(m))
    assert "speech→image, one WAV" in page and "70.8" in page and "81.0" in page


@pytest.mark.parametrize("field,value,commit", [("pitch", 1.7, "012c84f"), ("clip_db", 6.0, "f09a36a")])
def test_a_copy_from_a_retired_experiment_is_rejected_by_name(tmp_path, fsdd_recordings, field, value, commit):
    from pvae_data.stages.fbank import FbankStageConfig, compute_features

    seg = _segments(tmp_path, fsdd_recordings)
    recs = [json.loads(x) for x in seg.read_text().splitlines()]
    copy = {**recs[1], "id": "x-" + recs[1]["id"], field: value, "perturbed_from": recs[1]["id"]}
    seg.write_text("".join(json.dumps(r) + "\n" for r in recs + [copy]))
    s = compute_features(seg, tmp_path / "f", FbankStageConfig(fbank=FbankConfig(**BAND)), show_progress=False)
    assert s.rejected == 1 and s.kept + s.rejected == s.total == len(recs) + 1
    bad = json.loads((tmp_path / "f" / "rejected.jsonl").read_text().splitlines()[0])
    assert bad["id"] == copy["id"] and field in bad["reason"] and commit in bad["reason"]


def test_the_retired_cepstra_input_loads_at_its_neutral_value_and_is_refused_when_used():
    from pvae_model.models.pvae_config import Departures

    assert Departures.from_dict({"audio_input_cepstra": 0}) == Departures()
    with pytest.raises(ValueError, match="audio_input_cepstra.*d1ac7b1"):
        Departures.from_dict({"audio_input_cepstra": 20})

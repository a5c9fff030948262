"""pvae_data.audio: inspection (what is rejected, and why) and loading on the int16 scale."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import soundfile as sf
import soxr

from pvae_data.audio import AudioError, AudioInfo, inspect_audio, load_audio, read_sphere_header


@pytest.fixture
def noise16():
    rng = np.random.default_rng(1)
    return np.clip(rng.normal(0, 3000, 8000), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------------------------- inspect


def test_inspect_real_fsdd(fsdd_recordings):
    p = fsdd_recordings / "7_george_5.wav"
    info = inspect_audio(p)
    ref = sf.info(str(p))
    assert isinstance(info, AudioInfo)
    assert info.path == str(p)
    assert (info.sample_rate, info.channels, info.num_samples) == (8000, 1, ref.frames)
    assert info.duration == pytest.approx(ref.frames / 8000)
    assert info.format == "WAV" and not info.is_sphere


def test_inspect_sphere_named_wav(tmp_path, write_audio, noise16):
    p = write_audio(tmp_path / "a.wav", noise16, 20000, format="NIST")
    assert p.read_bytes().startswith(b"NIST_1A")
    info = inspect_audio(p)
    assert info.is_sphere and info.format == "NIST"
    assert (info.sample_rate, info.channels, info.num_samples) == (20000, 1, len(noise16))
    hdr = read_sphere_header(p)
    assert hdr["sample_rate"] == 20000 and hdr["sample_coding"] == "pcm"
    assert read_sphere_header(write_audio(tmp_path / "b.wav", noise16, 8000)) is None


def test_inspect_wav_not_sphere_even_if_named_sph(tmp_path, write_audio, noise16):
    info = inspect_audio(write_audio(tmp_path / "a.sph", noise16, 8000, format="WAV"))
    assert info.format == "WAV" and not info.is_sphere


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p, w: p.write_bytes(np.random.default_rng(0).bytes(6000)), "unreadable: "),
        (lambda p, w: p.write_bytes(b""), "empty (0 bytes)"),
        (lambda p, w: w(p, np.zeros(0, np.int16), 8000), "empty (0 samples)"),
        (lambda p, w: w(p, np.zeros(0, np.int16), 20000, format="NIST"), "empty (0 samples)"),
        (lambda p, w: w(p, np.zeros(4000, np.int16), 8000), "zero energy (all samples are 0)"),
        (lambda p, w: p.write_text("one two three\nthis is not audio\n" * 20), "not audio"),
        (lambda p, w: w(p, np.array([0.1, np.nan, 0.2] * 100, np.float32), 8000, subtype="FLOAT"), "non-finite"),
    ],
    ids=["random-bytes", "zero-bytes", "header-only-wav", "header-only-sphere", "all-zero", "text", "nan"],
)
def test_inspect_rejects(tmp_path, write_audio, make, reason):
    p = tmp_path / "x.wav"
    make(p, write_audio)
    with pytest.raises(AudioError) as ei:
        inspect_audio(p)
    assert ei.value.reason.startswith(reason), ei.value.reason
    assert str(p) in str(ei.value)


def test_inspect_text_reason_carries_libsndfile_message(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("hello\n")
    with pytest.raises(AudioError, match="Format not recognised"):
        inspect_audio(p)


def test_inspect_missing_and_directory(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        inspect_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="is a directory"):
        inspect_audio(tmp_path)


def test_sphere_shorten_rejected(tmp_path, write_sphere_shorten):
    # libsndfile either refuses such a file with a vague message or (if the header also has a
    # plain "pcm" coding line) reads the compressed bytes as noise: we name the problem.
    p = write_sphere_shorten(tmp_path / "1a.wav")
    for fn in (inspect_audio, load_audio):
        with pytest.raises(AudioError) as ei:
            fn(p)
        assert ei.value.reason == "SPHERE shorten-compressed: decompress with sph2pipe first"


def test_audio_error_is_value_error_and_picklable():
    e = AudioError("/x.wav", "empty (0 samples)")
    assert isinstance(e, ValueError)
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.path, e2.reason, str(e2)) == ("/x.wav", "empty (0 samples)", "/x.wav: empty (0 samples)")


# ------------------------------------------------------------------------------------- load


def test_load_int16_exact(fsdd_recordings):
    p = fsdd_recordings / "3_lucas_12.wav"
    x, sr = load_audio(p)
    ref, rsr = sf.read(str(p), dtype="int16")
    assert sr == rsr == 8000
    assert x.dtype == np.float32 and x.ndim == 1
    np.testing.assert_array_equal(x, ref.astype(np.float32))
    assert x.min() >= -32768 and x.max() <= 32767


@pytest.mark.parametrize("fmt, subtype, ext", [("WAV", "FLOAT", "wav"), ("WAV", "PCM_24", "wav"), ("FLAC", "PCM_16", "flac")])
def test_load_other_encodings_on_int16_scale(tmp_path, write_audio, noise16, fmt, subtype, ext):
    p = write_audio(tmp_path / f"a.{ext}", noise16.astype(np.float64) / 32768.0, 16000, format=fmt, subtype=subtype)
    x, sr = load_audio(p)
    assert sr == 16000 and x.dtype == np.float32
    np.testing.assert_array_equal(x, noise16.astype(np.float32))


def test_load_sphere(tmp_path, write_audio, noise16):
    p = write_audio(tmp_path / "a.wav", noise16, 20000, format="NIST")
    x, sr = load_audio(p)
    assert sr == 20000
    np.testing.assert_array_equal(x, noise16.astype(np.float32))


def test_load_stereo_downmix(tmp_path, write_audio, fsdd_audio):
    a, sr = fsdd_audio(4, "theo", 7)
    b = (-(a.astype(np.int32) // 3)).astype(np.int16)
    p = write_audio(tmp_path / "st.wav", np.stack([a, b], axis=1), sr)
    assert inspect_audio(p).channels == 2
    x, xsr = load_audio(p)
    assert xsr == sr and x.shape == a.shape
    np.testing.assert_array_equal(x, (a.astype(np.float64) + b) / 2)


def test_load_slice(fsdd_recordings):
    p = fsdd_recordings / "6_nicolas_20.wav"
    full, sr = load_audio(p)
    seg, _ = load_audio(p, start=0.1, end=0.2)
    np.testing.assert_array_equal(seg, full[800:1600])
    np.testing.assert_array_equal(load_audio(p, start=0.05)[0], full[400:])
    np.testing.assert_array_equal(load_audio(p, end=0.125)[0], full[:1000])
    # end past the end of the file is clipped
    np.testing.assert_array_equal(load_audio(p, start=0.1, end=100.0)[0], full[800:])
    for start, end in [(100.0, None), (0.2, 0.1), (-0.1, 0.2)]:
        with pytest.raises(AudioError, match="bad segment"):
            load_audio(p, start=start, end=end)


@pytest.mark.parametrize("target", [16000, 20000, 8000, 11025])
def test_load_resample(fsdd_recordings, target):
    p = fsdd_recordings / "2_jackson_33.wav"
    full, sr = load_audio(p)
    y, ysr = load_audio(p, target_rate=target)
    assert ysr == target and y.dtype == np.float32
    n = len(full)
    assert len(y) == int(n * target / sr + 0.5)  # soxr rounds half up
    if target == sr:
        np.testing.assert_array_equal(y, full)
    else:
        np.testing.assert_allclose(y, soxr.resample(full, sr, target, quality="HQ"), rtol=0, atol=1e-3)
        # still on the int16 scale
        assert 0.5 < np.abs(y).max() / np.abs(full).max() < 1.5


def test_load_slice_then_resample(fsdd_recordings):
    p = fsdd_recordings / "2_jackson_33.wav"
    y, sr = load_audio(p, start=0.1, end=0.2, target_rate=16000)
    assert sr == 16000 and len(y) == 1600


def test_load_44k(tmp_path, write_audio):
    t = np.arange(44100) / 44100
    p = write_audio(tmp_path / "a.wav", (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), 44100)
    y, sr = load_audio(p, target_rate=16000)
    assert sr == 16000 and len(y) == 16000


def test_load_errors(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(p)
    with pytest.raises(AudioError, match="file not found"):
        load_audio(tmp_path / "nope.wav")
    q = tmp_path / "t.wav"
    q.write_text("not audio")
    with pytest.raises(AudioError, match="not audio"):
        load_audio(q)

"""Issue 29: your own digits through a trained model (``pvae_model.load``, ``pvae-model generate``)
and a bundle that is the whole model (``pvae-model export``: safetensors, never unpickled)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from PIL import Image

from conftest import DATA_ROOT
from pvae_model.cli import main

FSDD = DATA_ROOT / "fsdd" / "recordings"


@pytest.fixture(scope="module")
def run(small_shards, tmp_path_factory):
    """A tiny PVAE trained one epoch on real FSDD + MNIST shards."""
    from pvae_model.config import TrainConfig
    from pvae_model.train import train

    out = tmp_path_factory.mktemp("gen") / "run"
    cfg = TrainConfig.from_dict({
        "audio_shards": str(small_shards[0]), "image_shards": str(small_shards[1]), "epochs": 1, "batch_size": 32,
        "eval_every": 0, "num_threads": 1, "cmvn": "utterance",
        "pvae": {"hidden": 24, "z_shared": 4, "z_audio": 4, "z_image": 4, "image_channels": [4, 8]}})
    train(cfg, out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A spoken digit (real FSDD file), an MNIST-style PNG, and a dark-on-light colour picture."""
    from pvae_data.mnist import load_mnist

    d = tmp_path_factory.mktemp("inputs")
    test = load_mnist(DATA_ROOT / "mnist", "test")
    digit = test.images[int(np.flatnonzero(test.labels == 3)[0])]
    Image.fromarray(digit).save(d / "three.png")
    Image.fromarray(255 - digit).convert("RGB").resize((90, 60)).save(d / "dark_on_light.png")
    return {"wav": FSDD / "7_theo_3.wav", "png": d / "three.png", "inv": d / "dark_on_light.png", "dir": d}


def test_load_a_run_and_use_it_on_arrays_and_files(run, inputs):
    import pvae_model

    m = pvae_model.load(run)
    wave, rate = sf.read(inputs["wav"])
    img = m.speech_to_image(wave, rate)
    assert img.shape == (28, 28) and 0 <= img.min() and img.max() <= 1
    assert np.array_equal(img, m.speech_to_image(inputs["wav"]))  # a path, or the samples: the same
    # int16 samples are read on their own scale
    assert np.allclose(img, m.speech_to_image((wave * 32768).astype(np.int16), rate), atol=1e-4)
    out, sr = m.image_to_speech(inputs["png"])
    assert sr == 16000 and out.dtype == np.float32 and len(out) > 1000 and np.abs(out).max() <= 1
    # styles: a seeded draw differs from the prior mean and repeats itself; a reference sets it
    many = m.speech_to_image(inputs["wav"], style=("seed", 1), num=3)
    assert many.shape == (3, 28, 28) and np.array_equal(many, m.speech_to_image(inputs["wav"], style=("seed", 1), num=3))
    assert not np.array_equal(many[0], many[1])
    ref = m.image_to_speech(inputs["png"], style=inputs["wav"])[0]
    assert len(ref) != len(out)  # the reference recording's length
    with pytest.raises(ValueError, match="num > 1 needs a seeded style"):
        m.speech_to_image(inputs["wav"], num=2)
    # speech is spoken in the typical training voice unless told; the prior's mean on request
    assert m.voices and m.default_voice in m.voices and set(m.voices) == set(m.info["speakers"]["train"])
    voiced = m.image_to_speech(inputs["png"], style=("voice", m.default_voice))[0]
    prior = m.image_to_speech(inputs["png"], style="prior")[0]
    assert np.array_equal(out, voiced) and not np.array_equal(out, prior)
    other = next(v for v in m.voices if v != m.default_voice)
    assert not np.array_equal(m.image_to_speech(inputs["png"], style=("voice", other))[0], voiced)
    with pytest.raises(ValueError, match="voice 'nobody': not a training speaker of this model"):
        m.image_to_speech(inputs["png"], style=("voice", "nobody"))
    # a voice is a style of speech: a written digit asked for with one takes the prior's mean
    assert np.array_equal(m.speech_to_image(inputs["wav"], style=("voice", None)), img)


def test_front_end_is_the_pipelines(run, inputs):
    """The features of a file equal what prepare -> trim -> fbank -> the run's CMVN give."""
    from pvae_data.audio import load_audio
    from pvae_data.fbank import FbankConfig, compute_fbank
    from pvae_data.vad import VadConfig, trim_bounds
    from pvae_model.generate import load
    from pvae_model.normalize import normalize_utterance

    m = load(run)
    wave, sr = load_audio(inputs["wav"])
    a, b = trim_bounds(wave, sr, VadConfig())
    span, _ = load_audio(inputs["wav"], start=round(a / sr, 6), end=round(b / sr, 6), target_rate=16000)
    fcfg = FbankConfig.from_dict(m.frontend.fbank)
    expect = normalize_utterance(compute_fbank(span, fcfg))
    got = m.speech_features(inputs["wav"]).numpy()
    assert got.shape[1] == expect.shape[1] and abs(len(got) - len(expect)) <= 1
    n = min(len(got), len(expect))
    assert np.abs(got[2:n - 2] - expect[2:n - 2]).mean() < 0.05


def test_pictures_are_read_as_mnist_and_what_was_done_is_said(inputs):
    from pvae_model.frontend import InputError, read_image

    x, notes = read_image(inputs["png"])
    assert x.shape == (1, 28, 28) and notes == []
    y, notes = read_image(inputs["inv"])
    assert y.shape == (1, 28, 28) and "inverted (dark digit on a light background)" in notes
    assert any(n.startswith("resized from 90x60") for n in notes) and "colour converted to grey" in notes
    assert float(y[0, :2].mean()) < 0.1 and float(y.max()) > 0.5  # white on black, like MNIST
    blank = inputs["dir"] / "blank.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(blank)
    with pytest.raises(InputError, match="blank.png: blank picture"):
        read_image(blank)
    (inputs["dir"] / "text.png").write_text("not a picture")
    with pytest.raises(InputError, match="text.png: not a readable picture"):
        read_image(inputs["dir"] / "text.png")


def test_generate_command_accounts_for_every_input(run, inputs, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.int16), 8000, subtype="PCM_16")
    lst = tmp_path / "inputs.txt"
    lst.write_text(f"# one per line\n{inputs['wav']}\n{inputs['inv']}\n")
    r = CliRunner().invoke(main, ["generate", str(run), "--list", str(lst), "--speech", str(silent),
                                  "--image", str(inputs["png"]), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert "generate: 3 written, 1 rejected of 4" in r.output
    rows = [json.loads(ln) for ln in (tmp_path / "o" / "generate.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and sum("rejected" in x for x in rows) == 1
    bad = next(x for x in rows if "rejected" in x)
    assert bad["input"] == str(silent) and "no speech found" in bad["rejected"]
    for x in rows:
        for o in x.get("outputs", []):
            if o.endswith(".png"):
                assert Image.open(o).size == (28, 28)
            else:
                assert sf.info(o).frames > 1000
    assert Image.open(tmp_path / "o" / "7_theo_3.to_image.png").size == (28, 28)
    assert sf.info(tmp_path / "o" / "three.to_speech.wav").samplerate == 16000
    assert next(x for x in rows if x["input"] == str(inputs["inv"]))["notes"]
    from pvae_model.generate import load

    voice = load(run).default_voice  # each row names its style: speech in the typical voice
    assert {x["direction"]: x["style"] for x in rows} == {"speech_to_image": "prior", "image_to_speech": f"voice:{voice}"}
    r = CliRunner().invoke(main, ["generate", str(run), "--image", str(inputs["png"]), "--out", str(tmp_path / "v"),
                                  "--style", "voice:nobody"])
    assert r.exit_code == 1 and "voice 'nobody': not a training speaker" in r.output
    r = CliRunner().invoke(main, ["generate", str(run), "--speech", str(inputs["wav"]), "--out", str(tmp_path / "p"),
                                  "--style", "nonsense"])
    assert r.exit_code == 1 and "--style nonsense" in r.output
    r = CliRunner().invoke(main, ["generate", str(run), "--out", str(tmp_path / "q")])
    assert r.exit_code == 1 and "nothing to generate" in r.output


def test_a_bundle_is_the_whole_model_and_never_unpickled(run, inputs, tmp_path, forbid_unpickling):
    from pvae_model.checkpoints import RunIOError
    from pvae_model.generate import load

    r = CliRunner().invoke(main, ["export", str(run), str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    b = tmp_path / "b"
    assert sorted(p.name for p in b.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((b / "config.json").read_text())
    assert cfg["format"] == "pvae-bundle" and cfg["kind"] == "pvae" and cfg["speech"]["cmvn_mode"] == "utterance"
    assert cfg["speech"]["fbank"]["num_mel_bins"] == 80 and cfg["vocoder"]["kind"] == "griffin-lim"
    assert "## Departures from the paper" in (b / "README.md").read_text()
    expect = load(run).speech_to_image(inputs["wav"])

    with forbid_unpickling():
        loaded = load(b)
        assert np.array_equal(loaded.speech_to_image(inputs["wav"]), expect)
    run_model = load(run)  # the voices travel in config.json, exactly
    assert cfg["voices"]["default"] == run_model.default_voice == loaded.default_voice
    assert f"spoken in {loaded.default_voice}'s voice" in (b / "README.md").read_text()
    assert all(torch.equal(loaded.voices[k], run_model.voices[k]) for k in run_model.voices)
    assert np.array_equal(loaded.image_to_speech(inputs["png"])[0], run_model.image_to_speech(inputs["png"])[0])
    # weights replaced by a pickle whose loading would run a command: refused, nothing runs
    flag = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((b / "config.json").read_text())
    torch.save({"x": Payload()}, bad / "model.safetensors")
    with pytest.raises(RunIOError, match="not a safetensors file"):
        load(bad)
    assert not flag.exists()
    r = CliRunner().invoke(main, ["generate", str(bad), "--image", str(inputs["png"]), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "not a safetensors file" in r.output and not flag.exists()
    # a bundle from a newer format, and an export onto an existing directory
    newer = json.loads((b / "config.json").read_text())
    newer["format_version"] = 99
    (bad / "config.json").write_text(json.dumps(newer))
    with pytest.raises(RunIOError, match="written by a newer pvae"):
        load(bad)
    r = CliRunner().invoke(main, ["export", str(run), str(b)])
    assert r.exit_code == 1 and "already exists" in r.output


def test_a_run_without_a_checkpoint_or_of_another_kind_is_one_line(tmp_path, run):
    import shutil

    empty = tmp_path / "empty"
    shutil.copytree(run, empty, ignore=shutil.ignore_patterns("checkpoints"))
    r = CliRunner().invoke(main, ["generate", str(empty), "--speech", str(FSDD / "1_george_1.wav"), "--out",
                                  str(tmp_path / "o")])
    assert r.exit_code == 1 and "Traceback" not in r.output and "checkpoint" in r.output, r.output
    r = CliRunner().invoke(main, ["export", str(tmp_path), str(tmp_path / "b")])
    assert r.exit_code == 1 and "not a run directory" in r.output, r.output


def test_the_readme_snippet_runs(run, inputs, tmp_path, monkeypatch):
    """The README's "Your own digits" Python snippet, executed with this test's run and files."""
    import re
    import shutil

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "pvae_model.load(" in b)
    shutil.copy(inputs["wav"], tmp_path / "my_digit.wav")
    shutil.copy(inputs["png"], tmp_path / "my_digit.png")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.replace("exp/demo/pvae_polished", str(run)), "README.md", "exec"), scope)  # noqa: S102
    assert scope["image"].shape == (28, 28) and scope["speech_rate"] == 16000 and len(scope["speech"]) > 1000


def test_serve_page_draw_and_upload_in_headless_chromium(run, inputs, tmp_path):
    """Issue 29: `pvae-model serve`'s page in a real browser: a digit drawn on the canvas with pointer
    events comes back spoken (a WAV), a spoken digit uploaded through the file input comes back
    written (a PNG), through the same handlers a person uses."""
    import shutil
    import subprocess
    import threading
    import urllib.request

    from pvae_model.generate import load
    from pvae_model.serve import serve

    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian chromium not installed (`make test` installs it where apt-get is available)")
    server = serve(load(run), "127.0.0.1", 0, selftest_wav=FSDD / "4_jackson_2.wav")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        # bad input is a 400 with a reason, not a crash
        req = urllib.request.Request(url + "api/speech_to_image", data=b"not audio", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 400 and "not a sound file" in json.loads(e.value.read())["error"]
        req = urllib.request.Request(url + "api/image_to_speech", data=b"not a picture", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 400 and "the picture: not a readable picture" in json.loads(e.value.read())["error"]
        # a style names no file on the server: only prior, seed:N and the voices
        png = (inputs["png"]).read_bytes()
        req = urllib.request.Request(url + "api/image_to_speech?style=voice.wav", data=png, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=30)
        assert e.value.code == 400 and "style must be prior, seed:N, voice" in json.loads(e.value.read())["error"]
        r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=20000",
                            "--dump-dom", url + "?selftest=1"], capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 0, r.stderr[-2000:]
    import re

    spoken = re.search(r'data-spoken="([^"]*)"', r.stdout)
    written = re.search(r'data-written="([^"]*)"', r.stdout)
    assert spoken and spoken.group(1).startswith("ok:") and int(spoken.group(1)[3:]) > 1000, r.stdout[-1500:]
    assert written and written.group(1).startswith("ok:") and int(written.group(1)[3:]) > 60, r.stdout[-1500:]
    voice = load(run).default_voice  # the style control offers the voices training heard
    assert f'value="voice:{voice}"' in r.stdout and "speaks in" in r.stdout


@pytest.fixture(scope="module")
def speaker_run(small_shards, tmp_path_factory):
    """A tiny PVAE trained one epoch with per-speaker CMVN, half its inputs per utterance."""
    from pvae_model.config import TrainConfig
    from pvae_model.train import train

    out = tmp_path_factory.mktemp("gen_spk") / "run"
    cfg = TrainConfig.from_dict({
        "audio_shards": str(small_shards[0]), "image_shards": str(small_shards[1]), "epochs": 1, "batch_size": 32,
        "eval_every": 0, "num_threads": 1, "cmvn": "speaker", "cmvn_utterance_prob": 0.5,
        "pvae": {"hidden": 24, "z_shared": 4, "z_audio": 4, "z_image": 4, "image_channels": [4, 8],
                 "departures": {"audio_input_norm": "none"}}})
    train(cfg, out, show_progress=False)
    return out


def test_a_voice_enrolled_from_its_recordings_is_read_with_its_statistics(speaker_run, run, inputs, tmp_path):
    """Kaldi's apply-cmvn --utt2spk for a person's own recordings: `enrol` and `generate --same-voice`."""
    from pvae_model.generate import load

    takes = [FSDD / f"{d}_jackson_{t}.wav" for d in range(10) for t in (0, 1)]
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.int16), 8000, subtype="PCM_16")
    m = load(speaker_run)
    voice, left_out = m.enrol(takes + [silent])
    assert voice["takes"] == 20 and len(left_out) == 1 and "silent.wav: no speech found" in left_out[0]
    raw = np.concatenate([m.frontend._read_raw(p) for p in takes]).astype(np.float64)  # the oracle: numpy
    assert voice["frames"] == len(raw)
    assert np.allclose(voice["mean"], raw.mean(0), atol=1e-6) and np.allclose(voice["std"], raw.std(0), rtol=1e-5)
    x = m.speech_features(takes[3], voice=voice).numpy()
    assert np.allclose(x, (m.frontend._read_raw(takes[3]) - raw.mean(0)) / raw.std(0), atol=1e-4)
    alone = m.speech_features(takes[3]).numpy()  # without the voice: per utterance, as training's other half
    assert np.allclose(alone.mean(0), 0, atol=1e-4) and not np.allclose(x, alone, atol=1e-2)
    zs = [m.model.encode_audio(torch.as_tensor(f)[None], torch.tensor([len(f)]))["s"][0][0] for f in (x, alone)]
    assert not torch.allclose(zs[0], zs[1], atol=1e-4)  # the model reads the two differently
    with pytest.raises(ValueError, match="voice statistics must hold 80 means"):
        m.speech_features(takes[3], voice={"mean": [0.0] * 40, "std": [1.0] * 40})
    # files from elsewhere: corrupt, empty, another rate, not a recording at all
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" * 10)
    (tmp_path / "empty.wav").write_bytes(b"")
    w, r0 = sf.read(takes[0])
    import soxr

    sf.write(tmp_path / "fast.wav", soxr.resample(w, r0, 44100), 44100)
    v2, left = m.enrol([tmp_path / "corrupt.wav", tmp_path / "empty.wav", tmp_path / "fast.wav", 7, *takes])
    assert v2["takes"] == 21 and len(left) == 3 and "Traceback" not in "".join(left)
    assert "corrupt.wav" in left[0] and "empty.wav" in left[1] and "recording 3: give a path" in left[2]
    assert m.enrol(takes[:1])[0] is None  # one word: under MIN_SPEAKER_FRAMES, the stated fallback
    from pvae_model.bundle import export_bundle

    b = export_bundle(speaker_run, tmp_path / "bundle")  # a bundle enrols the same way, and its card says how
    assert "m.enrol(" in (b / "README.md").read_text()
    mb = load(b)
    assert mb.enrol(takes)[0] == voice and torch.equal(mb.speech_features(takes[3], voice=voice), torch.as_tensor(x))
    # the command: every row says how it was read; kept + rejected = total
    r = CliRunner().invoke(main, ["generate", str(speaker_run), "--same-voice", "--out", str(tmp_path / "o"),
                                  *[a for p in takes + [silent] for a in ("--speech", str(p))]])
    assert r.exit_code == 1 and "generate: 20 written, 1 rejected of 21" in r.output, r.output
    rows = [json.loads(ln) for ln in (tmp_path / "o" / "generate.jsonl").read_text().splitlines()]
    assert {x.get("cmvn") for x in rows if "outputs" in x} == {f"voice: 20 recordings, {len(raw)} frames"}
    png = np.asarray(Image.open(tmp_path / "o" / "3_jackson_1.to_image.png"))
    assert np.array_equal(png, (m.speech_to_image(takes[7], voice=voice) * 255).round().astype(np.uint8))
    r = CliRunner().invoke(main, ["generate", str(speaker_run), "--same-voice", "--out", str(tmp_path / "one"),
                                  "--speech", str(takes[0])])
    assert r.exit_code == 0 and "too few for the voice's statistics" in (tmp_path / "one" / "generate.jsonl").read_text()
    # a run trained per utterance reads each recording alone: refused whole, nothing written
    r = CliRunner().invoke(main, ["generate", str(run), "--same-voice", "--out", str(tmp_path / "u"),
                                  "--speech", str(takes[0]), "--speech", str(takes[1])])
    assert r.exit_code == 1 and "Traceback" not in r.output and not (tmp_path / "u").exists()
    assert "enrolling a voice needs a run trained with cmvn: speaker (this one: utterance" in r.output

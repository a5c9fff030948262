"""Latent translation (Tian & Engel 2019): SWD, domain conditioning, round trip, exact resume, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from pvae_model.models.bridge import Bridge, BridgeConfig, sliced_wasserstein



def test_swd_in_one_dimension_is_the_brute_force_wasserstein():
    """In 1-D every projection is +-1, so SWD must equal W2^2 found by an exhaustive optimal
    assignment (scipy's Hungarian algorithm on squared distances), not only by sorting."""
    from scipy.optimize import linear_sum_assignment

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, generator=g), 2 + 0.5 * torch.randn(40, 1, generator=g)
    cost = (x - y.T).pow(2).numpy()
    r, c = linear_sum_assignment(cost)
    brute = cost[r, c].mean()
    assert float(sliced_wasserstein(x, y, projections=16, generator=g)) == pytest.approx(brute, rel=1e-5)


def test_swd_is_zero_for_equal_samples_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    assert float(sliced_wasserstein(x, x[torch.randperm(256, generator=g)], 32, g)) < 1e-10
    near = float(sliced_wasserstein(x, x + 0.1, 64, g))
    far = float(sliced_wasserstein(x, x + 1.0, 64, g))
    assert 0 < near < far
    with pytest.raises(ValueError):
        sliced_wasserstein(x, x[:10], 4)


def test_domain_conditioning_changes_the_output():
    torch.manual_seed(0)
    b = Bridge(BridgeConfig(hidden=32, layers=2), (6, 4))
    z = torch.randn(5, 6)
    assert not torch.allclose(b.encode(z, 0)[0], b.encode(z, 1)[0])
    zb = torch.randn(5, 8)
    assert b.decode(zb, 0).shape == (5, 6) and b.decode(zb, 1).shape == (5, 4)
    assert not torch.allclose(b.decode(zb, 0)[:, :4], b.decode(zb, 1))


def test_round_trip_reconstructs_after_a_short_fit():
    """z1 -> z' -> z1 on clustered 16-D latents: relative error below 0.25 after 600 steps."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    centres = 2 * torch.randn(10, 16, generator=g)
    y1, y2 = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    z1 = centres[y1] + 0.3 * torch.randn(2000, 16, generator=g)
    z2 = 2 * torch.randn(10, 12, generator=g)[y2] + 0.3 * torch.randn(2000, 12, generator=g)
    model = Bridge(BridgeConfig(hidden=128, layers=2, beta_cls=1.0), (16, 12))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(600):
        a, b = torch.randint(0, 2000, (128,), generator=g), torch.randint(0, 2000, (128,), generator=g)
        out = model({"z_speech": z1[a], "y_speech": y1[a], "z_image": z2[b], "y_image": y2[b]}, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        rt = model.transfer(z1, 0, 0)
    assert float(((z1 - rt).norm(dim=1) / z1.norm(dim=1)).mean()) < 0.25
    # the classifier term starts to align the classes: a speech latent translated to the image
    # domain lands nearest to its class's image centre far more often than chance (10 %)
    with torch.no_grad():
        t = model.transfer(z1[:500], 0, 1)
        means = torch.stack([z2[y2 == d].mean(0) for d in range(10)])
    assert float((torch.cdist(t, means).argmin(1) == y1[:500]).float().mean()) > 0.25


@pytest.fixture(scope="module")
def base_runs(small_shards, tmp_path_factory):
    """Tiny trained VAE-sp and VAE-im runs on 150 real FSDD digits and real MNIST."""
    from pvae_model.config import TrainConfig
    from pvae_model.train import train

    audio, images = small_shards
    tmp = tmp_path_factory.mktemp("bridge")
    runs = {}
    for name in ("vae-sp", "vae-im"):
        cfg = TrainConfig.from_dict({"audio_shards": str(audio), "image_shards": str(images),
                                     "model": name, "epochs": 1, "batch_size": 32, "eval_every": 0, "num_threads": 1,
                                     "pvae": {"hidden": 24, "z_shared": 4, "z_audio": 4, "z_image": 4,
                                              "image_channels": [4, 8], "departures": {"image_nll_std": 0.31}}})
        train(cfg, tmp / name, show_progress=False)
        runs[name] = tmp / name
    return runs


def _cfg(base_runs, **kw):
    from pvae_model.bridge import BridgeTrainConfig

    d = {"speech_run": str(base_runs["vae-sp"]), "image_run": str(base_runs["vae-im"]), "epochs": 3,
         "steps_per_epoch": 10, "batch_size": 32, "num_threads": 1,
         "bridge": {"hidden": 32, "layers": 2}}
    d.update(kw)
    return BridgeTrainConfig.from_dict(d)


def test_sampled_inputs_are_drawn_from_the_base_posteriors_reproducibly():
    """inputs: sample draws z_d ~ N(mean, exp(logvar)) per step, the same draws for the same
    (seed, epoch); inputs: mean hands the means over unchanged.  Both named as they are."""
    from pvae_model.bridge import BridgeTrainConfig, _epoch_batches

    g = torch.Generator().manual_seed(0)
    lat = {"z_speech": torch.randn(50, 6, generator=g), "lv_speech": torch.full((50, 6), -2.0),
           "y_speech": torch.randint(0, 10, (50,), generator=g),
           "z_image": torch.randn(400, 4, generator=g), "lv_image": torch.full((400, 4), -2.0),
           "y_image": torch.randint(0, 10, (400,), generator=g)}
    base = {"epochs": 1, "steps_per_epoch": 40, "batch_size": 64}
    mean = list(_epoch_batches(lat, BridgeTrainConfig.from_dict(base), 0))
    samp = list(_epoch_batches(lat, BridgeTrainConfig.from_dict({**base, "inputs": "sample"}), 0))
    again = list(_epoch_batches(lat, BridgeTrainConfig.from_dict({**base, "inputs": "sample"}), 0))
    assert all(torch.equal(a["z_speech"], b["z_speech"]) for a, b in zip(samp, again))
    noise = torch.cat([s["z_speech"] - m["z_speech"] for s, m in zip(samp, mean)])
    # the same items are drawn (the index stream is shared); the noise has the posterior's std e^-1
    assert not torch.equal(samp[0]["z_speech"], mean[0]["z_speech"])
    assert float(noise.std()) == pytest.approx(float(torch.exp(torch.tensor(-1.0))), rel=0.1)
    assert BridgeTrainConfig.from_dict({**base, "inputs": "sample"}).deviations() == {"inputs": "sample"}
    assert BridgeTrainConfig.from_dict({**base, "bridge": {"beta_cls": 1.0}}).deviations() == {"bridge.beta_cls": 1.0}
    with pytest.raises(ValueError):
        BridgeTrainConfig.from_dict({**base, "inputs": "median"})


def test_bridge_resumes_exactly(tmp_path, base_runs):
    from pvae_model.bridge import fit

    fit(_cfg(base_runs, epochs=4), tmp_path / "straight", show_progress=False)
    fit(_cfg(base_runs, epochs=2), tmp_path / "resumed", show_progress=False)
    with pytest.raises(FileExistsError):
        fit(_cfg(base_runs, epochs=4), tmp_path / "resumed", show_progress=False)
    fit(_cfg(base_runs, epochs=4), tmp_path / "resumed", resume=True, show_progress=False)
    drop = lambda d: {k: v for k, v in d.items() if k not in ("minutes", "items_per_s")}  # noqa: E731
    lines = lambda r: [drop(json.loads(ln)) for ln in (r / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert lines(tmp_path / "straight") == lines(tmp_path / "resumed") and len(lines(tmp_path / "resumed")) == 4
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bridge_trains_through_the_run_engine(tmp_path, base_runs):
    """Issue 28: the bridge is a task of the one run engine: interrupted inside an epoch it
    checkpoints its position and resumes exactly; its config says its kind; a NaN loss is the
    engine's NonFiniteLoss; a bridge directory from before the engine (bridge.yaml) still resumes
    and evaluates."""
    import shutil

    import yaml

    from pvae_model.bridge import fit
    from pvae_model.engine import NonFiniteLoss
    from pvae_model.models import bridge as bridge_mod
    from pvae_model.run import run_kind

    fit(_cfg(base_runs, epochs=3), tmp_path / "straight", show_progress=False)
    fit(_cfg(base_runs, epochs=3), tmp_path / "cut", show_progress=False, stop_after_batches=14)
    ck = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["epoch"], ck["batch"]) == (1, 4) and ck["z_dims"]
    fit(_cfg(base_runs, epochs=3), tmp_path / "cut", resume=True, show_progress=False)
    drop = lambda d: {k: v for k, v in d.items() if k not in ("minutes", "items_per_s")}  # noqa: E731
    lines = lambda r: [drop(json.loads(ln)) for ln in (r / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert lines(tmp_path / "cut") == lines(tmp_path / "straight")
    assert yaml.safe_load((tmp_path / "cut" / "config.yaml").read_text())["model"] == "bridge"
    assert run_kind(tmp_path / "cut") == "bridge" and run_kind(base_runs["vae-sp"]) == "vae-sp"
    assert "bridge epoch 3" in (tmp_path / "cut" / "train.log").read_text()
    # a bridge from before the engine: bridge.yaml, no config.yaml
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "straight", old)
    (old / "config.yaml").rename(old / "bridge.yaml")
    assert run_kind(old) == "bridge"
    fit(_cfg(base_runs, epochs=4), old, resume=True, show_progress=False)
    assert not (old / "config.yaml").exists() and len((old / "metrics.jsonl").read_text().splitlines()) == 4
    real = bridge_mod.Bridge.forward

    def poisoned(self, batch, generator=None):
        out = real(self, batch, generator)
        out.metrics["loss"] = float("nan")
        return out

    bridge_mod.Bridge.forward = poisoned
    try:
        with pytest.raises(NonFiniteLoss, match="last good checkpoint"):
            fit(_cfg(base_runs, epochs=5), old, resume=True, show_progress=False)
    finally:
        bridge_mod.Bridge.forward = real


def test_damaged_latent_cache_is_computed_again_and_a_damaged_checkpoint_is_named(tmp_path, base_runs):
    from pvae_model.bridge import fit
    from pvae_model.checkpoints import RunIOError, load_checkpoint

    fit(_cfg(base_runs, epochs=1), tmp_path / "a", show_progress=False)
    cache = tmp_path / "a" / "latents.pt"
    good = load_checkpoint(cache)["latents"]
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated, as by a full disk or a kill
    fit(_cfg(base_runs, epochs=2), tmp_path / "a", resume=True, show_progress=False)
    again = load_checkpoint(cache)["latents"]
    assert all(torch.equal(good[s][k], again[s][k]) for s in good for k in good[s])
    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(RunIOError, match="last.pt: unreadable checkpoint"):
        fit(_cfg(base_runs, epochs=3), tmp_path / "a", resume=True, show_progress=False)


def test_bridge_cli_evaluate_and_report(tmp_path, base_runs):
    from click.testing import CliRunner

    from pvae_model.cli import main

    out = tmp_path / "br"
    r = CliRunner().invoke(main, ["bridge", "--speech-run", str(base_runs["vae-sp"]), "--image-run",
                                  str(base_runs["vae-im"]), "--out", str(out), "--epochs", "2", "-q",
                                  "--set", "steps_per_epoch=5", "--set", "bridge.hidden=32", "--set", "num_threads=1"])
    assert r.exit_code == 0, r.output
    assert "bridge: epoch 2" in r.output and (out / "latents.pt").exists()
    r = CliRunner().invoke(main, ["evaluate", str(out), "--seeds", "3"])
    assert r.exit_code == 1 and "--seeds does not apply to a bridge" in r.output, r.output
    r = CliRunner().invoke(main, ["purity", str(out)])
    assert r.exit_code == 1 and "is a bridge run" in r.output, r.output
    r = CliRunner().invoke(main, ["evaluate", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "eval" / "metrics.json").read_text())
    c = m["coherence"]
    assert 0 <= c["speech_to_image_prior"] <= 1 and 0 <= c["image_to_speech_prior"] <= 1
    assert m["cost_minutes"]["bridge"] > 0 and m["round_trip_relative_error"] >= 0
    assert set(m["base_own_reconstruction"]) == {"speech", "image"}
    assert all(0 <= v <= 1 for v in m["base_own_reconstruction"].values())
    assert 0 <= m["diversity"]["near_copy_fraction"] <= 1
    # the paper's loss weights and inputs; the base VAE-im's image likelihood is named
    assert m["deviations"] == {"vae_im.image_nll_std": 0.31}
    assert (out / "eval" / "bridge_interpolation.png").stat().st_size > 1000
    assert len(list((out / "eval").glob("bridge_written_to_spoken_digit*_ref0.wav"))) >= 5
    r = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "rep.html")])
    assert r.exit_code == 0, r.output
    assert "| br (bridge, epoch 2)" in r.output
    assert "deviations from Tian & Engel's documented runs: vae_im.image_nll_std = 0.31" in r.output
    # a bad base run is a one-line error
    r = CliRunner().invoke(main, ["bridge", "--speech-run", str(base_runs["vae-im"]), "--image-run",
                                  str(base_runs["vae-im"]), "--out", str(tmp_path / "bad"), "-q"])
    assert r.exit_code == 1 and "needs a vae-sp and a vae-im run" in r.output


def test_a_crafted_latent_cache_or_bridge_checkpoint_runs_nothing(tmp_path, base_runs, capsys):
    """Issue 27: a ``latents.pt`` or ``last.pt`` whose pickle would run ``touch FLAG`` is refused
    (the cache is computed anew with a warning; the checkpoint is a one-line error); FLAG never appears."""
    import os

    from click.testing import CliRunner

    from pvae_model.bridge import fit
    from pvae_model.checkpoints import RunIOError, load_checkpoint
    from pvae_model.cli import main

    flag = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    fit(_cfg(base_runs, epochs=1), tmp_path / "a", show_progress=False)
    cache = tmp_path / "a" / "latents.pt"
    good = load_checkpoint(cache)
    torch.save({**good, "x": Payload()}, cache)
    fit(_cfg(base_runs, epochs=2), tmp_path / "a", resume=True, show_progress=False)
    assert "latents.pt: refused" in capsys.readouterr().err and not flag.exists()
    assert "x" not in load_checkpoint(cache)  # rewritten from the bases
    torch.save({**good, "x": Payload()}, cache)
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "a")])
    assert r.exit_code == 1 and "latents.pt: refused" in r.output and "Traceback" not in r.output, r.output
    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    torch.save({**load_checkpoint(ckpt), "x": Payload()}, ckpt)
    with pytest.raises(RunIOError, match="last.pt: refused"):
        fit(_cfg(base_runs, epochs=3), tmp_path / "a", resume=True, show_progress=False)
    assert not flag.exists()


def test_generate_from_a_bridge(tmp_path, base_runs, forbid_unpickling):
    """Issue 29: `pvae-model generate` and `pvae_model.load` take a bridge as they take a PVAE run
    (prior style only: a bridge has no style latent); its bundle holds the bridge and both bases
    and loads without them or their shards, and without unpickling."""
    from click.testing import CliRunner

    import pvae_model
    from conftest import DATA_ROOT
    from pvae_model.bridge import fit
    from pvae_model.cli import main

    fit(_cfg(base_runs, epochs=1), tmp_path / "br", show_progress=False)
    m = pvae_model.load(tmp_path / "br")
    wav = DATA_ROOT / "fsdd" / "recordings" / "2_lucas_3.wav"
    img = m.speech_to_image(wav)
    assert img.shape == (28, 28) and 0 <= img.min() <= img.max() <= 1
    wave, rate = m.image_to_speech(img)
    assert rate == 16000 and len(wave) > 1000
    with pytest.raises(ValueError, match="a bridge has no style latent"):
        m.speech_to_image(wav, style=("seed", 1))
    r = CliRunner().invoke(main, ["generate", str(tmp_path / "br"), "--speech", str(wav), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0 and "1 written, 0 rejected of 1" in r.output, r.output
    r = CliRunner().invoke(main, ["export", str(tmp_path / "br"), str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    b = tmp_path / "b"
    assert sorted(p.name for p in b.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    import numpy as np

    assert json.loads((b / "config.json").read_text())["kind"] == "bridge"
    assert "latent translation" in (b / "README.md").read_text()
    expect_img, (expect_wave, _) = m.speech_to_image(wav), m.image_to_speech(img)

    with forbid_unpickling():
        mb = pvae_model.load(b)
        assert np.array_equal(mb.speech_to_image(wav), expect_img)
        assert np.allclose(mb.image_to_speech(img)[0], expect_wave, atol=1e-5)
    with pytest.raises(ValueError, match="a bridge has no style latent"):
        mb.speech_to_image(wav, style=("seed", 1))

"""PVAE: the objective's terms, padding invariance, and the building blocks' maths."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pvae_model.models.base import cyclic_derangement
from pvae_model.models.pvae import PVAE, PVAEConfig
from pvae_model.modules import gaussian_nll_audio, gaussian_nll_image, kl_gauss, kl_std_normal, rbf

SMALL = PVAEConfig(hidden=32, z_shared=4, z_audio=3, z_image=5, feat_dim=6)


def make_batch(b=5, t=9, feat=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([t, 3, 7, 1, 5][:b])
    x = torch.randn(b, t, feat, generator=g)
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    return {"audio": x, "lengths": lengths, "image": torch.rand(b, 1, 28, 28, generator=g),
            "label": torch.arange(b)}


def loss_and_grads(model, batch, seed=1):
    torch.manual_seed(seed)
    model.zero_grad()
    out = model(batch, generator=torch.Generator().manual_seed(seed))
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("position", ["none", "relative"])
def test_padding_changes_neither_loss_nor_gradients(position):
    torch.manual_seed(0)
    model = PVAE(PVAEConfig.from_dict({**SMALL.to_dict(), "departures": {"audio_decoder_position": position}}))
    batch = make_batch()
    padded = dict(batch)
    extra = torch.randn(5, 13, 6) * 100  # garbage after every sequence's end
    padded["audio"] = torch.cat([batch["audio"], extra], dim=1)
    padded["audio"][1, 3:9] = 55.0  # and inside the batch's own padding
    a, ga = loss_and_grads(model, batch)
    b, gb = loss_and_grads(model, padded)
    assert a.metrics == b.metrics
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-6, rtol=1e-5), n


def test_forward_reports_every_term_and_they_add_up():
    torch.manual_seed(0)
    out = PVAE(SMALL)(make_batch())
    m = out.metrics
    for k in ("nll_audio", "nll_image", "kl_s", "kl_a", "kl_i", "coherence_audio", "coherence_image", "contrastive"):
        assert k in m and m[k] == m[k]
    total = m["neg_elbo"] + SMALL.alpha * (m["coherence_audio"] + m["coherence_image"]) + SMALL.beta * m["contrastive"]
    assert abs(total - m["loss"]) < 1e-3 * abs(m["loss"])
    assert abs(m["neg_elbo"] - (m["nll_audio"] + m["nll_image"] + m["kl_s"] + m["kl_a"] + m["kl_i"])) < 1e-2


def test_beta_zero_removes_the_contrastive_term():
    torch.manual_seed(0)
    b = make_batch()
    with_beta = PVAE(SMALL)
    no_beta = PVAE(PVAEConfig(**{**SMALL.to_dict(), "beta": 0.0}))
    no_beta.load_state_dict(with_beta.state_dict())
    torch.manual_seed(3)
    m1 = with_beta(b, generator=torch.Generator().manual_seed(3)).metrics
    torch.manual_seed(3)
    m0 = no_beta(b, generator=torch.Generator().manual_seed(3)).metrics
    assert abs((m1["loss"] - m0["loss"]) - 10 * m1["contrastive"]) < 1e-2


def test_kl_formulas_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(4, 7, generator=g) for _ in range(4))
    ref = kl_divergence(Normal(mq, (0.5 * lq).exp()), Normal(mp, (0.5 * lp).exp())).sum(-1)
    assert torch.allclose(kl_gauss(mq, lq, mp, lp), ref, atol=1e-5)
    ref0 = kl_divergence(Normal(mq, (0.5 * lq).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(kl_std_normal(mq, lq), ref0, atol=1e-5)


def test_audio_nll_counts_real_frames_only():
    x = torch.randn(2, 4, 3)
    mean = torch.zeros_like(x)
    lengths = torch.tensor([4, 2])
    nll = gaussian_nll_audio(x, mean, lengths)
    ref = -Normal(0.0, 1.0).log_prob(x[1, :2]).sum()
    assert torch.allclose(nll[1], ref, atol=1e-5)


@pytest.mark.parametrize("std", [1.0, 0.1])
def test_image_nll_matches_torch_normal(std):
    g = torch.Generator().manual_seed(0)
    x, mean = torch.rand(3, 1, 28, 28, generator=g), torch.rand(3, 1, 28, 28, generator=g)
    ref = -torch.distributions.Normal(mean, std).log_prob(x).flatten(1).sum(-1)
    assert torch.allclose(gaussian_nll_image(x, mean, std), ref, rtol=1e-5)


def test_contrastive_pieces():
    u = torch.zeros(3, 4)
    assert torch.allclose(rbf(u, u), torch.ones(3))
    for n in (2, 3, 10, 128):
        d = cyclic_derangement(n, torch.Generator().manual_seed(n))
        assert sorted(d.tolist()) == list(range(n)) and all(d[i] != i for i in range(n))


def test_config_validation():
    with pytest.raises(ValueError):
        PVAEConfig(beta=-1)
    with pytest.raises(ValueError, match="unknown"):
        PVAEConfig.from_dict({"nope": 1})
    assert PVAEConfig.from_dict(PVAEConfig().to_dict()) == PVAEConfig()


@pytest.mark.parametrize("name", ["vae-sp", "vae-im", "jmvae-kl"])
def test_baselines_forward_encode_and_padding(name):
    from pvae_model.models import MODALITIES, build_model

    torch.manual_seed(0)
    model = build_model(name, SMALL)
    batch = make_batch()
    padded = dict(batch, audio=torch.cat([batch["audio"], torch.randn(5, 4, 6) * 50], dim=1))
    a, ga = loss_and_grads(model, batch)
    b, gb = loss_and_grads(model, padded)
    assert a.metrics == b.metrics and all(torch.allclose(ga[n], gb[n], atol=1e-6) for n in ga)
    if "audio" in MODALITIES[name]:
        assert model.encode_audio(batch["audio"], batch["lengths"])["s"][0].shape == (5, 4 + 3 + (5 if name == "jmvae-kl" else 0))
    if "image" in MODALITIES[name]:
        assert model.encode_image(batch["image"])["s"][0].shape[1] == (12 if name == "jmvae-kl" else 9)


def test_jmvae_loss_is_elbo_plus_alpha_unimodal_kls():
    from pvae_model.models.baselines import JMVAE

    torch.manual_seed(0)
    m = JMVAE(SMALL)(make_batch()).metrics
    total = m["neg_elbo"] + SMALL.alpha * (m["kl_unimodal_audio"] + m["kl_unimodal_image"])
    assert abs(total - m["loss"]) < 1e-3 * abs(m["loss"])


# ---- objective "paper" stays the spec's, "plus" adds named terms -------------------------------

GOLDEN_CFG = dict(feat_dim=8, z_shared=4, z_audio=3, z_image=5, hidden=16, image_channels=(4, 8))


def _golden_batch():
    g = torch.Generator().manual_seed(0)
    return {"audio": torch.randn(4, 7, 8, generator=g), "lengths": torch.tensor([7, 5, 3, 6]),
            "image": torch.rand(4, 1, 28, 28, generator=g)}


def _golden_metrics(**kw):
    torch.manual_seed(0)
    model = PVAE(PVAEConfig(**GOLDEN_CFG, **kw))
    torch.manual_seed(1)
    return model(_golden_batch(), generator=torch.Generator().manual_seed(2)).metrics


def test_paper_objective_golden_value():
    """The spec's objective on a fixed tiny batch: this value was computed by the code before the
    `plus` objective existed, so any change to the paper's loss shows up here."""
    m = _golden_metrics()
    assert m["loss"] == pytest.approx(943.7545166015625, rel=1e-6)
    assert m["nll_image"] == pytest.approx(873.6879, abs=1e-3) and m["contrastive"] == pytest.approx(0.9966, abs=1e-4)
    assert "cross_nll_audio" not in m and PVAEConfig(**GOLDEN_CFG).deviations() == {}


def test_plus_adds_exactly_the_weighted_cross_terms():
    paper, plus = _golden_metrics(), _golden_metrics(objective="plus", departures=dict(cross_weight=2.0))
    for k in ("nll_audio", "nll_image", "kl_s", "kl_a", "kl_i", "contrastive"):
        assert plus[k] == pytest.approx(paper[k], rel=1e-6), k  # same draws for the paper's terms
    assert plus["cross_nll_audio"] > 0 and plus["cross_nll_image"] > 0
    assert plus["loss"] == pytest.approx(paper["loss"] + 2.0 * (plus["cross_nll_audio"] + plus["cross_nll_image"]),
                                         rel=1e-5)
    dev = PVAEConfig(**GOLDEN_CFG, objective="plus", departures=dict(cross_weight=2.0, image_nll_std=0.31)).deviations()
    assert dev == {"objective": "plus", "cross_weight": 2.0, "image_nll_std": 0.31}
    cfg = PVAEConfig(**GOLDEN_CFG, objective="plus", departures=dict(image_nll_std=0.31))  # a baseline built from it:
    assert cfg.deviations("jmvae-kl") == {"image_nll_std": 0.31} and cfg.deviations("vae-sp") == {}


def test_vae_kl_weight_scales_the_baseline_vaes_kl_only():
    """A beta-VAE base: the loss is nll + w * KL while neg_elbo stays the ELBO; a deviation of the
    unimodal VAEs only."""
    from pvae_model.models.baselines import UnimodalVAE

    def run(w):
        torch.manual_seed(0)
        model = UnimodalVAE(PVAEConfig(**GOLDEN_CFG, baseline=dict(kl_weight=w)), "image")
        torch.manual_seed(1)
        return model(_golden_batch()).metrics

    full, light = run(1.0), run(0.1)
    assert light["neg_elbo"] == pytest.approx(full["neg_elbo"], rel=1e-6) and light["kl"] > 0
    assert light["loss"] == pytest.approx(full["nll_image"] + 0.1 * full["kl"], rel=1e-5)
    cfg = PVAEConfig(**GOLDEN_CFG, baseline=dict(kl_weight=0.1))
    assert cfg.deviations("vae-sp") == {"vae_kl_weight": 0.1} and cfg.deviations() == {}
    assert cfg.deviations("jmvae-kl") == {}


def test_vae_label_weight_adds_a_digit_classifier_on_the_latent_sample():
    """A label-supervised base: loss = the ELBO's + w * cross-entropy of a linear classifier on z;
    the ELBO's terms are untouched, the encoder gets the classifier's gradient, the paper's
    baselines keep their checkpoint keys, and the departure is named."""
    from pvae_model.models.baselines import UnimodalVAE

    def run(w):
        torch.manual_seed(0)
        model = UnimodalVAE(PVAEConfig(**GOLDEN_CFG, baseline=dict(label_weight=w)), "audio")
        torch.manual_seed(1)
        out = model({**_golden_batch(), "label": torch.tensor([3, 1, 4, 1])})
        return model, out

    plain, plain_out = run(0.0)
    model, out = run(2.0)
    assert plain.label_head is None and not any(k.startswith("label_head") for k in plain.state_dict())
    for k in ("nll_audio", "kl", "neg_elbo"):
        assert out.metrics[k] == pytest.approx(plain_out.metrics[k], rel=1e-6), k
    assert out.metrics["label_ce"] > 0
    assert out.metrics["loss"] == pytest.approx(plain_out.metrics["loss"] + 2.0 * out.metrics["label_ce"], rel=1e-5)
    out.loss.backward()
    plain_out.loss.backward()
    assert model.label_head.weight.grad.abs().sum() > 0
    for (name, p), q in zip(model.head.named_parameters(), plain.head.parameters()):  # the classifier reaches the encoder
        assert not torch.allclose(p.grad, q.grad), name
    cfg = PVAEConfig(**GOLDEN_CFG, baseline=dict(label_weight=2.0))
    assert cfg.deviations("vae-sp") == {"vae_label_weight": 2.0} and cfg.deviations() == {}
    with pytest.raises(ValueError):
        PVAEConfig(baseline=dict(label_weight=-1.0))


def test_size_changes_name_the_sizes_that_differ_from_the_paper():
    assert PVAEConfig().size_changes() == {}
    assert PVAEConfig(departures={"audio_decoder_position": "relative"}).size_changes() == \
        {"audio_decoder_position": "relative"}
    assert PVAEConfig(hidden=256).size_changes() == {"hidden": 256}
    assert PVAEConfig(**GOLDEN_CFG).size_changes() == {"feat_dim": 8, "z_shared": 4, "z_audio": 3, "z_image": 5,
                                                       "hidden": 16}


def test_cross_terms_reach_the_unimodal_shared_latent_but_not_the_private_encoders():
    """The cross-modal terms train the unimodal z_s heads and the decoders; the unimodal style
    heads get no gradient from them (the style is drawn from the prior)."""
    torch.manual_seed(0)
    model = PVAE(PVAEConfig(**GOLDEN_CFG, objective="plus"))
    b = _golden_batch()
    x_a = b["audio"]
    qa, qi = model.encode_audio(x_a, b["lengths"]), model.encode_image(b["image"])
    cross_i, cross_a = model.cross_reconstruction(x_a, b["lengths"], b["image"], qa, qi)
    (cross_i.sum() + cross_a.sum()).backward()
    assert model.enc_a.heads["s"].mu.weight.grad.abs().sum() > 0
    assert model.enc_i.heads["s"].mu.weight.grad.abs().sum() > 0
    assert model.enc_a.heads["a"].mu.weight.grad is None and model.enc_i.heads["i"].mu.weight.grad is None
    assert model.mm.heads["s"].mu.weight.grad is None


def test_kernels():
    from pvae_model.modules import rbf_dist_half

    u, v = torch.zeros(2, 3), torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(rbf(u, v), torch.tensor([torch.exp(torch.tensor(-25.0)), 1.0]))
    assert torch.allclose(rbf_dist_half(u, v), torch.tensor([torch.exp(torch.tensor(-2.5)), 1.0]))
    # near-coinciding means: exp(-d^2) has ~no gradient, exp(-d/2) pushes them apart
    a = torch.tensor([[1e-3, 0.0]], requires_grad=True)
    rbf(a, torch.zeros(1, 2)).sum().backward()
    g_sq = a.grad.norm().item()
    a.grad = None
    rbf_dist_half(a, torch.zeros(1, 2)).sum().backward()
    assert g_sq < 1e-2 < a.grad.norm().item()
    m = _golden_metrics(kernel="dist_half")
    assert m["contrastive"] != pytest.approx(_golden_metrics()["contrastive"])


def test_objective_and_kernel_are_validated():
    with pytest.raises(ValueError, match="objective"):
        PVAEConfig(objective="best")
    with pytest.raises(ValueError, match="kernel"):
        PVAEConfig(kernel="laplace")
    with pytest.raises(ValueError):
        PVAEConfig(departures=dict(cross_weight=-1))


# ---- metrics that a collapsed latent cannot fool ---------------------------------------------

def test_rate_is_the_mean_kl_to_the_prior():
    import numpy as np

    from pvae_model.eval.metrics import rate

    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(50, 6, generator=g), torch.randn(50, 6, generator=g)
    assert rate(mu.numpy(), lv.numpy()) == pytest.approx(float(kl_std_normal(mu, lv).mean()), rel=1e-5)
    assert rate(np.zeros((3, 4)), np.zeros((3, 4))) == 0.0


def test_sample_probe_sees_through_a_collapsed_latent():
    """Means that separate the digits by 1e-3 with posterior std 1: k-means purity on the means is
    perfect, the probe on samples is at chance; a latent with real separation is probed well."""
    import numpy as np

    from pvae_model.eval.metrics import kmeans_purity, sample_probe_accuracy

    rng = np.random.default_rng(0)
    y_tr, y_te = rng.integers(0, 10, 2000), rng.integers(0, 10, 500)
    centres = rng.standard_normal((10, 8))

    def post(y, scale, logvar):
        return centres[y] * scale, np.full((len(y), 8), logvar)

    collapsed = sample_probe_accuracy(post(y_tr, 1e-3, 0.0), y_tr, post(y_te, 1e-3, 0.0), y_te)
    informative = sample_probe_accuracy(post(y_tr, 3.0, -4.0), y_tr, post(y_te, 3.0, -4.0), y_te)
    assert kmeans_purity(post(y_te, 1e-3, 0.0)[0], y_te) == 1.0
    assert collapsed < 0.2 and informative > 0.95


def test_tsne_figure_survives_a_collapsed_latent(tmp_path):
    """JMVAE-kl's image latent can collapse to one point: t-SNE's PCA init then divides by zero
    and sklearn crashed the whole evaluation (segfault). The panel says so instead."""
    import numpy as np

    from pvae_model.eval.evaluate import EvalConfig, _plot_tsne, _tsne

    rng = np.random.default_rng(0)
    means = {"s_audio": rng.standard_normal((40, 6)), "s_image": np.ones((60, 6)) * 0.3}
    _plot_tsne(means, rng.integers(0, 10, 40), rng.integers(0, 10, 60), EvalConfig(tsne_images=60), tmp_path)
    assert (tmp_path / "tsne.png").stat().st_size > 1000
    assert _tsne(means["s_image"], 0) is None and _tsne(means["s_audio"], 0).shape == (40, 2)


def test_private_label_adversary_is_a_named_plus_term():
    torch.manual_seed(0)
    cfg = PVAEConfig(**GOLDEN_CFG, objective="plus", departures=dict(private_label_adv_weight=2.0))
    model = PVAE(cfg)
    b = {**_golden_batch(), "label": torch.tensor([0, 3, 3, 9])}
    out = model(b, generator=torch.Generator().manual_seed(2))
    m = out.metrics
    assert m["digit_critic_ce_image"] == pytest.approx(math.log(10), abs=1.0)  # per read, an untrained critic
    assert cfg.deviations()["private_label_adv_weight"] == 2.0
    with pytest.raises(ValueError, match="plus"):
        PVAEConfig(departures=dict(private_label_adv_weight=1.0))


def test_private_label_capped_pushes_only_items_the_critic_still_reads():
    """The encoder raises the frozen critic's cross-entropy per item up to ln 10 and
    no further (the reversed push that diverged made the critic *wrong*); the critic still learns."""
    torch.manual_seed(0)
    cfg = PVAEConfig(**GOLDEN_CFG, objective="plus", departures=dict(private_label_adv_weight=1.0))
    model = PVAE(cfg)
    head = model.digit_critic_i
    labels = torch.tensor([0, 3, 0, 9])
    z = torch.randn(4, cfg.z_image)
    with torch.no_grad():  # a critic that reads items 0 and 2 right (label 0) and 1 and 3 worse than chance
        head.weight.copy_(torch.randn(10, cfg.z_image))
        head.bias.copy_(torch.tensor([30.0] + [0.0] * 9))
    z.requires_grad_(True)
    q_off = {"a": (torch.zeros(4, cfg.z_audio), torch.full((4, cfg.z_audio), -30.0)),
             "i": (torch.zeros(4, cfg.z_image), torch.full((4, cfg.z_image), -30.0))}
    adv = model.digit_adversary(labels, {"a": torch.zeros(4, cfg.z_audio), "i": z}, q_off, q_off)
    adv["image"].sum().backward()
    frozen = torch.nn.functional.linear(z.detach(), head.weight.detach(), head.bias.detach())
    ce = torch.nn.functional.cross_entropy(frozen, labels, reduction="none")
    assert (ce[[0, 2]] < math.log(10)).all() and (ce[[1, 3]] > math.log(10)).all()
    assert (z.grad[[1, 3]] == 0).all()  # already wrong: left alone
    z2 = z.detach().clone().requires_grad_(True)  # where the critic is informed: the reversed cross-entropy
    (-torch.nn.functional.cross_entropy(torch.nn.functional.linear(z2, head.weight.detach(), head.bias.detach()),
                                        labels, reduction="none")[[0, 2]]).sum().backward()
    assert torch.allclose(z.grad, z2.grad, atol=1e-6) and z.grad[[0, 2]].abs().sum() > 0
    assert head.weight.grad.abs().sum() > 0  # the critic is trained


def test_retired_experiments_load_at_their_neutral_value_and_are_refused_when_used():
    """Issue 28: the nine experiments that were not kept left PVAEConfig, and later four departures
    (cross_grad, kl_private_weight, private_adv_start, image_encoder) and the adversary's modes
    other than "capped"; an old run's config that names them at their neutral value still loads,
    one that used them is refused by name."""
    from pvae_model.models.pvae_config import Departures

    old = {**GOLDEN_CFG, **PVAEConfig.retired,
           "departures": {**Departures.retired, "private_label_adv_mode": "reverse"}}  # the old default, adversary off
    assert PVAEConfig.from_dict(old) == PVAEConfig(**GOLDEN_CFG)
    with pytest.raises(ValueError, match="pvae.image_views: an experiment that was not kept"):
        PVAEConfig.from_dict({**old, "image_views": 3})
    for name, used in (("cross_grad", "decoders"), ("kl_private_weight", 3.0), ("private_adv_start", 10),
                       ("image_encoder", "deep"), ("shared_label_weight", 30.0),
                       ("audio_encoder_pool", "mean"), ("audio_encoder_dropout", 0.3)):
        with pytest.raises(ValueError, match=f"^pvae.departures.{name}: an experiment that was not kept.*4cec2c8"):
            PVAEConfig.from_dict({"departures": {name: used}})
        with pytest.raises(ValueError, match=name):  # an old run's flat spelling too
            PVAEConfig.from_dict({name: used})
    with pytest.raises(ValueError, match="91eab0d that of shared_label_weight"):  # the digit head's own commit
        PVAEConfig.from_dict({"departures": {"shared_label_weight": 30.0}})
    with pytest.raises(ValueError, match="98faed1 that of audio_encoder_pool and audio_encoder_dropout"):
        PVAEConfig.from_dict({"departures": {"audio_encoder_pool": "mean"}})
    with pytest.raises(ValueError, match="e2f6a81 that of audio_frame_stack"):  # low frame rate input
        PVAEConfig.from_dict({"departures": {"audio_frame_stack": 3}})
    capped = {"objective": "plus", "departures": {"private_label_adv_weight": 3.0, "private_label_adv_mode": "capped"}}
    assert PVAEConfig.from_dict(capped).departures.private_label_adv_weight == 3.0
    with pytest.raises(ValueError, match="pvae.departures.private_label_adv_mode 'reverse': an experiment"):
        PVAEConfig.from_dict({**capped, "departures": {"private_label_adv_weight": 3.0, "private_label_adv_mode": "reverse"}})
    with pytest.raises(ValueError, match="private_label_adv_mode must be 'capped'"):
        PVAEConfig.from_dict({"departures": {"private_label_adv_mode": "bogus"}})
    with pytest.raises(ValueError, match="unknown PVAEConfig fields"):
        PVAEConfig.from_dict({"no_such_field": 1})
    # old runs' flat spellings of the kept departures load into their sub-configs
    old = PVAEConfig.from_dict({**GOLDEN_CFG, "objective": "plus", "cross_weight": 2.0, "image_nll_std": 0.31,
                                "vae_label_weight": 3.0, "audio_input_norm": "utterance"})
    assert old.departures.cross_weight == 2.0 and old.departures.image_nll_std == 0.31
    assert old.baseline.label_weight == 3.0 and old.departures.audio_input_norm == "utterance"
    assert PVAEConfig.from_dict(old.to_dict()) == old
    with pytest.raises(ValueError, match="disagree"):
        PVAEConfig.from_dict({"cross_weight": 2.0, "departures": {"cross_weight": 1.0}})
    from dataclasses import fields

    assert len(fields(PVAEConfig)) <= 15  # the paper's fields plus the two sub-configs


def test_the_readme_model_snippet_runs():
    """The README's model snippet is executed as written (it once failed with a NameError)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "PVAEConfig(" in b)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert scope["x_i_hat"].shape == (2, 1, 28, 28) and scope["out"].loss.isfinite()


def test_learned_decoder_variance_is_a_named_departure_with_the_gaussian_formula():
    """Issue 30: ``decoder_variance: learned`` gives every model one log-variance per FBank
    dimension and one for the pixels, in the Gaussian likelihood, trained; "fixed" adds no
    parameter (checkpoints keep their keys) and leaves the loss unchanged."""
    from pvae_model.models import build_model
    from pvae_model.modules import MIN_LOGVAR, Likelihoods

    torch.manual_seed(0)
    lik = Likelihoods(6, 0.31, "learned")
    with torch.no_grad():
        lik.audio_logvar.copy_(torch.linspace(-1, 1, 6))
        lik.image_logvar.fill_(-3.0)
    x, mean, lengths = torch.randn(2, 5, 6), torch.randn(2, 5, 6), torch.tensor([5, 3])
    want = torch.stack([-Normal(mean[b, :n], torch.exp(0.5 * lik.audio_logvar)).log_prob(x[b, :n]).sum()
                        for b, n in enumerate(lengths.tolist())])
    assert torch.allclose(lik.audio(x, mean, lengths), want, rtol=1e-5)
    xi, mi = torch.rand(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    want_i = -Normal(mi, math.exp(-1.5)).log_prob(xi).flatten(1).sum(-1)
    assert torch.allclose(lik.image(xi, mi), want_i, rtol=1e-5)
    lik.image(xi, mi).sum().backward()
    assert lik.image_logvar.grad is not None
    with torch.no_grad():
        lik.image_logvar.fill_(-50.0)  # held at the floor
    assert torch.allclose(lik.image(xi, mi), -Normal(mi, math.exp(MIN_LOGVAR / 2)).log_prob(xi).flatten(1).sum(-1), rtol=1e-5)
    assert list(Likelihoods(6, 1.0, "fixed").parameters()) == []
    # "optimal": the variance is the batch's mean squared error (per FBank dimension), a constant
    opt = Likelihoods(6, 1.0, "optimal")
    assert list(opt.parameters()) == []
    m2 = mean.clone().requires_grad_(True)
    mse = torch.cat([(x[b, :n] - mean[b, :n]) ** 2 for b, n in enumerate(lengths.tolist())]).mean(0)
    want = torch.stack([-Normal(mean[b, :n], mse.sqrt()).log_prob(x[b, :n]).sum() for b, n in enumerate(lengths.tolist())])
    got = opt.audio(x, m2, lengths)
    assert torch.allclose(got, want, rtol=1e-5)
    got.sum().backward()  # the variance is a constant: the gradient is the squared error's over it
    mask = torch.zeros(2, 5, 1)
    mask[0, :5], mask[1, :3] = 1, 1
    assert torch.allclose(m2.grad, -(x - mean) * mask / mse, rtol=1e-4, atol=1e-6)
    assert torch.allclose(opt.image(xi, mi), -Normal(mi, (xi - mi).pow(2).mean().sqrt()).log_prob(xi).flatten(1).sum(-1), rtol=1e-5)
    for name in ("pvae", "jmvae-kl", "vae-sp", "vae-im"):
        cfg = PVAEConfig(**GOLDEN_CFG, departures={"decoder_variance": "learned"})
        keys = build_model(name, cfg).state_dict().keys()
        assert "lik.audio_logvar" in keys and "lik.image_logvar" in keys
        assert cfg.deviations(name)["decoder_variance"] == "learned"
    with pytest.raises(ValueError, match="decoder_variance"):
        PVAEConfig(departures={"decoder_variance": "per-pixel"})
    assert PVAEConfig(departures={"decoder_variance": "optimal"}).deviations()["decoder_variance"] == "optimal"


def test_relative_position_follows_each_utterances_own_length():
    from pvae_model.modules import AudioDecoder, relative_position

    pos = relative_position(torch.tensor([4, 2]), 6)
    assert pos.shape == (2, 6, 7)
    assert torch.allclose(pos[0, :4, 0], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert torch.allclose(pos[1, :2, 0], torch.tensor([0.25, 0.75]))
    assert torch.all(pos[1, 2:, 0] == 1.0)  # padding reads the end
    assert torch.allclose(pos[0, :, 1], torch.sin(math.pi * pos[0, :, 0]))
    # the same z laid over two lengths: the decoder's input differs, so its time course scales
    dec = AudioDecoder(3, 4, 8, position="relative")
    z = torch.randn(1, 3).expand(2, -1)
    out = dec(z, torch.tensor([6, 3]))
    assert out.shape == (2, 6, 4) and torch.all(out[1, 3:] == 0)
    assert not torch.allclose(out[0, :3], out[1, :3])
    constant = AudioDecoder(3, 4, 8)(z, torch.tensor([6, 3]))  # the paper's: blind to the length
    assert torch.allclose(constant[0, :3], constant[1, :3])
    with pytest.raises(ValueError, match="audio_decoder_position"):
        PVAEConfig(departures={"audio_decoder_position": "absolute"})


def test_private_free_nats_lift_each_private_kl_to_the_floor():
    """Free bits: per item, max(KL, floor) replaces KL(z_a) and KL(z_i); with a floor above every
    item's KL the loss grows by exactly 2 floor - KL_a - KL_i (batch means), and it is a named departure."""
    paper, free = _golden_metrics(), _golden_metrics(departures=dict(private_free_nats=1000.0))
    for k in ("nll_audio", "nll_image", "kl_a", "kl_i", "contrastive"):
        assert free[k] == pytest.approx(paper[k], rel=1e-6), k
    assert free["loss"] == pytest.approx(paper["loss"] + 2000.0 - paper["kl_a"] - paper["kl_i"], rel=1e-6)
    assert PVAEConfig(departures=dict(private_free_nats=4.0)).deviations() == {"private_free_nats": 4.0}
    with pytest.raises(ValueError, match="private_free_nats"):
        PVAEConfig(departures=dict(private_free_nats=-1.0))

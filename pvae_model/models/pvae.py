"""The Partitioned VAE (Hsu & Glass, 2018): shared z_s, private z_a and z_i.

Two objectives (``PVAEConfig.objective``):

``paper``  -ELBO(multimodal posterior) + alpha * coherence + beta * contrastive, as restated in
           ``shared/docs/pvae-spec.md``; nothing else.
``plus``   the paper's terms plus **cross-modal reconstruction** (MMVAE+/CRMVAE/DMVAE style):
           x_i decoded from (z_s ~ q(z_s | x_a), z_i ~ N(0, I)) and x_a from
           (z_s ~ q(z_s | x_i), z_a ~ N(0, I)), weighted by ``cross_weight``.  With the style
           drawn from the prior, the digit can reach the decoder only through a *unimodal* z_s,
           which is what cross-modal generation feeds it.  Every deviation from the spec is a
           named field of :class:`PVAEConfig` (``deviations()``), saved with the run and
           footnoted in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..modules import AUDIO_INPUT_NORMS, IMAGE_ENCODER_DEPTHS, AudioDecoder, AudioPreEncoder, GaussianHead, ImageDecoder, ImagePreEncoder
from ..modules import audio_input, gaussian_nll_audio, gaussian_nll_image, kl_gauss, kl_std_normal, rbf, rbf_dist_half, reparameterize
from .base import ConfigMixin, FromRun, ModelOutput, cyclic_derangement


MAX_WIDTH = 8192  # 16x the paper's 512-cell LSTMs: anything wider is a typo, not a model


@dataclass
class PVAEConfig(ConfigMixin):
    feat_dim: int = 80
    z_shared: int = 32
    z_audio: int = 32
    z_image: int = 32
    hidden: int = 512  # LSTM cells and pre-encoder output size
    image_channels: tuple = (32, 64)  # (*) image pre-encoder conv channels
    # "spec": the spec's two strided convs; "deep": a 3x3 conv before each (an architecture
    # departure, named by size_changes(): the spec's encoder trained on the labels tops out at
    # 98.6-99.0 % on MNIST test, under the image z_s bar; modules.ImagePreEncoder)
    image_encoder: str = "spec"
    # "utterance": the audio pre-encoders read each utterance normalised by its own mean and variance
    # (instance normalisation; a named architecture departure for voices never heard in training,
    # docs/voices.md); "none": the spec's, the features as given
    audio_input_norm: str = "none"
    alpha: float = 1.0  # (*) coherence weight
    beta: float = 10.0  # (*) contrastive weight; 0 gives "PVAE (no beta)"
    gamma: float = 0.5  # (*) hinge margin
    kl_private_weight: float = 1.0  # weight of KL(z_a) and KL(z_i); 1 = the paper's ELBO (experiments only)
    # VAE-sp / VAE-im only: the KL weight of a beta-VAE (Higgins et al. 2017); 1 = the paper's
    # baselines.  Below 1 the latent keeps more of each item (sharper reconstructions, a digit a
    # probe reads better): bases for the latent-translation bridge, which can transfer no better
    # than its target base draws its own digits.
    vae_kl_weight: float = 1.0
    # VAE-sp / VAE-im only: weight of a linear digit classifier's cross-entropy on the latent
    # sample; 0 = the paper's (unsupervised) baselines.  It uses that modality's own labels and no
    # pairs, so a base trained with it is still a single-modality model the bridge can join; it
    # lays the latent out by digit rather than by speaker, which is where a bridge from images
    # must land (experiments only; a deviation, named in ``deviations``).
    vae_label_weight: float = 0.0
    # Std of the image likelihood N(x_i; mean, std^2 I). The spec's 1 makes a whole 28x28 image in
    # [0, 1] worth ~30 nats against thousands for a spoken digit (experiments only).
    image_nll_std: float = 1.0
    objective: str = "paper"  # paper | plus (see the module docstring)
    cross_weight: float = 1.0  # plus: weight of the two cross-modal reconstruction terms
    # plus: what the cross-modal terms train.  "all": decoders and the unimodal z_s encoders;
    # "decoders": the z_s samples are detached, so only the decoders learn to read a unimodal z_s
    # and the encoders are shaped by the paper's terms alone.
    cross_grad: str = "all"
    # Contrastive kernel k(u, v) (*): "sqdist" exp(-||u-v||^2) (the spec's reading),
    # "dist_half" exp(-||u-v|| / 2) (pixyz's PVAE loss).
    kernel: str = "sqdist"
    # private_label_adv_weight is off before this epoch (0-based) and ramps up linearly over the
    # next 5: the critic pushes only once z_s has formed (docs/results.md).
    private_adv_start: int = 0
    # plus: a *supervised* adversary on the private latents.  A linear digit classifier per
    # modality reads z_a (z_i) sampled from the multimodal and from the unimodal posterior; its
    # cross-entropy trains it and reaches the encoders reversed (gradient reversal), so no linear
    # read-out of a private latent finds the digit, which is what the sample probe measures.  It
    # uses the digit labels, which the paper uses only to pair the modalities: a further
    # departure from its weak supervision, named as such.  0 = off.
    private_label_adv_weight: float = 0.0
    # How the encoders are pushed: "reverse", the critic's cross-entropy with its gradient reversed
    # (maximised: unbounded, weight 10 from epoch 10 diverged, and weight 3 at epoch 56 of a longer
    # run, docs/results.md); "capped", the same push stopped per item once the critic's
    # cross-entropy reaches chance level (ln 10): the encoders make the critic uninformed, never
    # wrong; "confusion", the cross-entropy of the (frozen) critic's prediction against the uniform
    # distribution (Tzeng et al. 2015's domain confusion: bounded, smallest when the critic can
    # only guess).
    private_label_adv_mode: str = "reverse"
    def __post_init__(self) -> None:
        from pvae_data.config import check_field_types

        check_field_types(self)
        self.image_channels = tuple(self.image_channels)
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {tuple(allowed)}, got {getattr(self, name)!r}")
        if min(self.z_shared, self.z_audio, self.z_image, self.hidden) <= 0:
            raise ValueError("latent and hidden sizes must be positive")
        if self.hidden > MAX_WIDTH or max(self.z_shared, self.z_audio, self.z_image) > MAX_WIDTH or \
                not all(0 < c <= MAX_WIDTH for c in self.image_channels):
            raise ValueError(f"hidden, latent sizes and image_channels must be at most {MAX_WIDTH} "
                             f"(got hidden {self.hidden}, latents {self.z_shared}/{self.z_audio}/{self.z_image}, "
                             f"image_channels {list(self.image_channels)})")
        if self.image_nll_std <= 0:
            raise ValueError("image_nll_std must be > 0")
        for name in NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in PLUS_TERMS:
            if getattr(self, name) > 0 and self.objective != "plus":
                raise ValueError(f"{name} is a term of the plus objective: set objective: plus")

    @classmethod
    def from_dict(cls, d: dict) -> "PVAEConfig":
        """As every config, plus old runs: a retired experiment's knob (``RETIRED``) at its neutral
        value is dropped; one that was used is refused by name."""
        d = dict(d)
        for name, neutral in RETIRED.items():
            if name in d and d.pop(name) != neutral:
                raise ValueError(f"pvae.{name}: an experiment that was not kept and left the library "
                                 f"(docs/results.md has the study; commit {RETIRED_IN} has the code)")
        return super().from_dict(d)

    def deviations(self, model: str = "pvae") -> dict:
        """Every field whose value departs from the spec's objective (``{name: value}``), for
        configs, metrics and the report's footnotes; for a baseline (``model``), only those that
        reach its loss (the image likelihood).  Fields marked (*) in the spec are choices, not
        deviations, and are not listed."""
        out = {}
        if model != "pvae":
            if model in ("vae-sp", "vae-im") and self.vae_kl_weight != 1.0:
                out["vae_kl_weight"] = self.vae_kl_weight
            if model in ("vae-sp", "vae-im") and self.vae_label_weight != 0.0:
                out["vae_label_weight"] = self.vae_label_weight
            if self.image_nll_std != 1.0 and model != "vae-sp":
                out["image_nll_std"] = self.image_nll_std
            return out
        if self.objective != "paper":
            out["objective"] = self.objective
            out["cross_weight"] = self.cross_weight
            out["cross_grad"] = self.cross_grad
        if self.image_nll_std != 1.0:
            out["image_nll_std"] = self.image_nll_std
        if self.kl_private_weight != 1.0:
            out["kl_private_weight"] = self.kl_private_weight
        if self.private_label_adv_weight > 0:
            out["private_label_adv_weight"] = self.private_label_adv_weight
            out["private_label_adv_mode"] = self.private_label_adv_mode
        if self.private_label_adv_weight > 0 and self.private_adv_start:
            out["private_adv_start"] = self.private_adv_start
        return out

    def size_changes(self) -> dict:
        """The sizes that differ from the paper's architecture (``{name: value}``): a smaller model
        trains more epochs in a CPU budget; metrics and the report name it beside the objective's
        deviations.  Layer sizes marked (*) in the spec (image channels) are choices, not listed."""
        return {k: getattr(self, k) for k, v in PAPER_SIZES.items() if getattr(self, k) != v}

    def image_pre_encoder(self) -> ImagePreEncoder:
        """The image pre-encoder this config names (every model builds it here)."""
        return ImagePreEncoder(self.image_channels, self.hidden, self.image_encoder)


OBJECTIVES = ("paper", "plus")
# the spec's architecture: 80-dim FBank, 32-dim latents, 512-unit LSTMs and FC layers, two strided convs
PAPER_SIZES = {"feat_dim": 80, "z_shared": 32, "z_audio": 32, "z_image": 32, "hidden": 512, "image_encoder": "spec",
               "audio_input_norm": "none"}
KERNELS = {"sqdist": rbf, "dist_half": rbf_dist_half}
CHOICES = {"objective": OBJECTIVES, "kernel": KERNELS, "cross_grad": ("all", "decoders"),
           "private_label_adv_mode": ("reverse", "capped", "confusion"), "image_encoder": IMAGE_ENCODER_DEPTHS,
           "audio_input_norm": AUDIO_INPUT_NORMS}
NON_NEGATIVE = ("alpha", "beta", "gamma", "kl_private_weight", "vae_kl_weight", "vae_label_weight", "cross_weight",
                "private_adv_start", "private_label_adv_weight")
# weights of terms that exist only in the plus objective: > 0 with objective "paper" is an error
PLUS_TERMS = ("private_label_adv_weight",)
# Experiments that were not kept: their knobs left the library (the study stays in docs/results.md;
# commit 59e84ed still has them).  An old run's config that names one at its neutral value loads;
# one that used it is refused by name.
RETIRED = {"kl_shared_weight": 1.0, "private_adv_weight": 0.0, "cycle_image": 0.0, "cycle_audio": 0.0,
           "cycle_style": "reference", "zs_agree_weight": 0.0, "image_views": 0, "view_coherence": 0.0,
           "swap_image": 0.0, "swap_audio": 0.0, "contrastive_negatives": "any", "zs_pull_image": 0.0}
RETIRED_IN = "59e84ed"


def coherence(q_mm: dict, q_uni: dict, private: str) -> torch.Tensor:
    """The paper's coherence term per item: KL(q(z_s | both) || q(z_s | one)) + the same for the
    modality's private latent (``private``: "a" or "i")."""
    return kl_gauss(*q_mm["s"], *q_uni["s"]) + kl_gauss(*q_mm[private], *q_uni[private])


class _Encoder(nn.Module):
    """Pre-encoder(s) -> one Gaussian head per latent."""

    def __init__(self, pre: nn.ModuleDict, in_dim: int, heads: dict[str, int]):
        super().__init__()
        self.pre = pre
        self.heads = nn.ModuleDict({k: GaussianHead(in_dim, d) for k, d in heads.items()})

    def forward(self, h: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {k: head(h) for k, head in self.heads.items()}


class _ReverseGrad(torch.autograd.Function):
    """Identity forward, negated gradient backward: one optimiser step trains the discriminator
    to separate and the encoder to confuse it."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        return -g


class PVAE(FromRun, nn.Module):
    run_models = ("pvae",)  # PVAE (no beta) is "pvae" with beta = 0

    @classmethod
    def from_config(cls, name: str, cfg: PVAEConfig | dict) -> "PVAE":
        return cls(PVAEConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg)

    def __init__(self, cfg: PVAEConfig = PVAEConfig()):
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        pre_a = lambda: AudioPreEncoder(cfg.feat_dim, H, cfg.audio_input_norm)  # noqa: E731
        pre_i = cfg.image_pre_encoder
        # q(z_s, z_a, z_i | x_a, x_i): its own pre-encoders (no sharing with the unimodal ones).
        self.mm = _Encoder(nn.ModuleDict({"a": pre_a(), "i": pre_i()}), 2 * H,
                           {"s": cfg.z_shared, "a": cfg.z_audio, "i": cfg.z_image})
        self.enc_a = _Encoder(nn.ModuleDict({"a": pre_a()}), H, {"s": cfg.z_shared, "a": cfg.z_audio})
        self.enc_i = _Encoder(nn.ModuleDict({"i": pre_i()}), H, {"s": cfg.z_shared, "i": cfg.z_image})
        self.dec_a = AudioDecoder(cfg.z_shared + cfg.z_audio, cfg.feat_dim, H)
        self.dec_i = ImageDecoder(cfg.z_shared + cfg.z_image)
        self.adv_scale = 1.0 if cfg.private_adv_start <= 0 else 0.0  # set per epoch by set_epoch()
        if cfg.private_label_adv_weight > 0:  # created last: the other modules' initial weights do not change
            self.digit_critic_a = nn.Linear(cfg.z_audio, 10)
            self.digit_critic_i = nn.Linear(cfg.z_image, 10)

    def set_epoch(self, epoch: int) -> None:
        """Epoch-dependent weights (called by the trainer before each epoch, 0-based)."""
        start = self.cfg.private_adv_start
        self.adv_scale = 1.0 if start <= 0 else min(1.0, max(0.0, (epoch - start + 1) / 5))

    # ---- inference networks -------------------------------------------------------------
    def encode_multimodal(self, x_a, lengths, x_i):
        """q(z_s, z_a, z_i | x_a, x_i): {"s": (mu, logvar), "a": ..., "i": ...}."""
        return self.encode_multimodal_from(self.mm.pre["a"](x_a, lengths), x_i)

    def encode_multimodal_from(self, h_a: torch.Tensor, x_i: torch.Tensor):
        """The multimodal posterior from an already computed audio pre-encoding ``h_a`` (the LSTM
        pass), so one spoken digit can be paired with several written ones at the cost of image
        pre-encodings only."""
        return self.mm(torch.cat([h_a, self.mm.pre["i"](x_i)], dim=-1))

    def encode_audio(self, x_a, lengths):
        """Unimodal q(z_s, z_a | x_a): {"s": (mu, logvar), "a": (mu, logvar)}."""
        return self.enc_a(self.enc_a.pre["a"](x_a, lengths))

    def encode_image(self, x_i):
        """Unimodal q(z_s, z_i | x_i): {"s": (mu, logvar), "i": (mu, logvar)}."""
        return self.enc_i(self.enc_i.pre["i"](x_i))

    # ---- generative networks ------------------------------------------------------------
    def decode_audio(self, z_s, z_a, lengths):
        return self.dec_a(torch.cat([z_s, z_a], dim=-1), lengths)

    def decode_image(self, z_s, z_i):
        return self.dec_i(torch.cat([z_s, z_i], dim=-1))

    # ---- objective ----------------------------------------------------------------------
    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        cfg = self.cfg
        lengths, x_i = batch["lengths"], batch["image"]
        x_a = batch["audio"][:, : int(lengths.max())]  # extra padding is never read
        x_in = audio_input(batch)  # what the encoders read: x_a, or its SpecAugment-masked copy
        q = self.encode_multimodal(x_in, lengths, x_i)
        z = {k: reparameterize(*q[k]) for k in ("s", "a", "i")}
        nll_a = gaussian_nll_audio(x_a, self.decode_audio(z["s"], z["a"], lengths), lengths)
        nll_i = gaussian_nll_image(x_i, self.decode_image(z["s"], z["i"]), cfg.image_nll_std)
        kl = {k: kl_std_normal(*q[k]) for k in ("s", "a", "i")}
        qa, qi = self.encode_audio(x_in, lengths), self.encode_image(x_i)
        coh_a, coh_i = coherence(q, qa, "a"), coherence(q, qi, "i")
        mu_a, mu_i = qa["s"][0], qi["s"][0]
        neg = cyclic_derangement(len(mu_a), generator, mu_a.device)
        con = self.contrastive(mu_a, mu_i, neg)
        neg_elbo = nll_a + nll_i + kl["s"] + kl["a"] + kl["i"]
        # zero with the paper's objective
        extra_kl = (cfg.kl_private_weight - 1.0) * (kl["a"] + kl["i"])
        total = neg_elbo + extra_kl + cfg.alpha * (coh_a + coh_i) + cfg.beta * con
        m = {"neg_elbo": neg_elbo.mean(), "nll_audio": nll_a.mean(), "nll_image": nll_i.mean(),
             "kl_s": kl["s"].mean(), "kl_a": kl["a"].mean(), "kl_i": kl["i"].mean(),
             "coherence_audio": coh_a.mean(), "coherence_image": coh_i.mean(), "contrastive": con.mean(),
             "nll_audio_per_frame": nll_a.sum() / lengths.sum() / x_a.shape[2]}
        if cfg.objective == "plus":
            gen = self.cross_generate(lengths, qa, qi)
            cross_i = gaussian_nll_image(x_i, gen["image"], cfg.image_nll_std)
            cross_a = gaussian_nll_audio(x_a, gen["audio"], lengths)
            total = total + cfg.cross_weight * (cross_a + cross_i)
            m.update(cross_nll_image=cross_i.mean(), cross_nll_audio=cross_a.mean())
            if cfg.private_label_adv_weight > 0:
                adv = self.digit_adversary(batch["label"], z, qa, qi)
                total = total + self.adv_scale * cfg.private_label_adv_weight * (adv["audio"] + adv["image"])
                m.update(digit_critic_audio=adv["audio"].mean(), digit_critic_image=adv["image"].mean(),
                         digit_critic_ce_audio=adv["audio_critic_ce"].mean(),
                         digit_critic_ce_image=adv["image_critic_ce"].mean())
        loss = total.mean()
        m["loss"] = loss
        return ModelOutput(loss, {k: float(v.detach()) for k, v in m.items()})

    def contrastive(self, mu_a: torch.Tensor, mu_i: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The paper's hinge per item: a pair's unimodal z_s means must be closer (under the
        kernel) than each is to the other modality's mean of a mismatched item (``neg``), by
        the margin gamma."""
        k, gamma = KERNELS[self.cfg.kernel], self.cfg.gamma
        pos = k(mu_a, mu_i)
        return torch.relu(gamma - pos + k(mu_a, mu_i[neg])) + torch.relu(gamma - pos + k(mu_a[neg], mu_i))

    def cross_generate(self, lengths, qa, qi) -> dict[str, torch.Tensor]:
        """Each modality generated from the *other* one's unimodal z_s sample and its own private
        latent drawn from the prior: {"image", "audio", "z_i", "z_a"}."""
        zs_a, zs_i = reparameterize(*qa["s"]), reparameterize(*qi["s"])
        if self.cfg.cross_grad == "decoders":
            zs_a, zs_i = zs_a.detach(), zs_i.detach()
        z_i = torch.randn(len(zs_a), self.cfg.z_image, device=zs_a.device, dtype=zs_a.dtype)
        z_a = torch.randn(len(zs_i), self.cfg.z_audio, device=zs_i.device, dtype=zs_i.dtype)
        return {"image": self.decode_image(zs_a, z_i), "audio": self.decode_audio(zs_i, z_a, lengths),
                "z_i": z_i, "z_a": z_a, "zs_audio": zs_a, "zs_image": zs_i}

    def digit_adversary(self, labels: torch.Tensor, z: dict, qa: dict, qi: dict) -> dict[str, torch.Tensor]:
        """Per-item loss of the linear digit critics on the private latents (multimodal sample +
        unimodal sample).  "reverse": their cross-entropy, whose gradient reaches the encoders
        reversed.  "capped": their cross-entropy on detached latents (trains the critics) minus the
        frozen critics' cross-entropy clamped at ln 10 (trains the encoders, up to chance level).
        "confusion": their cross-entropy on detached latents (trains the critics) plus
        the cross-entropy of the frozen critics' predictions against the uniform distribution
        (trains the encoders)."""
        ce = nn.functional.cross_entropy
        mode = self.cfg.private_label_adv_mode
        out = {}
        for key, head, z_mm, q_uni in (("audio", self.digit_critic_a, z["a"], qa["a"]),
                                       ("image", self.digit_critic_i, z["i"], qi["i"])):
            total, critic = 0.0, 0.0
            for zp in (z_mm, reparameterize(*q_uni)):
                if mode == "reverse":
                    loss = ce(head(_ReverseGrad.apply(zp)), labels, reduction="none")
                    total, critic = total + loss, critic + loss.detach()
                    continue
                frozen = nn.functional.linear(zp, head.weight.detach(), head.bias.detach())
                if mode == "capped":  # the encoder raises the frozen critic's loss up to chance, no further
                    push = -ce(frozen, labels, reduction="none").clamp(max=math.log(frozen.shape[-1]))
                else:
                    push = -nn.functional.log_softmax(frozen, dim=-1).mean(-1)
                loss = ce(head(zp.detach()), labels, reduction="none")
                total, critic = total + loss + push, critic + loss.detach()
            out[key] = total
            out[f"{key}_critic_ce"] = critic / 2  # per read: ln 10 = 2.30 is a critic that only guesses
        return out

    def cross_reconstruction(self, x_a, lengths, x_i, qa, qi) -> tuple[torch.Tensor, torch.Tensor]:
        """-log p(x_i | z_s ~ q(z_s|x_a), z_i ~ N(0,I)) and -log p(x_a | z_s ~ q(z_s|x_i), z_a ~ N(0,I)),
        per sample: the private latent is noise, so only the other modality's z_s can carry the digit."""
        gen = self.cross_generate(lengths, qa, qi)
        return (gaussian_nll_image(x_i, gen["image"], self.cfg.image_nll_std),
                gaussian_nll_audio(x_a, gen["audio"], lengths))

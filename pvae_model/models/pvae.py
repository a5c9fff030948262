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
from .base import ConfigMixin, FromRun, ModelOutput, cyclic_derangement, other_label_negatives


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
    # Weight of KL(z_s) of the multimodal posterior; 1 = the paper's ELBO.  A digit needs ln 10 =
    # 2.3 nats, but with weight 1 the image side's z_s carries ~22: written style travels in z_s,
    # the unimodal image z_s follows it (coherence) and places hard digits by their look.  A
    # dearer z_s keeps what both modalities need (the digit) and leaves style to z_a / z_i.
    kl_shared_weight: float = 1.0
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
    # plus: weight of an adversarial independence term between z_s and each private latent.
    # A small discriminator tells (z_s, z_p) of one item from z_p paired with another item's z_s;
    # its gradient reaches the unimodal private encoders reversed (Ganin & Lempitsky's gradient
    # reversal), so z_a / z_i are pushed to hold nothing z_s already says, the digit first.
    # Label-free (FactorVAE's permutation trick between partitions). 0 = off.
    private_adv_weight: float = 0.0
    # The term is off before this epoch (0-based) and ramps up linearly over the next 5: the
    # critic pushes only once z_s has formed (weight 100 from epoch 0 diverged, docs/results.md).
    # It ramps private_label_adv_weight in the same way.
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
    # plus: a style cycle on the private latents (InfoGAN / BicycleGAN's latent regression, Jha et
    # al.'s cycle-consistent VAE).  An image is generated from the paired speech's z_s sample and a
    # style z_i, re-encoded by the unimodal image encoder, whose mean must give z_i back:
    # 0.5 * ||mu_i(x^) - z_i||^2 per item, times ``cycle_image`` (``cycle_audio``: the same for
    # speech, with z_a, at the reference's length).  ``cycle_style`` says where z_i comes from:
    # "reference", the (detached) unimodal mean of another item of the batch, mostly of another
    # digit; "prior", the cross term's N(0, I) draw.  z_i is independent of the digit z_s carries,
    # so the encoder must read style in a digit-invariant way (the private probes) and the decoder
    # must draw that style (the reference's style in the grids).  0 = off.
    cycle_image: float = 0.0
    cycle_audio: float = 0.0
    cycle_style: str = "reference"
    # plus: agreement of the two unimodal z_s posteriors of a pair, symmetric KL
    # KL(q(z_s|x_a) || q(z_s|x_i)) + KL(q(z_s|x_i) || q(z_s|x_a)), times this weight.  The paper ties
    # each unimodal posterior only to the *multimodal* one (coherence), which can hold image style
    # that the speech side never sees; the image encoder then follows it (image z_s purity drifts,
    # docs/results.md).  A pair shares only its digit, so agreement leaves z_s only the digit.  0 = off.
    zs_agree_weight: float = 0.0
    # plus: more written digits per spoken one.  Each training item also brings this many other
    # images of its label (drawn afresh every epoch, as the pair itself is), and the paper's
    # contrastive term is applied to them too (mean over the views, same beta and margin): the
    # image encoder learns the digit from K+1 images per spoken digit at the cost of K image
    # encodings, where one more spoken digit would cost four LSTM passes.  The same weak
    # supervision as the pairing (only "same label"), no labels read.  0 = off.
    image_views: int = 0
    # plus: the paper's coherence term on each extra view too, KL(q(z_s, z_i | x_a, v) || q(z_s, z_i | v))
    # (mean over the views), times this weight (the paper's alpha is 1).  The hinge alone stops at
    # its margin; coherence ties every view's unimodal posterior to a multimodal one that the spoken
    # digit pins down, at the cost of one more image pre-encoding per view (the spoken digit's
    # multimodal pre-encoding is shared).  Needs image_views.  0 = off.
    view_coherence: float = 0.0
    # plus: cross-modal reconstruction with the item's *own* style (DMVAE's cross reconstruction,
    # Lee & Pavlovic 2021): x_i decoded from (z_s ~ q(z_s|x_a), z_i ~ q(z_i|x_i)), times
    # ``swap_image``; x_a from (z_s ~ q(z_s|x_i), z_a ~ q(z_a|x_a)), times ``swap_audio``.  The
    # prior-style cross terms teach the decoder to draw a digit from a unimodal z_s with *no*
    # style, so it learns to ignore the private latent (soft class-average digits, a reference's
    # style that hardly shows); here the style can come only from the private latent, since the
    # other modality's z_s never saw this item.  0 = off.
    swap_image: float = 0.0
    swap_audio: float = 0.0
    # Which item supplies the contrastive hinge's negative (the paper: another item of the batch).
    # With pairs formed by digit, one negative in ten is the *same* digit, and the hinge then pushes
    # two same-digit z_s apart with the full weight beta: the clusters the purity measures are spread
    # by the objective itself.  "other_digit" (plus) draws the negative among the batch's pairs of
    # another digit, which the pairing already knows (it formed the pairs by digit).
    contrastive_negatives: str = "any"
    # plus: pull each written digit's unimodal z_s mean towards its spoken partner's, held fixed
    # (stop-gradient): 0.5 * ||mu_s(x_i) - sg(mu_s(x_a))||^2 per pair, times this weight.  The
    # partner is a random utterance of the same digit, so the image mean is regressed onto the
    # class average of the speech means: a dense, classification-like signal for every image
    # (the hinge stops at its margin) that leaves no room for image style in z_s.  Unlike
    # ``zs_agree_weight`` (both sides trained, which emptied z_s) the speech side is untouched.
    zs_pull_image: float = 0.0

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
        if self.view_coherence > 0 and self.image_views == 0:
            raise ValueError("view_coherence applies to the extra views: set image_views > 0")
        if self.contrastive_negatives != "any" and self.objective != "plus":
            raise ValueError("contrastive_negatives other than 'any' is part of the plus objective: set objective: plus")

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
        if self.kl_shared_weight != 1.0:
            out["kl_shared_weight"] = self.kl_shared_weight
        if self.private_adv_weight > 0:
            out["private_adv_weight"] = self.private_adv_weight
        if self.private_label_adv_weight > 0:
            out["private_label_adv_weight"] = self.private_label_adv_weight
            out["private_label_adv_mode"] = self.private_label_adv_mode
        if (self.private_adv_weight > 0 or self.private_label_adv_weight > 0) and self.private_adv_start:
            out["private_adv_start"] = self.private_adv_start
        for name in ("cycle_image", "cycle_audio"):
            if getattr(self, name) > 0:
                out[name] = getattr(self, name)
        if self.cycle_image > 0 or self.cycle_audio > 0:
            out["cycle_style"] = self.cycle_style
        if self.zs_agree_weight > 0:
            out["zs_agree_weight"] = self.zs_agree_weight
        if self.image_views > 0:
            out["image_views"] = self.image_views
        if self.view_coherence > 0:
            out["view_coherence"] = self.view_coherence
        if self.contrastive_negatives != "any":
            out["contrastive_negatives"] = self.contrastive_negatives
        for name in ("swap_image", "swap_audio", "zs_pull_image"):
            if getattr(self, name) > 0:
                out[name] = getattr(self, name)
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
           "private_label_adv_mode": ("reverse", "capped", "confusion"), "cycle_style": ("reference", "prior"),
           "contrastive_negatives": ("any", "other_digit"), "image_encoder": IMAGE_ENCODER_DEPTHS,
           "audio_input_norm": AUDIO_INPUT_NORMS}
NON_NEGATIVE = ("alpha", "beta", "gamma", "kl_private_weight", "kl_shared_weight", "vae_kl_weight", "vae_label_weight", "cross_weight", "private_adv_weight",
                "private_adv_start", "private_label_adv_weight", "cycle_image", "cycle_audio", "zs_agree_weight", "image_views",
                "swap_image", "swap_audio", "zs_pull_image", "view_coherence")
# weights of terms that exist only in the plus objective: > 0 with objective "paper" is an error
PLUS_TERMS = ("private_adv_weight", "private_label_adv_weight", "cycle_image", "cycle_audio", "zs_agree_weight",
              "image_views", "swap_image", "swap_audio", "zs_pull_image", "view_coherence")


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


class PartitionCritic(nn.Module):
    """Logit that (z_s, z_p) come from one item rather than two."""

    def __init__(self, z_shared: int, z_private: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_shared + z_private, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, z_s: torch.Tensor, z_p: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Per-item binary cross-entropy of telling the true pairs from pairs re-matched by ``neg``
        (z_s detached: only the private encoder is pushed, reversed)."""
        z_s, z_p = z_s.detach(), _ReverseGrad.apply(z_p)
        real = self.net(torch.cat([z_s, z_p], dim=-1)).squeeze(-1)
        fake = self.net(torch.cat([z_s, z_p[neg]], dim=-1)).squeeze(-1)
        bce = nn.functional.binary_cross_entropy_with_logits
        return bce(real, torch.ones_like(real), reduction="none") + bce(fake, torch.zeros_like(fake), reduction="none")


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
        if cfg.private_adv_weight > 0:  # created last: the other modules' initial weights do not change
            self.critic_a = PartitionCritic(cfg.z_shared, cfg.z_audio)
            self.critic_i = PartitionCritic(cfg.z_shared, cfg.z_image)
        if cfg.private_label_adv_weight > 0:  # also last, for the same reason
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
        h_a_mm = self.mm.pre["a"](x_in, lengths)  # kept: the extra views' multimodal posteriors share it
        q = self.encode_multimodal_from(h_a_mm, x_i)
        z = {k: reparameterize(*q[k]) for k in ("s", "a", "i")}
        nll_a = gaussian_nll_audio(x_a, self.decode_audio(z["s"], z["a"], lengths), lengths)
        nll_i = gaussian_nll_image(x_i, self.decode_image(z["s"], z["i"]), cfg.image_nll_std)
        kl = {k: kl_std_normal(*q[k]) for k in ("s", "a", "i")}
        qa, qi = self.encode_audio(x_in, lengths), self.encode_image(x_i)
        coh_a, coh_i = coherence(q, qa, "a"), coherence(q, qi, "i")
        mu_a, mu_i = qa["s"][0], qi["s"][0]
        neg = cyclic_derangement(len(mu_a), generator, mu_a.device)
        neg_c = neg if cfg.contrastive_negatives == "any" else other_label_negatives(batch["label"], neg, generator)
        con = self.contrastive(mu_a, mu_i, neg_c)
        neg_elbo = nll_a + nll_i + kl["s"] + kl["a"] + kl["i"]
        # zero with the paper's objective
        extra_kl = (cfg.kl_private_weight - 1.0) * (kl["a"] + kl["i"]) + (cfg.kl_shared_weight - 1.0) * kl["s"]
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
            if cfg.image_views > 0:
                views = batch["image_views"]  # [B, K, 1, 28, 28]
                n_views, flat = views.shape[1], views.flatten(0, 1)
                q_v = self.encode_image(flat)
                mu_v = q_v["s"][0].view(*views.shape[:2], -1)
                con_v = torch.stack([self.contrastive(mu_a, mu_v[:, j], neg_c) for j in range(n_views)]).mean(0)
                total = total + cfg.beta * con_v
                m["contrastive_views"] = con_v.mean()
                if cfg.view_coherence > 0:
                    q_mv = self.encode_multimodal_from(h_a_mm.repeat_interleave(n_views, 0), flat)
                    coh_v = coherence(q_mv, q_v, "i").view(-1, n_views).mean(1)
                    total = total + cfg.view_coherence * coh_v
                    m["coherence_views"] = coh_v.mean()
            if cfg.swap_image > 0:
                swap_i = gaussian_nll_image(x_i, self.decode_image(gen["zs_audio"], reparameterize(*qi["i"])),
                                            cfg.image_nll_std)
                total = total + cfg.swap_image * swap_i
                m["swap_nll_image"] = swap_i.mean()
            if cfg.swap_audio > 0:
                swap_a = gaussian_nll_audio(x_a, self.decode_audio(gen["zs_image"], reparameterize(*qa["a"]), lengths),
                                            lengths)
                total = total + cfg.swap_audio * swap_a
                m["swap_nll_audio"] = swap_a.mean()
            if cfg.zs_pull_image > 0:
                pull = 0.5 * (mu_i - mu_a.detach()).pow(2).sum(-1)
                total = total + cfg.zs_pull_image * pull
                m["zs_pull_image"] = pull.mean()
            if cfg.zs_agree_weight > 0:
                agree = kl_gauss(*qa["s"], *qi["s"]) + kl_gauss(*qi["s"], *qa["s"])
                total = total + cfg.zs_agree_weight * agree
                m["zs_agreement"] = agree.mean()
            if cfg.cycle_image > 0 or cfg.cycle_audio > 0:
                cyc = self.style_cycle(lengths, qa, qi, gen, neg)
                for key, w in (("image", cfg.cycle_image), ("audio", cfg.cycle_audio)):
                    if key in cyc:
                        total = total + w * cyc[key]
                        m[f"cycle_{key}"] = cyc[key].mean()
            if cfg.private_adv_weight > 0:
                adv_a = self.critic_a(reparameterize(*qa["s"]), reparameterize(*qa["a"]), neg)
                adv_i = self.critic_i(reparameterize(*qi["s"]), reparameterize(*qi["i"]), neg)
                total = total + self.adv_scale * cfg.private_adv_weight * (adv_a + adv_i)
                m.update(critic_audio=adv_a.mean(), critic_image=adv_i.mean())
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

    def style_cycle(self, lengths, qa, qi, gen: dict, neg: torch.Tensor) -> dict[str, torch.Tensor]:
        """0.5 * ||mu_p(D(z_s, z_p)) - z_p||^2 per item for each private latent whose cycle weight
        is set (see ``PVAEConfig.cycle_style``); z_s is the cross term's sample of the other
        modality's unimodal z_s."""
        cfg, out = self.cfg, {}
        if cfg.cycle_image > 0:
            if cfg.cycle_style == "prior":
                z_i, x_hat = gen["z_i"], gen["image"]
            else:
                z_i = qi["i"][0][neg].detach()
                x_hat = self.decode_image(gen["zs_audio"], z_i)
            out["image"] = 0.5 * (self.encode_image(x_hat)["i"][0] - z_i).pow(2).sum(-1)
        if cfg.cycle_audio > 0:
            if cfg.cycle_style == "prior":
                z_a, x_hat, n = gen["z_a"], gen["audio"], lengths
            else:
                z_a, n = qa["a"][0][neg].detach(), lengths[neg]
                x_hat = self.decode_audio(gen["zs_image"], z_a, n)
            out["audio"] = 0.5 * (self.encode_audio(x_hat, n)["a"][0] - z_a).pow(2).sum(-1)
        return out

    def cross_reconstruction(self, x_a, lengths, x_i, qa, qi) -> tuple[torch.Tensor, torch.Tensor]:
        """-log p(x_i | z_s ~ q(z_s|x_a), z_i ~ N(0,I)) and -log p(x_a | z_s ~ q(z_s|x_i), z_a ~ N(0,I)),
        per sample: the private latent is noise, so only the other modality's z_s can carry the digit."""
        gen = self.cross_generate(lengths, qa, qi)
        return (gaussian_nll_image(x_i, gen["image"], self.cfg.image_nll_std),
                gaussian_nll_audio(x_a, gen["audio"], lengths))

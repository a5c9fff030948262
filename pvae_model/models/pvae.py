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

import torch
from torch import nn

from ..modules import GaussianHead, ImageDecoder
from ..modules import audio_input, kl_gauss, kl_std_normal, rbf, rbf_dist_half, reparameterize
from .base import FromRun, ModelOutput, cyclic_derangement
from .pvae_config import PVAEConfig

__all__ = ["PVAE", "PVAEConfig", "KERNELS", "coherence"]


KERNELS = {"sqdist": rbf, "dist_half": rbf_dist_half}
SPEAKER_CRITIC_HIDDEN = 64


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


class PVAE(FromRun, nn.Module):
    run_models = ("pvae",)  # PVAE (no beta) is "pvae" with beta = 0

    @classmethod
    def from_config(cls, name: str, cfg: PVAEConfig | dict) -> "PVAE":
        return cls(PVAEConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg)

    def __init__(self, cfg: PVAEConfig = PVAEConfig()):
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        pre_a = cfg.audio_pre_encoder
        pre_i = cfg.image_pre_encoder
        # q(z_s, z_a, z_i | x_a, x_i): its own pre-encoders (no sharing with the unimodal ones).
        self.mm = _Encoder(nn.ModuleDict({"a": pre_a(), "i": pre_i()}), 2 * H,
                           {"s": cfg.z_shared, "a": cfg.z_audio, "i": cfg.z_image})
        self.enc_a = _Encoder(nn.ModuleDict({"a": pre_a()}), H, {"s": cfg.z_shared, "a": cfg.z_audio})
        self.enc_i = _Encoder(nn.ModuleDict({"i": pre_i()}), H, {"s": cfg.z_shared, "i": cfg.z_image})
        self.dec_a = cfg.audio_decoder(cfg.z_shared + cfg.z_audio)
        self.dec_i = ImageDecoder(cfg.z_shared + cfg.z_image)
        self.lik = cfg.likelihoods()
        if cfg.departures.private_label_adv_weight > 0:  # created last: the other modules' initial weights do not change
            self.digit_critic_a = nn.Linear(cfg.z_audio, 10)
            self.digit_critic_i = nn.Linear(cfg.z_image, 10)
        if cfg.departures.speaker_adv_weight > 0:
            if cfg.departures.speaker_classes < 2:
                raise ValueError("speaker_adv_weight needs speaker_classes >= 2 (training fills it in from the shards)")
            self.speaker_critic = nn.Sequential(nn.Linear(cfg.z_shared, SPEAKER_CRITIC_HIDDEN), nn.ReLU(),
                                                nn.Linear(SPEAKER_CRITIC_HIDDEN, cfg.departures.speaker_classes))

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
        cfg, dep = self.cfg, self.cfg.departures
        lengths, x_i = batch["lengths"], batch["image"]
        x_a = batch["audio"][:, : int(lengths.max())]  # extra padding is never read
        x_in = audio_input(batch)  # what the encoders read: x_a, or its SpecAugment-masked copy
        q = self.encode_multimodal(x_in, lengths, x_i)
        z = {k: reparameterize(*q[k]) for k in ("s", "a", "i")}
        nll_a = self.lik.audio(x_a, self.decode_audio(z["s"], z["a"], lengths), lengths)
        nll_i = self.lik.image(x_i, self.decode_image(z["s"], z["i"]))
        kl = {k: kl_std_normal(*q[k]) for k in ("s", "a", "i")}
        qa, qi = self.encode_audio(x_in, lengths), self.encode_image(x_i)
        coh_a, coh_i = coherence(q, qa, "a"), coherence(q, qi, "i")
        mu_a, mu_i = qa["s"][0], qi["s"][0]
        neg = cyclic_derangement(len(mu_a), generator, mu_a.device)
        con = self.contrastive(mu_a, mu_i, neg)
        neg_elbo = nll_a + nll_i + kl["s"] + kl["a"] + kl["i"]
        # the private KLs as the objective counts them (with free bits, never below the floor) minus
        # those in neg_elbo: zero with the paper's objective
        private = kl["a"] + kl["i"]
        if dep.private_free_nats > 0:  # free bits: below the floor a private KL costs nothing
            private = kl["a"].clamp(min=dep.private_free_nats) + kl["i"].clamp(min=dep.private_free_nats)
        extra_kl = private - (kl["a"] + kl["i"])
        total = neg_elbo + extra_kl + cfg.alpha * (coh_a + coh_i) + cfg.beta * con
        m = {"neg_elbo": neg_elbo.mean(), "nll_audio": nll_a.mean(), "nll_image": nll_i.mean(),
             "kl_s": kl["s"].mean(), "kl_a": kl["a"].mean(), "kl_i": kl["i"].mean(),
             "coherence_audio": coh_a.mean(), "coherence_image": coh_i.mean(), "contrastive": con.mean(),
             "nll_audio_per_frame": nll_a.sum() / lengths.sum() / x_a.shape[2]}
        if cfg.objective == "plus":
            gen = self.cross_generate(lengths, qa, qi)
            cross_i = self.lik.image(x_i, gen["image"])
            cross_a = self.lik.audio(x_a, gen["audio"], lengths)
            total = total + dep.cross_weight * (cross_a + cross_i)
            m.update(cross_nll_image=cross_i.mean(), cross_nll_audio=cross_a.mean())
            if dep.private_label_adv_weight > 0:
                adv = self.digit_adversary(batch["label"], z, qa, qi)
                total = total + dep.private_label_adv_weight * (adv["audio"] + adv["image"])
                m.update(digit_critic_audio=adv["audio"].mean(), digit_critic_image=adv["image"].mean(),
                         digit_critic_ce_audio=adv["audio_critic_ce"].mean(),
                         digit_critic_ce_image=adv["image_critic_ce"].mean())
        if dep.speaker_adv_weight > 0:
            adv, critic_ce = self.speaker_adversary(batch["speaker"], (z["s"], reparameterize(*qa["s"])))
            total = total + dep.speaker_adv_weight * adv
            m["speaker_critic_ce"] = critic_ce.mean()
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
        z_i = torch.randn(len(zs_a), self.cfg.z_image, device=zs_a.device, dtype=zs_a.dtype)
        z_a = torch.randn(len(zs_i), self.cfg.z_audio, device=zs_i.device, dtype=zs_i.dtype)
        return {"image": self.decode_image(zs_a, z_i), "audio": self.decode_audio(zs_i, z_a, lengths),
                "z_i": z_i, "z_a": z_a, "zs_audio": zs_a, "zs_image": zs_i}

    def digit_adversary(self, labels: torch.Tensor, z: dict, qa: dict, qi: dict) -> dict[str, torch.Tensor]:
        """Per-item loss of the linear digit critics on the private latents (multimodal sample +
        unimodal sample): their cross-entropy on detached latents (trains the critics) minus the
        frozen critics' cross-entropy clamped at ln 10 (trains the encoders, up to chance level)."""
        ce = nn.functional.cross_entropy
        out = {}
        for key, head, z_mm, q_uni in (("audio", self.digit_critic_a, z["a"], qa["a"]),
                                       ("image", self.digit_critic_i, z["i"], qi["i"])):
            total, critic = 0.0, 0.0
            for zp in (z_mm, reparameterize(*q_uni)):
                frozen = nn.functional.linear(zp, head.weight.detach(), head.bias.detach())
                # the encoder raises the frozen critic's loss up to chance, no further
                push = -ce(frozen, labels, reduction="none").clamp(max=math.log(frozen.shape[-1]))
                loss = ce(head(zp.detach()), labels, reduction="none")
                total, critic = total + loss + push, critic + loss.detach()
            out[key] = total
            out[f"{key}_critic_ce"] = critic / 2  # per read: ln 10 = 2.30 is a critic that only guesses
        return out

    def speaker_adversary(self, speakers: torch.Tensor, reads) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-item loss of the speaker critic on z_s samples (``reads``): its cross-entropy on
        detached samples trains it; the frozen critic's cross-entropy, clamped at chance level
        (ln of the number of classes), is raised by the encoders, and no further.  Also returns the
        critic's mean cross-entropy per read (chance: ln(speaker_classes))."""
        ce = nn.functional.cross_entropy
        first, last = self.speaker_critic[0], self.speaker_critic[2]
        chance = math.log(last.out_features)
        total, critic = 0.0, 0.0
        for zs in reads:
            loss = ce(self.speaker_critic(zs.detach()), speakers, reduction="none")
            h = torch.relu(nn.functional.linear(zs, first.weight.detach(), first.bias.detach()))
            frozen = nn.functional.linear(h, last.weight.detach(), last.bias.detach())
            push = -ce(frozen, speakers, reduction="none").clamp(max=chance)
            total, critic = total + loss + push, critic + loss.detach()
        return total, critic / len(reads)

    def cross_reconstruction(self, x_a, lengths, x_i, qa, qi) -> tuple[torch.Tensor, torch.Tensor]:
        """-log p(x_i | z_s ~ q(z_s|x_a), z_i ~ N(0,I)) and -log p(x_a | z_s ~ q(z_s|x_i), z_a ~ N(0,I)),
        per sample: the private latent is noise, so only the other modality's z_s can carry the digit."""
        gen = self.cross_generate(lengths, qa, qi)
        return self.lik.image(x_i, gen["image"]), self.lik.audio(x_a, gen["audio"], lengths)

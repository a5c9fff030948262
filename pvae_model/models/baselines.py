"""Baselines of the paper's Table 1, built from the PVAE's own modules (spec, "Baselines").

- ``vae-sp`` / ``vae-im``: a plain VAE on one modality; encoder = the PVAE's unimodal encoder of
  that modality, decoder = its decoder; one latent of z_shared + z_style dims (64).
- ``jmvae-kl`` (Suzuki et al. 2017): one latent of z_shared + z_audio + z_image dims (96)
  inferred by a multimodal and two unimodal encoders and decoded by both decoders;
  loss = -ELBO(multimodal) + alpha * sum_m KL(q(z|x_a, x_i) || q(z|x_m)).

Sizes and alpha come from the same ``PVAEConfig`` (the run config's ``pvae`` section), so every
model in a comparison shares one architecture description.  ``encode_audio`` / ``encode_image``
return the single latent under the key ``"s"``, which is what purity is computed on.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modules import GaussianHead, ImageDecoder
from ..modules import audio_input, kl_gauss, kl_std_normal, reparameterize
from .base import FromRun, ModelOutput
from .pvae import PVAEConfig


def _pvae_config(cfg: PVAEConfig | dict) -> PVAEConfig:
    return PVAEConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg


class UnimodalVAE(FromRun, nn.Module):
    """VAE-sp (``modality="audio"``) or VAE-im (``modality="image"``)."""

    run_models = ("vae-sp", "vae-im")

    @classmethod
    def from_config(cls, name: str, cfg: PVAEConfig | dict) -> "UnimodalVAE":
        return cls(_pvae_config(cfg), "audio" if name == "vae-sp" else "image")

    def __init__(self, cfg: PVAEConfig, modality: str):
        super().__init__()
        if modality not in ("audio", "image"):
            raise ValueError(f"modality must be audio or image, got {modality!r}")
        self.cfg, self.modality = cfg, modality
        H = cfg.hidden
        if modality == "audio":
            z = cfg.z_shared + cfg.z_audio
            self.pre = cfg.audio_pre_encoder()
            self.dec = cfg.audio_decoder(z)
        else:
            z = cfg.z_shared + cfg.z_image
            self.pre = cfg.image_pre_encoder()
            self.dec = ImageDecoder(z)
        self.head = GaussianHead(H, z)
        self.lik = cfg.likelihoods()
        # Only with baseline.label_weight > 0, so checkpoints of the paper's baselines keep their keys.
        self.label_head = nn.Linear(z, 10) if cfg.baseline.label_weight > 0 else None

    def encode_audio(self, x_a, lengths):
        if self.modality != "audio":
            raise NotImplementedError("VAE-im has no speech encoder")
        return {"s": self.head(self.pre(x_a, lengths))}

    def encode_image(self, x_i):
        if self.modality != "image":
            raise NotImplementedError("VAE-sp has no image encoder")
        return {"s": self.head(self.pre(x_i))}

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        if self.modality == "audio":
            lengths = batch["lengths"]
            x = batch["audio"][:, : int(lengths.max())]
            mu, lv = self.encode_audio(audio_input(batch), lengths)["s"]
            z = reparameterize(mu, lv)
            nll = self.lik.audio(x, self.dec(z, lengths), lengths)
        else:
            x = batch["image"]
            mu, lv = self.encode_image(x)["s"]
            z = reparameterize(mu, lv)
            nll = self.lik.image(x, self.dec(z))
        kl = kl_std_normal(mu, lv)
        neg_elbo = (nll + kl).mean()
        loss = (nll + self.cfg.baseline.kl_weight * kl).mean()
        m = {"loss": loss, "neg_elbo": neg_elbo, f"nll_{self.modality}": nll.mean(), "kl": kl.mean()}
        if self.label_head is not None:
            logits = self.label_head(z)
            ce = nn.functional.cross_entropy(logits.float(), batch["label"].long())
            loss = loss + self.cfg.baseline.label_weight * ce
            m.update(loss=loss, label_ce=ce, label_acc=(logits.argmax(-1) == batch["label"]).float().mean())
        return ModelOutput(loss, {k: float(v.detach()) for k, v in m.items()})


class JMVAE(FromRun, nn.Module):
    """JMVAE-kl: one joint latent, a multimodal and two unimodal encoders, both decoders."""

    run_models = ("jmvae-kl",)

    @classmethod
    def from_config(cls, name: str, cfg: PVAEConfig | dict) -> "JMVAE":
        return cls(_pvae_config(cfg))

    def __init__(self, cfg: PVAEConfig):
        super().__init__()
        self.cfg = cfg
        H, z = cfg.hidden, cfg.z_shared + cfg.z_audio + cfg.z_image
        self.mm_a, self.mm_i = cfg.audio_pre_encoder(), cfg.image_pre_encoder()
        self.mm_head = GaussianHead(2 * H, z)
        self.uni_a, self.uni_i = cfg.audio_pre_encoder(), cfg.image_pre_encoder()
        self.head_a, self.head_i = GaussianHead(H, z), GaussianHead(H, z)
        self.dec_a, self.dec_i = cfg.audio_decoder(z), ImageDecoder(z)
        self.lik = cfg.likelihoods()

    def encode_audio(self, x_a, lengths):
        return {"s": self.head_a(self.uni_a(x_a, lengths))}

    def encode_image(self, x_i):
        return {"s": self.head_i(self.uni_i(x_i))}

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ModelOutput:
        lengths, x_i = batch["lengths"], batch["image"]
        x_a = batch["audio"][:, : int(lengths.max())]
        x_in = audio_input(batch)
        mu, lv = self.mm_head(torch.cat([self.mm_a(x_in, lengths), self.mm_i(x_i)], dim=-1))
        z = reparameterize(mu, lv)
        nll_a = self.lik.audio(x_a, self.dec_a(z, lengths), lengths)
        nll_i = self.lik.image(x_i, self.dec_i(z))
        kl = kl_std_normal(mu, lv)
        kl_a = kl_gauss(mu, lv, *self.encode_audio(x_in, lengths)["s"])
        kl_i = kl_gauss(mu, lv, *self.encode_image(x_i)["s"])
        neg_elbo = nll_a + nll_i + kl
        loss = (neg_elbo + self.cfg.alpha * (kl_a + kl_i)).mean()
        m = {"loss": loss, "neg_elbo": neg_elbo.mean(), "nll_audio": nll_a.mean(), "nll_image": nll_i.mean(),
             "kl": kl.mean(), "kl_unimodal_audio": kl_a.mean(), "kl_unimodal_image": kl_i.mean()}
        return ModelOutput(loss, {k: float(v.detach()) for k, v in m.items()})


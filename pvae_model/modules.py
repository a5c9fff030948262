"""Building blocks shared by PVAE and its baselines: pre-encoders, Gaussian heads, decoders.

Shapes: audio ``x_a`` is ``[B, T, 80]`` with ``lengths`` ``[B]``; images ``x_i`` are
``[B, 1, 28, 28]`` in [0, 1].

Padding never reaches a loss or an LSTM state: the LSTMs run over the padded batch (5x faster on
CPU than packed sequences) but, being causal, their state at frame t < length depends on real
frames only; the encoder reads each sequence's state at its own last frame and the decoder's
frames past each length are zeroed and never scored (``tests/model/test_model.py`` checks that extra
padding changes neither the loss nor the gradients).
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


AUDIO_INPUT_NORMS = ("none", "utterance")


def masked_utterance_norm(x: torch.Tensor, lengths: torch.Tensor, floor: float = 1e-3, edge: int = 0) -> torch.Tensor:
    """Each padded utterance of ``x`` [B, T, F] minus its own mean over its real frames, divided by
    its own std (per-utterance CMVN, :func:`pvae_model.normalize.normalize_utterance`); padding
    stays 0.  Blind to any per-bin gain and offset: global CMVN, a channel, a speaker's average
    spectrum.  ``edge``: the mean and std leave out each utterance's first and last ``edge`` real
    frames, which are still normalised (``benchmarks/edge_sensitivity.py``: a word's own statistics
    after frames were added at its ends)."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    mask = (t < lengths[:, None]).to(x.dtype).unsqueeze(-1)
    stats, n = mask, lengths.to(x.dtype)[:, None, None].clamp(min=1)
    if edge:
        stats = ((t >= edge) & (t < lengths[:, None] - edge)).to(x.dtype).unsqueeze(-1)
        n = stats.sum(1, keepdim=True).clamp(min=1)
    mean = (x * stats).sum(1, keepdim=True) / n
    var = (((x - mean) * stats).pow(2)).sum(1, keepdim=True) / n
    return (x - mean) / var.sqrt().clamp(min=floor) * mask


class AudioPreEncoder(nn.Module):
    """1-layer LSTM; the hidden state at each sequence's own last frame.

    ``input_norm="utterance"`` (a named architecture departure, ``PVAEConfig.departures.audio_input_norm``):
    the LSTM reads each utterance normalised by its own mean and variance (instance normalisation
    over time), so a new voice's channel and average spectrum never reach it, whatever CMVN was
    applied outside; the decoders still reconstruct the features as given."""

    def __init__(self, feat_dim: int = 80, hidden: int = 512, input_norm: str = "none"):
        super().__init__()
        if input_norm not in AUDIO_INPUT_NORMS:
            raise ValueError(f"audio input norm must be one of {AUDIO_INPUT_NORMS}, got {input_norm!r}")
        self.lstm = nn.LSTM(feat_dim, hidden, batch_first=True)
        self.out_dim = hidden
        self.input_norm = input_norm

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = x[:, : int(lengths.max())]
        if self.input_norm == "utterance":
            x = masked_utterance_norm(x, lengths)
        out, _ = self.lstm(x)
        return out[torch.arange(len(lengths), device=x.device), lengths - 1]


class ImagePreEncoder(nn.Module):
    """Conv 4x4/2 (ReLU) -> Conv 4x4/2 (ReLU) -> FC 512 (the spec's).  Trained on the labels it
    tops out at 98.6-99.0 % on MNIST test (benchmarks/image_encoder_ceiling.py), which caps what a
    k-means read-out of the unimodal image z_s can reach."""

    def __init__(self, channels: tuple[int, int] = (32, 64), out_dim: int = 512):
        super().__init__()
        c1, c2 = channels
        self.net = nn.Sequential(nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),
                                 nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(c2 * 7 * 7, out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)




class GaussianHead(nn.Module):
    """Linear map to the mean and log-variance of a diagonal Gaussian."""

    def __init__(self, in_dim: int, z_dim: int):
        super().__init__()
        self.mu = nn.Linear(in_dim, z_dim)
        self.logvar = nn.Linear(in_dim, z_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h), self.logvar(h)


AUDIO_DECODER_POSITIONS = ("none", "relative")
POSITION_HARMONICS = 3  # sin/cos of pi*k*r for k = 1..3, beside r itself
POSITION_FEATURES = 1 + 2 * POSITION_HARMONICS


def relative_position(lengths: torch.Tensor, t_max: int) -> torch.Tensor:
    """``[B, t_max, POSITION_FEATURES]``: each frame's place in its own utterance,
    r = (t + 0.5) / length in (0, 1), with sin(pi k r) and cos(pi k r); padding frames read r = 1.
    It depends on each utterance's own length only, so extra padding changes nothing."""
    t = torch.arange(t_max, device=lengths.device, dtype=torch.float32)[None, :] + 0.5
    r = (t / lengths.to(torch.float32).clamp(min=1)[:, None]).clamp(max=1.0).unsqueeze(-1)
    k = torch.arange(1, POSITION_HARMONICS + 1, device=lengths.device, dtype=torch.float32)
    return torch.cat([r, torch.sin(math.pi * k * r), torch.cos(math.pi * k * r)], dim=-1)


class AudioDecoder(nn.Module):
    """[z] fed at every step of a 1-layer LSTM; a shared linear layer gives each frame's mean.

    ``position="relative"`` (a named architecture departure, ``PVAEConfig.departures.audio_decoder_position``):
    each step also reads the frame's place in its utterance (:func:`relative_position`), so the
    decoder lays a digit out over whatever length it is asked for; with the paper's constant input
    its LSTM must keep time itself, and a digit generated with a style from the prior gets an
    average time course."""

    def __init__(self, z_dim: int, feat_dim: int = 80, hidden: int = 512, position: str = "none"):
        super().__init__()
        if position not in AUDIO_DECODER_POSITIONS:
            raise ValueError(f"audio decoder position must be one of {AUDIO_DECODER_POSITIONS}, got {position!r}")
        self.position = position
        self.lstm = nn.LSTM(z_dim + (POSITION_FEATURES if position == "relative" else 0), hidden, batch_first=True)
        self.out = nn.Linear(hidden, feat_dim)

    def forward(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[B, max(lengths), feat_dim]``; frames past each length are zero (never scored)."""
        t_max = int(lengths.max())
        inp = z.unsqueeze(1).expand(-1, t_max, -1)
        if self.position == "relative":
            inp = torch.cat([inp, relative_position(lengths, t_max).to(z.dtype)], dim=-1)
        h, _ = self.lstm(inp)
        return self.out(h) * frame_mask(lengths, t_max).unsqueeze(-1)


class ImageDecoder(nn.Module):
    """[z] -> FC 512 (ReLU) -> FC 7*7*16 (ReLU) -> 16x7x7 -> ConvT 4x4/2 8ch (ReLU) -> ConvT 4x4/2 1ch."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(z_dim, 512), nn.ReLU(), nn.Linear(512, 7 * 7 * 16), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(-1, 16, 7, 7))


def frame_mask(lengths: torch.Tensor, t_max: int) -> torch.Tensor:
    return (torch.arange(t_max, device=lengths.device)[None, :] < lengths[:, None]).to(torch.float32)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def kl_std_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(0, I)) per sample, summed over dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def kl_gauss(mu_q: torch.Tensor, lv_q: torch.Tensor, mu_p: torch.Tensor, lv_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, e^lv_q) || N(mu_p, e^lv_p)) per sample, summed over dimensions."""
    return 0.5 * (lv_p - lv_q + (lv_q.exp() + (mu_q - mu_p).pow(2)) / lv_p.exp() - 1.0).sum(-1)


def audio_input(batch: dict) -> torch.Tensor:
    """What the audio encoders read from a batch: its SpecAugment-masked copy ``audio_input`` when
    training made one, else ``audio`` (the reconstruction target), cut to the longest utterance."""
    x = batch.get("audio_input", batch["audio"])
    return x[:, : int(batch["lengths"].max())]


def gaussian_nll_audio(x: torch.Tensor, mean: torch.Tensor, lengths: torch.Tensor,
                       logvar: torch.Tensor | None = None) -> torch.Tensor:
    """-log N(x; mean, I) per sample over the real frames only; with ``logvar`` ``[D]``, the
    variance of each FBank dimension is exp(logvar)."""
    mask = frame_mask(lengths, x.shape[1]).unsqueeze(-1)
    n = lengths.to(x.dtype) * x.shape[2]
    if logvar is None:
        return 0.5 * (((x - mean) * mask).pow(2).sum((1, 2)) + n * LOG_2PI)
    sq = (((x - mean) * mask).pow(2) * torch.exp(-logvar)).sum((1, 2))
    return 0.5 * (sq + n * LOG_2PI + lengths.to(x.dtype) * logvar.sum())


def gaussian_nll_image(x: torch.Tensor, mean: torch.Tensor, std: float | torch.Tensor = 1.0) -> torch.Tensor:
    """-log N(x; mean, std^2 I) per sample (the spec: std = 1; a tensor: a learned one)."""
    n = x[0].numel()
    log_std = torch.log(std) if isinstance(std, torch.Tensor) else math.log(std)
    return 0.5 * ((x - mean).pow(2).flatten(1).sum(-1) / std**2 + n * LOG_2PI) + n * log_std


# A learned log-variance is kept above this (std 0.018): pixels that are always 0 would otherwise
# drive it, and the likelihood, to infinity
MIN_LOGVAR = -8.0


DECODER_VARIANCES = ("fixed", "learned", "optimal")


class Likelihoods(nn.Module):
    """The decoders' Gaussian likelihoods, by ``variance``:

    ``fixed``    the spec's unit variance for FBank and ``image_std`` for pixels (no parameters,
                 so checkpoints keep their keys);
    ``learned``  one log-variance per FBank dimension and one for all pixels, trained with the
                 model from the fixed values (Hsu's FHVAE learns its decoder's variance);
    ``optimal``  the variance that maximises the batch's likelihood, its mean squared error (per
                 FBank dimension; one for all pixels), taken as a constant: the calibrated
                 decoder of Rybkin et al. (2021, "sigma-VAE"), which needs no learning rate.
    """

    def __init__(self, feat_dim: int, image_std: float, variance: str = "fixed"):
        super().__init__()
        if variance not in DECODER_VARIANCES:
            raise ValueError(f"decoder_variance must be one of {DECODER_VARIANCES}, got {variance!r}")
        self.image_std, self.variance = image_std, variance
        if variance == "learned":
            self.audio_logvar = nn.Parameter(torch.zeros(feat_dim))
            self.image_logvar = nn.Parameter(torch.tensor(2 * math.log(image_std)))

    def audio(self, x: torch.Tensor, mean: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.variance == "fixed":
            return gaussian_nll_audio(x, mean, lengths)
        if self.variance == "learned":
            return gaussian_nll_audio(x, mean, lengths, self.audio_logvar.clamp(min=MIN_LOGVAR))
        mask = frame_mask(lengths, x.shape[1]).unsqueeze(-1)
        mse = (((x - mean) * mask).pow(2).sum((0, 1)) / lengths.sum().clamp(min=1)).detach()
        return gaussian_nll_audio(x, mean, lengths, torch.log(mse).clamp(min=MIN_LOGVAR))

    def image(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        if self.variance == "fixed":
            return gaussian_nll_image(x, mean, self.image_std)
        if self.variance == "learned":
            logvar = self.image_logvar
        else:
            logvar = torch.log((x - mean).pow(2).mean()).detach()
        return gaussian_nll_image(x, mean, torch.exp(0.5 * logvar.clamp(min=MIN_LOGVAR)))


def rbf(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """k(u, v) = exp(-||u - v||^2), per row."""
    return torch.exp(-(u - v).pow(2).sum(-1))


def rbf_dist_half(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """k(u, v) = exp(-||u - v|| / 2), per row (pixyz's PVAE contrastive loss).  Its gradient does
    not vanish as u -> v the way exp(-d^2)'s does, so coinciding means are pushed apart from the
    start.  The epsilon keeps the gradient of ||.|| finite at u == v."""
    return torch.exp(-0.5 * torch.sqrt((u - v).pow(2).sum(-1) + 1e-12))

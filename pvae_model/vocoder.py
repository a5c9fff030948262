"""A neural vocoder trained on the corpus: FBank -> STFT magnitude and phase -> inverse STFT.

The architecture is Vocos's (Siuzdenko et al. 2023): a ConvNeXt stack over the FBank frames and
a head that predicts, per frame, the log magnitude and the phase of every STFT bin; the waveform
is their inverse STFT, so the network never generates samples one by one and trains in CPU
minutes.  Vocos adds adversarial losses; this one trains on the reconstruction losses alone (the
Mel L1 of Vocos / HiFi-GAN and the multi-resolution STFT loss of Parallel WaveGAN), which keeps
it one deterministic run of the engine (:mod:`pvae_model.engine`): resumable, seeded, with
``metrics.jsonl``.  Griffin-Lim (:mod:`pvae_model.eval.audio_synth`) stays the fallback.

Frames are aligned as the pipeline's FBank makes them (Kaldi, ``snip_edges``): frame t covers
samples [t * hop, t * hop + window); the inverse STFT is centred, so its sample 0 is the centre of
frame 0, ``window // 2`` samples into the utterance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pvae_data.config import ConfigMixin, check_field_types

VOCODER_CONFIG = "config.yaml"


@dataclass
class VocoderConfig(ConfigMixin):
    """The network's sizes."""

    channels: int = 192
    layers: int = 6
    kernel: int = 7
    n_fft: int = 512  # the STFT the head predicts (hop: the FBank's frame shift)

    def __post_init__(self) -> None:
        check_field_types(self)
        if min(self.channels, self.layers, self.kernel) < 1 or self.kernel % 2 == 0:
            raise ValueError("channels and layers must be >= 1 and kernel an odd number >= 1")
        if self.n_fft < 16 or self.n_fft & (self.n_fft - 1):
            raise ValueError(f"n_fft must be a power of two >= 16, got {self.n_fft}")


class _ConvNeXt(nn.Module):
    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1, self.pw2 = nn.Linear(dim, 3 * dim), nn.Linear(3 * dim, dim)
        self.scale = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x):  # [B, C, T]
        h = self.norm(self.dw(x).transpose(1, 2))
        return x + (self.scale * self.pw2(nn.functional.gelu(self.pw1(h)))).transpose(1, 2)


class Vocoder(nn.Module):
    """``[B, T, n_mels]`` raw log-Mel FBank (as the fbank stage writes it) -> ``[B, samples]``."""

    def __init__(self, cfg: VocoderConfig, fbank: dict, mean=None, std=None):
        super().__init__()
        from pvae_data.fbank import FbankConfig

        self.cfg, self.fbank = cfg, FbankConfig.from_dict(fbank)
        n_mels, self.hop, self.window = self.fbank.num_mel_bins, self.fbank.window_shift, self.fbank.window_size
        if cfg.n_fft < self.window:
            raise ValueError(f"vocoder n_fft {cfg.n_fft} is shorter than the FBank window ({self.window} samples)")
        self.register_buffer("mean", torch.as_tensor(np.zeros(n_mels) if mean is None else mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.ones(n_mels) if std is None else std, dtype=torch.float32))
        self.register_buffer("stft_window", torch.hann_window(cfg.n_fft))
        C = cfg.channels
        self.embed = nn.Conv1d(n_mels, C, cfg.kernel, padding=cfg.kernel // 2)
        self.norm_in = nn.LayerNorm(C)
        self.blocks = nn.ModuleList(_ConvNeXt(C, cfg.kernel) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(C)
        self.head = nn.Linear(C, 2 * (cfg.n_fft // 2 + 1))

    def spectrum(self, fbank: torch.Tensor) -> torch.Tensor:
        """The complex STFT ``[B, n_fft/2 + 1, T]`` the network predicts."""
        x = (fbank - self.mean) / self.std
        h = self.norm_in(self.embed(x.transpose(1, 2)).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            h = block(h)
        log_mag, phase = self.head(self.norm_out(h.transpose(1, 2))).transpose(1, 2).chunk(2, dim=1)
        mag = torch.exp(log_mag.clamp(max=10.0))
        return torch.polar(mag, phase)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """Samples from the centre of frame 0 to the centre of the last frame: ``(T - 1) * hop``."""
        spec = self.spectrum(fbank)
        return torch.istft(spec, self.cfg.n_fft, self.hop, self.cfg.n_fft, self.stft_window, center=True,
                           length=(fbank.shape[1] - 1) * self.hop)

    @torch.no_grad()
    def synthesize(self, fbank: np.ndarray) -> np.ndarray:
        """One utterance's raw FBank ``[T, n_mels]`` -> float32 waveform at the FBank's rate, as
        long as the audio the frames were cut from (half a window of silence at each end)."""
        wave = self.forward(torch.as_tensor(np.asarray(fbank, np.float32))[None])[0].numpy()
        edge = self.window // 2
        return np.concatenate([np.zeros(edge, np.float32), wave, np.zeros(self.window - edge, np.float32)])


# ---- losses ---------------------------------------------------------------------------------

STFT_RESOLUTIONS = ((256, 64), (512, 128), (1024, 256))  # (n_fft, hop), Parallel WaveGAN's


def _magnitude(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=wave.device)
    return torch.stft(wave, n_fft, hop, n_fft, window, center=True, return_complex=True).abs().clamp(min=1e-7)


def multi_resolution_stft_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1, averaged over ``STFT_RESOLUTIONS``."""
    total = 0.0
    for n_fft, hop in STFT_RESOLUTIONS:
        o, t = _magnitude(out, n_fft, hop), _magnitude(target, n_fft, hop)
        total = total + torch.linalg.norm(t - o) / torch.linalg.norm(t) + (t.log() - o.log()).abs().mean()
    return total / len(STFT_RESOLUTIONS)


class MelLoss(nn.Module):
    """L1 between log-Mel spectra of two waveforms, with the pipeline's own Mel filters."""

    def __init__(self, fbank):
        super().__init__()
        from pvae_data.fbank import mel_banks

        self.n_fft, self.hop = fbank.padded_window_size, fbank.window_shift
        self.register_buffer("mel", torch.tensor(mel_banks(fbank).T, dtype=torch.float32))  # [n_mels, bins]

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel @ _magnitude(wave, self.n_fft, self.hop) ** 2 + 1e-5)

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.log_mel(out) - self.log_mel(target)).abs().mean()


class VocoderLoss(nn.Module):
    """The model with its training objective: the engine steps it (``forward(batch)``)."""

    def __init__(self, vocoder: Vocoder, mel_weight: float):
        super().__init__()
        self.vocoder, self.mel_loss, self.mel_weight = vocoder, MelLoss(vocoder.fbank), mel_weight

    def forward(self, batch: dict, generator=None):
        from .models.base import ModelOutput

        out = self.vocoder(batch["fbank"])
        target = batch["wave"]
        mel, stft = self.mel_loss(out, target), multi_resolution_stft_loss(out, target)
        loss = self.mel_weight * mel + stft
        return ModelOutput(loss, {"loss": float(loss.detach()), "mel_l1": float(mel.detach()),
                                  "stft": float(stft.detach())})


def check_fbank(vocoder: Vocoder, fbank: dict, where: str) -> Vocoder:
    """The vocoder, if it was trained on the FBank a model generates; a one-line error otherwise."""
    from pvae_data.fbank import FbankConfig

    mine, theirs = vocoder.fbank.to_dict(), FbankConfig.from_dict(fbank).to_dict()
    diff = [f"{k} {mine[k]} vs {theirs[k]}" for k in mine if k != "dither_seed" and mine[k] != theirs[k]]
    if diff:
        raise ValueError(f"{where}: the vocoder was trained on another FBank ({'; '.join(diff)})")
    return vocoder


def speaking_vocoder(vocoder_run: str | Path | None, fbank: dict) -> Vocoder | None:
    """The trained vocoder of ``vocoder_run``, checked against the model's FBank; None (no run
    given): Griffin-Lim."""
    if not vocoder_run:
        return None
    return check_fbank(load_vocoder(vocoder_run), fbank, str(vocoder_run))


def load_vocoder(run_dir: str | Path, checkpoint: str = "last") -> Vocoder:
    """The trained vocoder of a vocoder run directory (the one checkpoint loader; no pickle)."""
    from .checkpoints import checkpoint_path, load_checkpoint

    from .run import run_kind

    if run_kind(run_dir) != "vocoder":
        raise ValueError(f"{run_dir}: not a vocoder run (`pvae-model vocoder` trains one)")
    ck = load_checkpoint(checkpoint_path(run_dir, checkpoint))
    if ck["config"].get("model") != "vocoder":
        raise ValueError(f"{run_dir} holds a {ck['config'].get('model')} run, not a vocoder")
    return vocoder_from_state(ck["config"], ck["model"])


def vocoder_from_state(config: dict, state: dict) -> Vocoder:
    """A vocoder from its run config (``vocoder``, ``fbank``) and its weights (``vocoder.*`` keys
    of the training module, or bare ones)."""
    state = {k.removeprefix("vocoder."): v for k, v in state.items() if not k.startswith("mel_loss.")}
    model = Vocoder(VocoderConfig.from_dict(config["vocoder"]), config["fbank"])
    model.load_state_dict(state)
    return model.eval()


__all__ = ["Vocoder", "VocoderConfig", "VocoderLoss", "check_fbank", "load_vocoder", "speaking_vocoder", "vocoder_from_state"]

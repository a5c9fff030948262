"""Generated FBank -> a waveform a person can listen to.

With a trained vocoder (``pvae-model vocoder``, :mod:`pvae_model.vocoder`), the vocoder speaks.
Without one, this fallback inverts our own feature pipeline rather than librosa's: undo CMVN, exp, project the Mel
energies back onto the power spectrum with non-negative least squares through *our* Kaldi Mel
matrix (``pvae_data.fbank.mel_banks``), Griffin-Lim with the same FFT size and hop, then undo the
0.97 pre-emphasis and rescale from the int16 scale.
"""

from __future__ import annotations

import numpy as np


def fbank_to_wave(fbank: np.ndarray, fbank_config: dict, cmvn: dict | None = None, n_iter: int = 48,
                  seed: int = 0, vocoder=None) -> np.ndarray:
    """``[T, n_mels]`` (CMVN-normalised if ``cmvn`` is given) -> float32 waveform in [-1, 1]:
    with a trained ``vocoder`` (:class:`pvae_model.vocoder.Vocoder`), its waveform; else
    Griffin-Lim's."""
    import librosa
    import scipy.signal

    from pvae_data.fbank import FbankConfig, mel_banks

    cfg = FbankConfig.from_dict(fbank_config)
    x = np.asarray(fbank, dtype=np.float64)
    if cmvn:
        x = x * np.asarray(cmvn["std"]) + np.asarray(cmvn["mean"])
    if vocoder is not None:
        return _peak(vocoder.synthesize(x.astype(np.float32)).astype(np.float64))
    mel_power = np.exp(x).T  # [n_mels, T], int16-scale power
    basis = mel_banks(cfg).astype(np.float64).T  # [n_mels, n_fft/2 + 1]
    power = _nnls(basis, mel_power)  # [n_fft/2 + 1, T]
    magnitude = np.sqrt(np.maximum(power, 0.0))
    wave = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=cfg.window_shift, win_length=cfg.window_size,
                              n_fft=cfg.padded_window_size, window="hann", center=True,
                              random_state=np.random.default_rng(seed))
    if cfg.preemph_coeff:
        wave = scipy.signal.lfilter([1.0], [1.0, -cfg.preemph_coeff], wave)
    # sample 0 of the centred inverse is the centre of frame 0: pad to the span the frames cover
    edge = cfg.window_size // 2
    return _peak(np.concatenate([np.zeros(edge), wave, np.zeros(cfg.window_size - edge)]))


def _peak(wave: np.ndarray) -> np.ndarray:
    peak = np.abs(wave).max() if len(wave) else 0.0
    return (0.9 * wave / peak if peak > 0 else wave).astype(np.float32)


def _nnls(basis: np.ndarray, target: np.ndarray, iters: int = 200) -> np.ndarray:
    """min ||basis @ p - target|| over p >= 0, for all frames at once (multiplicative updates).

    librosa.util.nnls solves each frame with L-BFGS (~1 min per utterance here); these
    Lee-Seung updates are vectorised over frames and converge well for Mel inversion.
    """
    p = basis.T @ target / np.maximum((basis.T @ basis).sum(1, keepdims=True), 1e-12)
    btb, btt = basis.T @ basis, basis.T @ target
    for _ in range(iters):
        p *= btt / np.maximum(btb @ p, 1e-12)
    return p

"""What a trained model reads, made from a person's own recordings and drawings.

Speech goes through the pipeline's own front end, in the pipeline's order: the VAD trim at the
recording's own rate (``pvae-data trim``), the span resampled to the features' rate with soxr HQ
and Kaldi FBank (``pvae-data fbank``), then the run's CMVN (``TrainConfig.cmvn``). A run trained
with per-speaker CMVN gets per-utterance CMVN here, since one recording carries no speaker
statistics, unless the caller enrols the voice: :meth:`SpeechFrontEnd.enrol` turns several
recordings of one voice into Kaldi's per-speaker statistics (``apply-cmvn --utt2spk``), and
``features(..., voice=...)`` normalises by them.

Images follow MNIST's conventions; what is done to a picture that does not is stated:

* colour -> greyscale by luminance (ITU-R 601); transparency is composited over white (a pen
  stroke on a transparent canvas is ink on paper);
* a dark digit on a light background (the mean of the outer frame above one half) is inverted:
  MNIST's digits are white on black;
* another size is padded to a square with the background and resized to 28 x 28 (antialiased);
  the digit is not re-centred by its centre of mass as MNIST's were;
* 8-bit values are divided by 255 (16-bit by 65535); float arrays must already lie in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_POLICY = {"size": 28, "scale": "1/255", "polarity": "white digit on black (a light background is inverted)",
                "colour": "luminance, ITU-R 601; alpha composited over white", "resize": "pad to square, antialiased"}


class InputError(ValueError):
    """A recording or picture the model cannot read; the message names it and says why."""


@dataclass
class SpeechFrontEnd:
    fbank: dict  # pvae_data.fbank.FbankConfig fields: the audio shards' (index.json features.fbank)
    cmvn_mode: str  # the run's TrainConfig.cmvn
    cmvn: dict | None  # the shards' global mean/std over the training split
    vad: dict  # pvae_data.vad.VadConfig fields the trim stage used
    floor_db: float = 0.0  # the run's TrainConfig.fbank_floor_db (0: none)

    def __post_init__(self) -> None:
        if not (isinstance(self.floor_db, (int, float)) and 0 <= self.floor_db < float("inf")):
            raise InputError(f"floor_db must be a finite number >= 0, got {self.floor_db!r}")

    def features(self, wave: np.ndarray, sample_rate: int, name: str = "audio",
                 voice: dict | None = None) -> torch.Tensor:
        """A waveform (float in [-1, 1], or int16) -> the ``[T, D]`` features the model reads;
        ``voice``: statistics of the speaker's voice (:meth:`enrol`), for a per-speaker CMVN run."""
        return self.normalise(self.raw_features(wave, sample_rate, name), voice)

    def normalise(self, feats: np.ndarray, voice: dict | None = None) -> torch.Tensor:
        """Raw FBank -> the run's CMVN; a per-speaker run without ``voice`` normalises per utterance."""
        from .data import normalize_features

        if voice is None:
            mode = "utterance" if self.cmvn_mode == "speaker" else self.cmvn_mode
            return torch.from_numpy(normalize_features(feats, mode, self.cmvn, self.floor_db))
        if self.cmvn_mode != "speaker":
            raise InputError(f"voice statistics need a run trained with cmvn: speaker (this one: {self.cmvn_mode})")
        dims = {len(np.atleast_1d(voice.get(k, []))) for k in ("mean", "std")}
        if dims != {feats.shape[1]} or not np.all(np.asarray(voice["std"]) > 0):
            raise InputError(f"voice statistics must hold {feats.shape[1]} means and positive stds "
                             "(from enrol on this model)")
        return torch.from_numpy(normalize_features(feats, "global", voice))

    def enrol(self, recordings: list) -> tuple[dict | None, list[str]]:
        """Several recordings of one voice (paths, or ``(wave, sample_rate)`` pairs) -> its per-speaker
        statistics ``{"mean", "std", "frames", "takes"}`` over all their trimmed frames, and one
        line per recording left out (its name and why). Fewer than ``MIN_SPEAKER_FRAMES`` frames in
        all (about three words) -> ``None``: the stated fallback, per utterance, as training has it."""
        from pvae_data.stages.fbank import _mean_std

        from .data import MIN_SPEAKER_FRAMES

        if self.cmvn_mode != "speaker":
            raise InputError(f"enrolling a voice needs a run trained with cmvn: speaker "
                             f"(this one: {self.cmvn_mode}; it reads each recording alone)")
        n, s1, s2, takes, left_out = 0, 0.0, 0.0, 0, []
        for k, rec in enumerate(recordings):
            try:
                if isinstance(rec, (str, Path)):
                    x = self._read_raw(rec)
                elif isinstance(rec, tuple) and len(rec) == 2:
                    x = self.raw_features(rec[0], rec[1], f"recording {k}")
                else:
                    raise InputError(f"recording {k}: give a path or a (wave, sample_rate) pair")
                x = x.astype(np.float64)
            except InputError as e:
                left_out.append(str(e))
                continue
            n, s1, s2, takes = n + len(x), s1 + x.sum(0), s2 + (x * x).sum(0), takes + 1
        if n < MIN_SPEAKER_FRAMES:
            return None, left_out
        mean, std = _mean_std(n, s1, s2)
        return {"mean": mean, "std": std, "frames": n, "takes": takes}, left_out

    def raw_features(self, wave: np.ndarray, sample_rate: int, name: str = "audio") -> np.ndarray:
        """A waveform -> trimmed, resampled Kaldi FBank ``[T, D]``, before any normalisation."""
        from pvae_data.fbank import FbankConfig, compute_fbank
        from pvae_data.vad import NoSpeechError, VadConfig, trim_bounds

        wave = _int16_scale(wave, name)
        if not 1000 <= int(sample_rate) <= 768_000:
            raise InputError(f"{name}: implausible sample rate {sample_rate} Hz")
        try:
            a, b = trim_bounds(wave, int(sample_rate), VadConfig.from_dict(self.vad))
        except NoSpeechError as e:
            raise InputError(f"{name}: no speech found ({e.reason})") from None
        fcfg = FbankConfig.from_dict(self.fbank)
        span = wave[a:b]
        if int(sample_rate) != fcfg.sample_rate:
            import soxr

            span = soxr.resample(span, int(sample_rate), fcfg.sample_rate, quality="HQ").astype(np.float32)
        feats = compute_fbank(span, fcfg)
        if len(feats) < 2:
            raise InputError(f"{name}: the speech found is shorter than two frames")
        return feats

    def read(self, path: str | Path, voice: dict | None = None) -> torch.Tensor:
        """A sound file (any format libsndfile reads) -> features; one-line errors name the file."""
        return self.normalise(self._read_raw(path), voice)

    def _read_raw(self, path: str | Path) -> np.ndarray:
        from pvae_data.audio import AudioError, load_audio

        try:
            wave, rate = load_audio(path)
        except AudioError as e:
            raise InputError(str(e)) from None
        wave = wave / np.float32(32768.0)  # load_audio's int16 scale -> [-1, 1]
        return self.raw_features(wave, rate, str(path))


def _int16_scale(wave, name: str) -> np.ndarray:
    x = np.asarray(wave)
    if x.dtype == np.int16:
        x = x.astype(np.float32)
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32) * np.float32(32768.0)
    else:
        raise InputError(f"{name}: samples must be float in [-1, 1] or int16, got {x.dtype}")
    if x.ndim == 2:  # (samples, channels), as soundfile reads: downmix as the pipeline does
        x = x.mean(axis=1, dtype=np.float64).astype(np.float32)
    if x.ndim != 1 or x.size == 0:
        raise InputError(f"{name}: expected a mono or (samples, channels) waveform, got shape {np.shape(wave)}")
    if not np.isfinite(x).all():
        raise InputError(f"{name}: non-finite samples")
    return x


def image_tensor(image, name: str = "image") -> tuple[torch.Tensor, list[str]]:
    """A picture (H x W grey, H x W x 3/4 colour; uint8, uint16 or float in [0, 1]) -> ``[1, 28, 28]``
    in [0, 1], white digit on black, and the list of what was done to it (empty for an MNIST digit)."""
    x = np.asarray(image)
    done = []
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype == np.uint16:
        x = x.astype(np.float32) / 65535.0
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise InputError(f"{name}: float pixels must lie in [0, 1]")
        x = x.astype(np.float32)
    else:
        raise InputError(f"{name}: unsupported pixel type {x.dtype}")
    if x.ndim == 3 and x.shape[2] in (3, 4):
        if x.shape[2] == 4:
            alpha = x[..., 3:4]
            x = x[..., :3] * alpha + (1.0 - alpha)
            done.append("transparency composited over white")
        x = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
        done.append("colour converted to grey")
    elif x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    if x.ndim != 2 or min(x.shape) < 8:
        raise InputError(f"{name}: expected a greyscale or colour picture of at least 8 x 8 pixels, got shape {np.shape(image)}")
    if x.max() - x.min() < 0.05:
        raise InputError(f"{name}: blank picture (no digit)")
    frame = np.concatenate([x[:2].ravel(), x[-2:].ravel(), x[:, :2].ravel(), x[:, -2:].ravel()])
    if frame.mean() > 0.5:
        x = 1.0 - x
        done.append("inverted (dark digit on a light background)")
    if x.shape != (28, 28):
        done.append(f"resized from {x.shape[1]}x{x.shape[0]} to 28x28")
        x = _resize_square(x, 28)
    return torch.from_numpy(np.clip(x, 0, 1).astype(np.float32))[None], done


def _resize_square(x: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = x.shape
    side = max(h, w)
    sq = np.zeros((side, side), np.float32)  # the background, after any inversion, is black
    sq[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = x
    img = Image.fromarray((sq * 255).round().astype(np.uint8)).resize((size, size), Image.LANCZOS)
    return np.asarray(img, np.float32) / 255.0


def read_image(source, name: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """A picture (PNG, JPEG, anything Pillow reads; a path or a binary file object) ->
    ``image_tensor``; one-line errors naming ``name`` (the path by default)."""
    from PIL import Image, UnidentifiedImageError

    path = name or str(source)
    try:
        with Image.open(source) as img:
            if img.width * img.height > 4096 * 4096:
                raise InputError(f"{path}: {img.width}x{img.height} pixels is not a digit")
            if img.mode in ("P", "LA", "PA", "1", "CMYK", "YCbCr", "HSV"):
                img = img.convert("RGBA" if "A" in img.mode or img.mode == "P" else "L")
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: not a readable picture ({str(e).splitlines()[0][:100] if str(e) else type(e).__name__})") from None
    if arr.dtype == np.int32 or arr.dtype == np.uint32:  # 'I' mode
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    return image_tensor(arr, path)

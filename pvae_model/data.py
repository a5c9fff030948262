"""Training data: spoken digits paired on the fly, every epoch, with written digits of the same label.

Audio comes from ``pvae_data`` audio shards (normalised with the global CMVN statistics the
fbank stage saved), images from image shards (pixels / 255).  Both are held in memory (FSDD +
MNIST is ~90 MB); batches are length-bucketed so padding stays small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pvae_data.perturb import base_speaker
from pvae_data.shards.reader import AudioShards, BucketBatchSampler, ImageShards


@dataclass
class AudioSet:
    feats: list[torch.Tensor]  # normalised [T, D] float32
    lengths: np.ndarray
    labels: np.ndarray
    keys: list[str]
    speakers: list[str]
    cmvn_fallback: list = field(default_factory=list)  # "speaker" CMVN: speakers normalised per utterance
    raw: list | None = None  # raw FBank [T, D], when kept (load_audio_split(keep_raw=True))
    norms: list | None = None  # with raw: None (per-utterance CMVN) or the (mean, std) each utterance used


# "speaker" CMVN needs this many frames (~3 s of speech, 5-10 digits) of a speaker's statistics;
# fewer: that speaker's utterances are normalised per utterance (docs/voices.md, "What a new voice needs")
MIN_SPEAKER_FRAMES = 300


def load_audio_split(shards_dir: str | Path, split: str, cmvn: dict | None = None, mode: str = "global",
                     min_speaker_frames: int = MIN_SPEAKER_FRAMES, keep_raw: bool = False,
                     floor_db: float = 0.0) -> AudioSet:
    """All utterances of a split, CMVN-normalised: ``mode`` "global" with the global train-split
    stats from the shards (or ``cmvn``), "utterance" with each utterance's own mean and variance,
    "speaker" with its speaker's (Kaldi's ``apply-cmvn --utt2spk``; the shards' per-speaker stats,
    over every split).  A speaker with fewer than ``min_speaker_frames`` frames of statistics falls
    back to per-utterance CMVN, and is listed in the set's ``cmvn_fallback`` (never a silent global
    default).  ``keep_raw``: the raw FBank and each utterance's normalisation are kept too (what
    noise added in training needs, ``pvae_model.noise``; with ``floor_db``, the floored FBank).
    ``floor_db``: ``TrainConfig.fbank_floor_db`` (:func:`normalize_features`)."""
    from .normalize import floor_fbank

    s = AudioShards(shards_dir, split)
    stats = cmvn if cmvn is not None else (s.cmvn or {}).get("global")
    per = ((s.cmvn or {}).get("speakers") or {}) if mode == "speaker" else {}
    fallback: list[str] = []
    feats, raw, norms = [], [], []
    for i in range(len(s)):
        one_mode, one_stats = mode, stats
        if mode == "speaker":
            st = per.get(s.speakers[i])
            if st is None or st.get("frames", 0) < min_speaker_frames:
                if s.speakers[i] not in fallback:
                    fallback.append(s.speakers[i])
                one_mode, one_stats = "utterance", None
            else:
                one_mode, one_stats = "global", st
        x = floor_fbank(s[i].feats, floor_db)
        feats.append(torch.from_numpy(normalize_features(x, one_mode, one_stats)))
        if keep_raw:
            raw.append(torch.from_numpy(np.asarray(x, np.float32)))
            norms.append(None if one_mode == "utterance" else _affine(one_stats, x.shape[1]))
    return AudioSet(feats, np.asarray(s.lengths), np.asarray(s.labels), list(s.keys), list(s.speakers),
                    sorted(fallback), raw if keep_raw else None, norms if keep_raw else None)


def _affine(stats: dict | None, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean = np.asarray(stats["mean"], np.float32) if stats else np.zeros(dim, np.float32)
    std = np.asarray(stats["std"], np.float32) if stats else np.ones(dim, np.float32)
    return torch.from_numpy(mean), torch.from_numpy(std)


def normalize_features(feats: np.ndarray, mode: str, stats: dict | None, floor_db: float = 0.0) -> np.ndarray:
    """Raw FBank ``[T, D]`` -> what a model reads: "global" CMVN (``stats``' mean/std; none: as is)
    or per-"utterance" mean and variance (nothing needed but the utterance: a new voice's first
    word is normalised like every training word).  "speaker": :func:`load_audio_split` picks the
    speaker's stats and passes them here as "global".  ``floor_db``: the run's
    ``TrainConfig.fbank_floor_db``, applied first (:func:`pvae_model.normalize.floor_fbank`)."""
    from .normalize import CMVN_MODES, floor_fbank, normalize_utterance

    if mode not in CMVN_MODES:
        raise ValueError(f"cmvn must be one of {', '.join(CMVN_MODES)}, got {mode!r}")
    feats = floor_fbank(feats, floor_db)
    if mode == "utterance":
        return normalize_utterance(feats)
    if mode == "speaker":
        raise ValueError("speaker CMVN needs the speaker's statistics: load_audio_split(mode='speaker')")
    mean = np.asarray(stats["mean"], np.float32) if stats else 0.0
    std = np.asarray(stats["std"], np.float32) if stats else 1.0
    return ((feats - mean) / std).astype(np.float32, copy=False)


@dataclass
class ImageSet:
    images: torch.Tensor  # [N, 1, 28, 28] float32 in [0, 1]
    labels: np.ndarray
    keys: list[str]


def load_image_split(shards_dir: str | Path, split: str) -> ImageSet:
    s = ImageShards(shards_dir, split)
    imgs = torch.from_numpy(s.all_images().astype(np.float32) / 255.0).unsqueeze(1)
    return ImageSet(imgs, np.asarray(s.labels), list(s.keys))


def base_speakers(speakers) -> list[str]:
    """The distinct base speakers of a list of utterance speakers, sorted."""
    return sorted({base_speaker(s) for s in speakers})


def pad_audio(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(f) for f in feats], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths


def pair_images(audio_labels: np.ndarray, image_labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each spoken digit, the index of a random written digit with the same label."""
    by_label = {c: np.flatnonzero(image_labels == c) for c in np.unique(audio_labels)}
    out = np.empty(len(audio_labels), dtype=np.int64)
    for c, idx in by_label.items():
        if len(idx) == 0:
            raise ValueError(f"no image of label {c} to pair with")
        where = np.flatnonzero(audio_labels == c)
        out[where] = idx[rng.integers(0, len(idx), size=len(where))]
    return out


class PairedEpochs:
    """``batches(epoch)``: a new seeded pairing and a new bucketed batch order every epoch.

    With ``rank``/``world_size`` (DDP), each process takes every world_size-th batch of the
    same global order, so the union over ranks is the single-process epoch.
    """

    def __init__(self, audio: AudioSet, images: ImageSet, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1,
                 spec_augment=None, fbank=None, noise=None, utterance_cmvn_prob: float = 0.0):
        self.audio, self.images = audio, images
        self.utterance_cmvn_prob = utterance_cmvn_prob  # TrainConfig.cmvn_utterance_prob
        self.fbank = fbank  # the features' FbankConfig: what a SpecAugment warp of the Mel axis needs
        self.spec_augment = spec_augment if spec_augment is not None and spec_augment.enabled else None
        if self.spec_augment is not None:
            self.spec_augment.check_features(int(audio.feats[0].shape[1]) if audio.feats else 0)
            shortest = int(np.min(audio.lengths)) if len(audio.lengths) else 0
            if self.spec_augment.time_masks and self.spec_augment.time_width > shortest:
                raise ValueError(f"spec_augment.time_width {self.spec_augment.time_width} is wider than the shortest "
                                 f"training utterance ({shortest} frames)")
        self.noise = noise if noise is not None and noise.enabled else None
        if self.noise is not None:
            from .noise import bin_centres, noise_bank

            if audio.raw is None or fbank is None:
                raise ValueError("noise needs the raw FBank (load_audio_split(keep_raw=True)) and its fbank configuration")
            self.noise_bank, self.noise_centres = noise_bank(fbank), bin_centres(fbank)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # each utterance's training speaker as an index (base speakers: sp0.9-george is george),
        # for a speaker critic; the order is the sorted names (base_speakers())
        names = base_speakers(audio.speakers)
        self.speaker_ids = np.asarray([names.index(base_speaker(s)) for s in audio.speakers], dtype=np.int64)
        self.sampler = BucketBatchSampler(audio.lengths, batch_size, shuffle=True, seed=seed)

    def pairing(self, epoch: int) -> np.ndarray:
        return pair_images(self.audio.labels, self.images.labels, np.random.default_rng([self.seed, epoch, 1]))

    def num_batches(self) -> int:
        return len(range(self.rank, len(self.sampler), self.world_size))

    def batches(self, epoch: int) -> Iterator[dict]:
        self.sampler.set_epoch(epoch)
        pairs = self.pairing(epoch)
        all_batches = self.sampler.batches()
        for n in range(self.rank, len(all_batches), self.world_size):
            b = all_batches[n]
            x_a, lengths = pad_audio([self.audio.feats[i] for i in b])
            batch = {"audio": x_a, "lengths": lengths, "image": self.images.images[pairs[b]],
                     "label": torch.from_numpy(self.audio.labels[b]), "speaker": torch.from_numpy(self.speaker_ids[b])}
            x_in = x_a
            if self.noise is not None:  # seeded like the masks; the encoders read the noisy copy
                x_in = self._noisy(x_a, lengths, b, self._generator(epoch, 5, n))
                batch["audio_input"] = x_in
            if self.utterance_cmvn_prob:  # a share of the encoders' inputs normalised per utterance
                x_in = self._per_utterance(x_in, lengths, self._generator(epoch, 6, n))
                batch["audio_input"] = x_in
            if self.spec_augment is not None:  # seeded by (seed, epoch, global batch): the same under DDP and on resume
                from .augment import spec_augment

                batch["audio_input"] = spec_augment(x_in, lengths, self.spec_augment, self._generator(epoch, 4, n),
                                                    self.fbank)  # encoders read it;
                # reconstruction targets stay the clean "audio" (a denoising objective, as SpecAugment
                # is an input augmentation, not a change of what the decoder must produce)
            yield batch

    def _generator(self, epoch: int, stream: int, batch: int) -> torch.Generator:
        seed = int(np.random.default_rng([self.seed, epoch, stream, batch]).integers(2**62))
        return torch.Generator().manual_seed(seed)

    def _noisy(self, x_a: torch.Tensor, lengths: torch.Tensor, items, g: torch.Generator) -> torch.Tensor:
        """The batch's normalised features with noise added to a share of its utterances."""
        from .noise import add_noise, renormalise

        raw, _ = pad_audio([self.audio.raw[i] for i in items])
        noisy, hit = add_noise(raw, lengths, self.noise, g, self.noise_bank, self.noise_centres)
        noisy = renormalise(noisy, lengths, [self.audio.norms[i] for i in items])
        return torch.where(hit[:, None, None], noisy, x_a)

    def _per_utterance(self, x: torch.Tensor, lengths: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``x`` with each utterance, with probability ``utterance_cmvn_prob``, normalised by its own
        mean and variance.  Per-bin mean and variance normalisation undoes any per-bin affine map,
        so normalising the speaker-normalised features gives what the raw ones would (what a single
        WAV of a new voice gets at test time)."""
        from .noise import renormalise

        hit = (torch.rand(len(x), generator=g) < self.utterance_cmvn_prob).nonzero().flatten()
        out = x.clone()
        out[hit] = renormalise(x[hit], lengths[hit], [None] * len(hit))  # None: the utterance's own statistics
        return out

    def padding_fraction(self) -> float:
        return self.sampler.padding_fraction()

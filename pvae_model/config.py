"""The training run's config: one typed dataclass, saved as ``RUN_DIR/config.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pvae_data.config import ConfigMixin, check_field_types, merge_config

from .augment import SpecAugmentConfig
from .models import MODALITIES
from .models.pvae import PVAEConfig
from .noise import NoiseConfig


@dataclass
class TrainConfig(ConfigMixin):
    audio_shards: str = "exp/shards/audio"
    image_shards: str = "exp/shards/images"
    model: str = "pvae"
    pvae: PVAEConfig = field(default_factory=PVAEConfig)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple = (0.95, 0.999)
    eps: float = 1e-8
    grad_clip: float = 0.0  # 0 = off
    seed: int = 0
    eval_every: int = 5  # quick z_s purity on the test split every N epochs (0 = never)
    eval_images: int = 2000  # test images used by the quick purity (all in `pvae-model evaluate`)
    # PVAE only: the quick evaluation also judges generations (coherence with prior and reference
    # style, own reconstructions) on eval_coherence_images test images and every spoken test digit,
    # with the cached judge classifiers (trained once per dataset before the clock starts).
    eval_coherence: bool = True
    eval_coherence_images: int = 300
    device: str = "cpu"
    bf16: bool = True  # autocast to bfloat16 on CUDA
    num_threads: int = 0  # torch intra-op threads (0 = torch's default)
    max_minutes: float = 0.0  # stop cleanly after this much training time (0 = no limit)
    # Audio shards without global CMVN statistics would be trained on raw FBank (losses ~30x
    # larger, a different model): refused unless this says it is meant.
    allow_no_cmvn: bool = False
    # A second stage on a trained run: init_from names a run directory (its checkpoints/last.pt)
    # or a checkpoint whose weights start this run, and train_only the model's top-level modules
    # that train (the others are frozen: no gradient, no update). Empty: from scratch, all train.
    init_from: str = ""
    train_only: list = field(default_factory=list)
    # Experiments that were not kept (ConfigMixin.retired): shifted training images and a moving
    # average of the weights (docs/study/pvae.md, "What raises the ceiling"; docs/voices.md); noise
    # floors around the words the speech encoders read (edge_floor; docs/study/voices.md, "The long
    # floors for the encoders only"); the edge floors left out of the speech reconstruction
    # (edge_pad_manifest; docs/study/voices.md, "Floors the decoders skip"); the speech decoder told
    # where the word lies between the edge floors (word_span_manifest; "The decoder told where the word lies").
    retired = {"image_shift": 0, "ema_decay": 0.0,
               "edge_floor": {"prob": 0.0, "max_frames": 15, "db_min": 35.0, "db_max": 120.0},
               "edge_pad_manifest": "", "word_span_manifest": ""}
    retired_note = ("docs/study/pvae.md and docs/study/voices.md have the study; commit 3468425 has the code "
                    "(edge_floor: commit c3c4aef; edge_pad_manifest: commit 6d98394; "
                    "word_span_manifest: commit f97011d)")
    # Training departures from the paper's procedure, each named by deviations().
    # Speaker robustness (docs/voices.md):
    # cmvn: how FBank is normalised for the model: "global" (the shards' train-split mean/std, the
    #   paper's setting), "utterance" (each utterance's own mean and variance: a new voice's
    #   channel and average spectrum are removed from its first word on) or "speaker" (Kaldi's
    #   apply-cmvn --utt2spk with the shards' per-speaker stats; a speaker with fewer than
    #   pvae_model.data.MIN_SPEAKER_FRAMES frames falls back to "utterance", and is named in the log
    #   and in eval/metrics.json).
    # spec_augment: time and frequency masks on the training utterances (Park et al. 2019).
    # noise: synthetic noise added to a share of the training utterances' FBank, every epoch anew
    #   (pvae_model.noise; the encoders read the noisy copy, the decoders the clean one).
    # cmvn_utterance_prob: with cmvn "speaker", the share of training utterances (drawn every epoch
    #   anew) whose encoder input is normalised by the utterance's own statistics instead of its
    #   speaker's; the decoders still reconstruct the speaker-normalised features. An experiment:
    #   one model for a voice that has given many words (speaker stats) and one that has given one.
    # fbank_floor_db: every utterance's FBank raised to at least this many dB below its loudest value
    #   before the CMVN (0 = off; pvae_model.normalize.floor_fbank), in training and wherever the run
    #   reads speech. Needs cmvn: utterance (the shards' statistics are of FBank without the floor).
    cmvn: str = "global"
    cmvn_utterance_prob: float = 0.0
    fbank_floor_db: float = 0.0
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def __post_init__(self) -> None:
        for name, cls in (("pvae", PVAEConfig), ("spec_augment", SpecAugmentConfig), ("noise", NoiseConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls.from_dict(value))
            elif not isinstance(value, cls):
                raise ValueError(f"{name} must be a mapping of {cls.__name__} fields "
                                 f"(e.g. --set {name}.FIELD=VALUE), got {value!r}")
        from .normalize import CMVN_MODES

        if self.cmvn not in CMVN_MODES:
            raise ValueError(f"cmvn must be one of {', '.join(CMVN_MODES)}, got {self.cmvn!r}")
        check_field_types(self)
        if not 0 <= self.cmvn_utterance_prob <= 1:
            raise ValueError(f"cmvn_utterance_prob must be in [0, 1], got {self.cmvn_utterance_prob}")
        if self.cmvn_utterance_prob and self.cmvn != "speaker":
            raise ValueError(f"cmvn_utterance_prob needs cmvn: speaker (got cmvn: {self.cmvn})")
        if self.fbank_floor_db < 0 or (self.fbank_floor_db and self.cmvn != "utterance"):
            raise ValueError(f"fbank_floor_db must be >= 0 and needs cmvn: utterance (the shards' statistics are "
                             f"of FBank without the floor); got {self.fbank_floor_db} with cmvn: {self.cmvn}")
        self.betas = tuple(self.betas)
        if self.model not in MODALITIES:
            raise ValueError(f"unknown model {self.model!r} (available: {', '.join(MODALITIES)})")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError("epochs >= 1, batch_size >= 2 and lr > 0 are required")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1) (Adam's), got {list(self.betas)}")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        for name in ("num_threads", "eval_every", "grad_clip", "max_minutes", "seed", "eval_coherence_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not all(isinstance(n, str) and n for n in self.train_only):
            raise ValueError(f"train_only must be a list of module names, got {self.train_only!r}")
        if self.eval_images < 10:
            raise ValueError(f"eval_images must be >= 10 (one per digit at least), got {self.eval_images}")
        import re

        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")

    def deviations(self) -> dict:
        """The model's departures from the paper's objective (``PVAEConfig.deviations``) and the
        training procedure's (normalisation, augmentation): what metrics and the report name."""
        out = self.pvae.deviations(self.model)
        if self.model != "vae-im":
            if self.cmvn != "global":
                out["cmvn"] = self.cmvn
            if self.cmvn_utterance_prob:
                out["cmvn_utterance_prob"] = self.cmvn_utterance_prob
            if self.fbank_floor_db:
                out["fbank_floor_db"] = self.fbank_floor_db
            if self.spec_augment.enabled:
                out["spec_augment"] = self.spec_augment.to_dict()
            if self.noise.enabled:
                out["noise"] = self.noise.to_dict()
        if self.train_only:
            out["train_only"] = list(self.train_only)
        return out


def load_config(path: str | Path | None, overrides: dict | None = None) -> TrainConfig:
    """YAML file (optional) + ``{"epochs": 3, "pvae.beta": 0}``-style overrides."""
    return TrainConfig.from_dict(merge_config(path, overrides))

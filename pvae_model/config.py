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
    # Training departures from the paper's procedure (each named by deviations()):
    # image_shift: every training image (paired and extra views) moved by a random whole-pixel
    #   offset of up to this many pixels, redrawn each epoch (MNIST's classic augmentation; 0 = off).
    # ema_decay: the model a run delivers (checkpoints' weights for evaluate, the quick evaluation)
    #   is an exponential moving average of the trained weights (Polyak averaging; 0 = off).
    image_shift: int = 0
    ema_decay: float = 0.0
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
    cmvn: str = "global"
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
        if self.eval_images < 10:
            raise ValueError(f"eval_images must be >= 10 (one per digit at least), got {self.eval_images}")
        import re

        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not 0 <= self.image_shift <= 7:
            raise ValueError(f"image_shift must be in [0, 7] pixels, got {self.image_shift}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def deviations(self) -> dict:
        """The model's departures from the paper's objective (``PVAEConfig.deviations``) and the
        training procedure's (augmentation, weight averaging): what metrics and the report name."""
        out = self.pvae.deviations(self.model)
        if self.image_shift and self.model != "vae-sp":
            out["image_shift"] = self.image_shift
        if self.ema_decay:
            out["ema_decay"] = self.ema_decay
        if self.model != "vae-im":
            if self.cmvn != "global":
                out["cmvn"] = self.cmvn
            if self.spec_augment.enabled:
                out["spec_augment"] = self.spec_augment.to_dict()
            if self.noise.enabled:
                out["noise"] = self.noise.to_dict()
        return out


def load_config(path: str | Path | None, overrides: dict | None = None) -> TrainConfig:
    """YAML file (optional) + ``{"epochs": 3, "pvae.beta": 0}``-style overrides."""
    return TrainConfig.from_dict(merge_config(path, overrides))

"""PVAE's config: the paper's fields, and the departures this project keeps, in one sub-config.

``PVAEConfig`` holds what ``shared/docs/pvae-spec.md`` describes (sizes, the objective's weights,
the kernel) with the spec's defaults.  ``Departures`` holds each change this project made and
kept because a measured study showed it helps (``docs/study/pvae.md``, ``docs/voices.md``); its
defaults are the paper's, so ``PVAEConfig()`` is the paper's model.  ``BaselineVAEConfig`` holds
what only the single-modality baselines VAE-sp / VAE-im read.  ``deviations()`` and
``size_changes()`` name every value that departs from the paper: runs save them, metrics and the
report print them.

Old run configs (flat fields, and the knobs of experiments that were not kept) are read by
:meth:`PVAEConfig.from_dict`; nothing else accepts the old spellings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from pvae_data.config import ConfigMixin, check_field_types

from ..modules import AUDIO_DECODER_POSITIONS, AUDIO_INPUT_NORMS, DECODER_VARIANCES
from ..modules import AudioDecoder, AudioPreEncoder, ImagePreEncoder, Likelihoods

MAX_WIDTH = 8192  # 16x the paper's 512-cell LSTMs: anything wider is a typo, not a model
OBJECTIVES = ("paper", "plus")
KERNEL_NAMES = ("sqdist", "dist_half")


@dataclass
class Departures(ConfigMixin):
    """Every kept change to the paper's model; the defaults are the paper's."""

    # Experiments that were not kept (docs/study/pvae.md): cross_grad "decoders" (plus_dec), a
    # heavier private KL (plus_klp3; free bits replaced it), the delayed adversary, the deeper image
    # encoder (benchmarks/image_encoder_ceiling.py).  The adversary's "reverse" and "confusion"
    # modes left too (``from_dict``): "capped" is the only one.  A supervised digit head on z_s
    # (docs/study/voices.md, "A digit head on z_s") left later; commit 91eab0d has it.  The speech
    # pre-encoders' mean over frames (audio_encoder_pool "mean") and dropout on their read-out
    # (audio_encoder_dropout) left next (docs/voices.md; commit 98faed1), then cepstra in place of the
    # Mel bins as their input (audio_input_cepstra; commit d1ac7b1), then an attentive read-out over
    # frames (audio_encoder_readout "attention"; commit 640ff34), then low frame rate input, runs of k
    # frames per LSTM step (audio_frame_stack; commit e2f6a81), then a convolution over (frame, Mel bin)
    # pooled across the bins in front of their LSTMs (audio_front "freq_conv"; commit 49b12ea), then a
    # pull between the speech z_s posteriors of two SpecAugment draws of each word
    # (audio_view_consistency; commit 4f01be7).
    retired = {"cross_grad": "all", "kl_private_weight": 1.0, "private_adv_start": 0, "image_encoder": "spec",
               "shared_label_weight": 0.0, "audio_encoder_pool": "last",
               "audio_encoder_dropout": 0.0, "audio_input_cepstra": 0, "audio_encoder_readout": "last",
               "audio_frame_stack": 1, "audio_front": "none",
               "audio_view_consistency": 0.0}
    retired_note = ("docs/study/pvae.md and docs/study/voices.md have the studies; commit 4cec2c8 has the code, "
                    "91eab0d that of shared_label_weight, 98faed1 that of audio_encoder_pool and audio_encoder_dropout, "
                    "d1ac7b1 that of audio_input_cepstra, 640ff34 that of audio_encoder_readout, "
                    "e2f6a81 that of audio_frame_stack, 49b12ea that of audio_front, "
                    "4f01be7 that of audio_view_consistency")
    key_prefix = "pvae.departures."

    # Std of the image likelihood N(x_i; mean, std^2 I). The spec's 1 makes a whole 28x28 image in
    # [0, 1] worth ~30 nats against thousands for a spoken digit.
    image_nll_std: float = 1.0
    # objective "plus": weight of the two cross-modal reconstruction terms (they train the
    # decoders and the unimodal z_s encoders).
    cross_weight: float = 1.0
    # objective "plus": a *supervised* adversary on the private latents.  A linear digit classifier
    # per modality reads z_a (z_i) sampled from the multimodal and from the unimodal posterior; its
    # cross-entropy on the detached latents trains it, and the encoders raise the frozen critic's
    # cross-entropy per item up to chance (ln 10) and no further, so that no linear read-out of a
    # private latent finds the digit (it uses the digit labels, which the paper uses only to pair
    # the modalities: a further departure from its weak supervision).  0 = off.
    private_label_adv_weight: float = 0.0
    # Free bits (Kingma et al. 2016) on each private latent: per item, KL(z_a) and KL(z_i) below this
    # many nats cost nothing, so a decoder that learned early to do without its private latent
    # (posterior collapse) can still be given one.  0 = the paper's ELBO.
    private_free_nats: float = 0.0
    # Architecture.  audio_input_norm "utterance": the speech pre-encoders read each utterance
    # normalised by its own mean and variance (for voices never heard in training, docs/voices.md).
    # audio_decoder_position "relative": the speech decoder's LSTM reads each frame's place in its
    # utterance beside z (modules.relative_position), not z alone.
    audio_input_norm: str = "none"
    audio_decoder_position: str = "none"
    # A speaker critic on the speech side's z_s (domain-adversarial training, Ganin et al. 2016;
    # for speakers, Meng et al. 2018): a small classifier reads z_s (multimodal and unimodal
    # samples) and learns the training speaker (base speaker: ``sp0.9-george`` is ``george``);
    # the encoders raise its cross-entropy up to chance level, ln(speakers) (the "capped" push of
    # the digit critics).  0 = off.  ``speaker_classes``: the critic's output size, filled in from
    # the training shards when left 0.
    speaker_adv_weight: float = 0.0
    speaker_classes: int = 0
    # The decoders' variances: "fixed" (the spec's unit variance for FBank, image_nll_std for pixels),
    # "learned" (one log-variance per FBank dimension and one for the pixels, trained with the model
    # from the fixed values; Hsu's FHVAE code learns its decoder's variance) or "optimal" (each
    # batch's mean squared error, per FBank dimension and for the pixels: sigma-VAE's calibrated
    # decoder).  modules.Likelihoods.
    decoder_variance: str = "fixed"

    def __post_init__(self) -> None:
        check_field_types(self)
        for name, allowed in (("audio_input_norm", AUDIO_INPUT_NORMS),
                              ("audio_decoder_position", AUDIO_DECODER_POSITIONS),
                              ("decoder_variance", DECODER_VARIANCES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {tuple(allowed)}, got {getattr(self, name)!r}")
        if self.image_nll_std <= 0:
            raise ValueError("image_nll_std must be > 0")
        for name in ("cross_weight", "private_label_adv_weight", "private_free_nats", "speaker_adv_weight",
                     "speaker_classes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "Departures":
        """As every config; an old run's ``private_label_adv_mode`` loads when it is "capped" or the
        adversary was off, and is refused by name otherwise."""
        d = dict(d)
        mode = d.pop("private_label_adv_mode", "capped")
        if mode not in ("capped", "reverse", "confusion"):
            raise ValueError(f"{cls.key_prefix}private_label_adv_mode must be 'capped', got {mode!r}")
        if mode != "capped" and d.get("private_label_adv_weight", 0.0) != 0:
            raise ValueError(f"{cls.key_prefix}private_label_adv_mode {mode!r}: an experiment that was not kept and "
                             f"left the library ({cls.retired_note})")
        return super().from_dict(d)


@dataclass
class BaselineVAEConfig(ConfigMixin):
    """VAE-sp / VAE-im only (the bases of the latent-translation bridge)."""

    # the KL weight of a beta-VAE (Higgins et al. 2017); 1 = the paper's baselines.  Below 1 the
    # latent keeps more of each item: sharper reconstructions, a digit a probe reads better.
    kl_weight: float = 1.0
    # weight of a linear digit classifier's cross-entropy on the latent sample; 0 = the paper's
    # unsupervised baselines.  It uses that modality's own labels and no pairs, so the base is still
    # a single-modality model a bridge can join, with a latent laid out by digit, not by speaker.
    label_weight: float = 0.0

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.kl_weight < 0 or self.label_weight < 0:
            raise ValueError(f"kl_weight and label_weight must be >= 0, got {self.kl_weight}, {self.label_weight}")


@dataclass
class PVAEConfig(ConfigMixin):
    # Experiments that were not kept: their knobs left the library (the study stays in
    # docs/study/pvae.md).  An old run's config that names one at its neutral value loads; one
    # that used it is refused by name.
    retired = {"kl_shared_weight": 1.0, "private_adv_weight": 0.0, "cycle_image": 0.0, "cycle_audio": 0.0,
               "cycle_style": "reference", "zs_agree_weight": 0.0, "image_views": 0, "view_coherence": 0.0,
               "swap_image": 0.0, "swap_audio": 0.0, "contrastive_negatives": "any", "zs_pull_image": 0.0}
    retired_note = "docs/study/pvae.md has the study; commit 59e84ed has the code"
    key_prefix = "pvae."
    feat_dim: int = 80
    z_shared: int = 32
    z_audio: int = 32
    z_image: int = 32
    hidden: int = 512  # LSTM cells and pre-encoder output size
    image_channels: tuple = (32, 64)  # (*) image pre-encoder conv channels
    alpha: float = 1.0  # (*) coherence weight
    beta: float = 10.0  # (*) contrastive weight; 0 gives "PVAE (no beta)"
    gamma: float = 0.5  # (*) hinge margin
    # Contrastive kernel k(u, v) (*): "sqdist" exp(-||u-v||^2) (the spec's reading),
    # "dist_half" exp(-||u-v|| / 2) (pixyz's PVAE loss).
    kernel: str = "sqdist"
    # "paper": the spec's objective; "plus": adds cross-modal reconstruction (models/pvae.py)
    objective: str = "paper"
    departures: Departures = field(default_factory=Departures)
    baseline: BaselineVAEConfig = field(default_factory=BaselineVAEConfig)

    def __post_init__(self) -> None:
        for name, cls in (("departures", Departures), ("baseline", BaselineVAEConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls.from_dict(getattr(self, name)))
            elif not isinstance(getattr(self, name), cls):
                raise ValueError(f"pvae.{name} must be a mapping of {cls.__name__} fields")
        check_field_types(self)
        self.image_channels = tuple(self.image_channels)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.kernel not in KERNEL_NAMES:
            raise ValueError(f"kernel must be one of {KERNEL_NAMES}, got {self.kernel!r}")
        if min(self.z_shared, self.z_audio, self.z_image, self.hidden) <= 0:
            raise ValueError("latent and hidden sizes must be positive")
        if self.hidden > MAX_WIDTH or max(self.z_shared, self.z_audio, self.z_image) > MAX_WIDTH or \
                not all(0 < c <= MAX_WIDTH for c in self.image_channels):
            raise ValueError(f"hidden, latent sizes and image_channels must be at most {MAX_WIDTH} "
                             f"(got hidden {self.hidden}, latents {self.z_shared}/{self.z_audio}/{self.z_image}, "
                             f"image_channels {list(self.image_channels)})")
        for name in ("alpha", "beta", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.departures.private_label_adv_weight > 0 and self.objective != "plus":
            raise ValueError("private_label_adv_weight is a term of the plus objective: set objective: plus")

    @classmethod
    def from_dict(cls, d: dict) -> "PVAEConfig":
        """As every config, plus old runs' spellings: flat departure fields (``cross_weight``,
        ``vae_kl_weight``...) move into their sub-config; a retired experiment's knob (``retired``)
        at its neutral value is dropped, one that was used is refused by name."""
        d = dict(d)
        for old, (sub, new) in OLD_NAMES.items():
            if old in d:
                moved = d.pop(old)
                given = d.get(sub) or {}
                if not isinstance(given, dict):
                    raise ValueError(f"pvae.{sub} must be a mapping")
                if new in given and given[new] != moved:
                    raise ValueError(f"pvae.{old} and pvae.{sub}.{new} disagree ({moved!r}, {given[new]!r}): "
                                     f"give pvae.{sub}.{new} only")
                d[sub] = {**given, new: moved}
        return super().from_dict(d)

    def deviations(self, model: str = "pvae") -> dict:
        """Every departure from the spec's objective (``{name: value}``), for configs, metrics and
        the report's footnotes; for a baseline (``model``), only those that reach its loss.
        Fields marked (*) in the spec are choices, not deviations, and are not listed."""
        dep, out = self.departures, {}
        if model != "pvae":
            if model in ("vae-sp", "vae-im") and self.baseline.kl_weight != 1.0:
                out["vae_kl_weight"] = self.baseline.kl_weight
            if model in ("vae-sp", "vae-im") and self.baseline.label_weight != 0.0:
                out["vae_label_weight"] = self.baseline.label_weight
            if dep.image_nll_std != 1.0 and model != "vae-sp":
                out["image_nll_std"] = dep.image_nll_std
            if dep.decoder_variance != "fixed":
                out["decoder_variance"] = dep.decoder_variance
            return out
        if self.objective != "paper":
            out.update(objective=self.objective, cross_weight=dep.cross_weight)
        if dep.image_nll_std != 1.0:
            out["image_nll_std"] = dep.image_nll_std
        if dep.private_free_nats > 0:
            out["private_free_nats"] = dep.private_free_nats
        if dep.private_label_adv_weight > 0:
            out["private_label_adv_weight"] = dep.private_label_adv_weight
        if dep.speaker_adv_weight > 0:
            out["speaker_adv_weight"] = dep.speaker_adv_weight
        if dep.decoder_variance != "fixed":
            out["decoder_variance"] = dep.decoder_variance
        return out

    def size_changes(self) -> dict:
        """The sizes that differ from the paper's architecture (``{name: value}``), named beside the
        objective's deviations.  Layer sizes marked (*) in the spec (image channels) are choices."""
        mine = {**{f.name: getattr(self, f.name) for f in fields(self)},
                "audio_input_norm": self.departures.audio_input_norm,
                "audio_decoder_position": self.departures.audio_decoder_position}
        return {k: mine[k] for k, v in PAPER_SIZES.items() if mine[k] != v}

    def likelihoods(self) -> Likelihoods:
        """The decoders' likelihoods this config names (every model builds them here)."""
        return Likelihoods(self.feat_dim, self.departures.image_nll_std, self.departures.decoder_variance)

    def audio_decoder(self, z_dim: int) -> AudioDecoder:
        """The speech decoder this config names, from a ``z_dim`` latent (every model builds it here)."""
        return AudioDecoder(z_dim, self.feat_dim, self.hidden, self.departures.audio_decoder_position)

    def audio_pre_encoder(self) -> AudioPreEncoder:
        """The speech pre-encoder this config names (every model builds it here)."""
        return AudioPreEncoder(self.feat_dim, self.hidden, self.departures.audio_input_norm)

    def image_pre_encoder(self) -> ImagePreEncoder:
        """The image pre-encoder this config names (every model builds it here)."""
        return ImagePreEncoder(self.image_channels, self.hidden)


# the spec's architecture: 80-dim FBank, 32-dim latents, 512-unit LSTMs and FC layers, two strided convs
PAPER_SIZES = {"feat_dim": 80, "z_shared": 32, "z_audio": 32, "z_image": 32, "hidden": 512,
               "audio_input_norm": "none", "audio_decoder_position": "none"}
# Old runs' flat spellings -> (sub-config, field)
OLD_NAMES = {**{f: ("departures", f) for f in ("image_nll_std", "cross_weight", "cross_grad", "private_label_adv_weight",
                                              "private_label_adv_mode", "private_adv_start", "kl_private_weight",
                                              "image_encoder", "audio_input_norm")},
             "vae_kl_weight": ("baseline", "kl_weight"), "vae_label_weight": ("baseline", "label_weight")}

"""Training PVAE and its baselines: the task of pairing spoken and written digits, run by the
engine (:mod:`pvae_model.engine`), which writes the run directory of :mod:`pvae_model.run`.

Resume is exact on CPU: the batch order and the image pairing of an epoch are functions of
(seed, epoch) alone, the reparameterisation noise and the negatives come from RNGs whose states
are checkpointed, and a checkpoint taken mid-epoch (SIGINT/SIGTERM) records how many batches of
the epoch are done and the running sums of its metrics.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pvae_data.shards.reader import AudioShards

from .checkpoints import RunIOError
from .config import TrainConfig
from .data import PairedEpochs, base_speakers, load_audio_split, load_image_split
from .engine import NonFiniteLoss, Task, run_task
from .eval.metrics import encode_means, kmeans_purity
from .models import MODALITIES, build_model
from .run import load_cmvn, load_fbank_config

__all__ = ["NonFiniteLoss", "PairedTask", "train"]


def quick_purity(model, audio_test, image_test, device, modalities=("audio", "image")) -> dict:
    """z_s purity from each unimodal encoder the model has (the baselines' single latent)."""
    means = encode_means(model, audio_test if "audio" in modalities else None,
                         image_test if "image" in modalities else None, device=device)
    out = {}
    if "s_audio" in means:
        out["purity_zs_speech"] = kmeans_purity(means["s_audio"], audio_test.labels)
    if "s_image" in means:
        out["purity_zs_image"] = kmeans_purity(means["s_image"], image_test.labels)
    return out


def quick_generation(model, judge, audio_test, image_test, n_images: int) -> dict:
    """Judged generations for the training curve: ``coh_*`` (cross-modal, prior and reference
    style) and ``gen_*`` (own reconstruction, z_s only, style swapped), on CPU copies."""
    from .eval.judge import COHERENCE_KEYS, generation_checks

    rows = generation_checks(model, judge, audio_test, image_test, n_images=n_images, seed=1, words=False)["rows"]
    return {("coh_" if k in COHERENCE_KEYS else "gen_") + k: v for k, v in rows.items()}


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, show_progress: bool = True,
          stop_after_batches: int | None = None) -> dict:
    """Train; returns the last epoch's metrics.  ``stop_after_batches`` simulates an interruption (tests)."""
    return run_task(PairedTask(cfg), run_dir, resume, show_progress, stop_after_batches)


def with_speaker_classes(cfg: TrainConfig) -> TrainConfig:
    """A config with a speaker critic (``pvae.departures.speaker_adv_weight``) gets its output
    size from the training shards' speakers when it was left 0; a size too small is refused."""
    dep = cfg.pvae.departures
    if dep.speaker_adv_weight <= 0:
        return cfg
    try:
        n = len(base_speakers(AudioShards(cfg.audio_shards, "train").speakers))
    except (OSError, KeyError, ValueError) as e:
        raise RunIOError(f"cannot read the training speakers of {cfg.audio_shards}: {e}") from None
    if n < 2:
        raise ValueError(f"pvae.departures.speaker_adv_weight: the training split of {cfg.audio_shards} "
                         f"has {n} speaker(s); a speaker critic needs at least 2")
    if dep.speaker_classes == 0:
        return replace(cfg, pvae=replace(cfg.pvae, departures=replace(dep, speaker_classes=n)))
    if dep.speaker_classes < n:
        raise ValueError(f"pvae.departures.speaker_classes {dep.speaker_classes} is less than the {n} training speakers "
                         f"of {cfg.audio_shards} (0 fills it in)")
    return cfg


class PairedTask(Task):
    """PVAE or a baseline on spoken digits paired, every epoch, with written digits of the same label."""

    shown = ("loss", "nll_audio", "nll_image", "contrastive", "coherence_audio", "kl")
    rate_name = "pairs_per_s"
    hparam_metrics = ("loss", "purity_zs_speech", "purity_zs_image", "coh_speech_to_image_prior",
                      "coh_image_to_speech_prior")

    def __init__(self, cfg: TrainConfig):
        # Shard paths are saved resolved, so that evaluate/purity/diagnose work from any directory.
        self.cfg = with_speaker_classes(self.comparable(cfg))

    def comparable(self, cfg: TrainConfig) -> TrainConfig:
        return replace(cfg, audio_shards=str(Path(cfg.audio_shards).resolve()),  # older runs: relative
                       image_shards=str(Path(cfg.image_shards).resolve()))

    def load_data(self, trainer) -> None:
        cfg = self.cfg
        try:
            self.cmvn = cmvn = load_cmvn(cfg.audio_shards)
            if cmvn is None and not cfg.allow_no_cmvn and cfg.model != "vae-im":
                raise ValueError(f"{cfg.audio_shards}: the audio shards carry no CMVN statistics (index.json 'cmvn'); "
                                 "re-shard from a finished fbank directory, or set allow_no_cmvn: true")
            self.audio_train = audio = load_audio_split(cfg.audio_shards, "train", mode=cfg.cmvn,
                                                        keep_raw=cfg.noise.enabled, floor_db=cfg.fbank_floor_db)
            images = load_image_split(cfg.image_shards, "train")
            self.audio_test = load_audio_split(cfg.audio_shards, "test", cmvn=cmvn, mode=cfg.cmvn,
                                               floor_db=cfg.fbank_floor_db)
            image_test = load_image_split(cfg.image_shards, "test")
        except (OSError, KeyError) as e:  # h5py: corrupt metadata, truncated file, missing dataset
            raise RunIOError(f"cannot read the shards {cfg.audio_shards} / {cfg.image_shards}: {e}") from None
        fallback = sorted(set(audio.cmvn_fallback) | set(self.audio_test.cmvn_fallback))
        if fallback:
            trainer.say(f"speaker CMVN: too few frames of statistics for {', '.join(fallback)}; "
                        "their utterances are normalised per utterance")
        if cfg.eval_images and cfg.eval_images < len(image_test.labels):
            idx = np.random.default_rng(0).permutation(len(image_test.labels))[: cfg.eval_images]
            image_test = type(image_test)(image_test.images[idx], image_test.labels[idx], [image_test.keys[i] for i in idx])
        self.image_test = image_test
        fbank = None
        if cfg.spec_augment.warps or cfg.noise.enabled:
            from pvae_data.fbank import FbankConfig

            fbank = FbankConfig.from_dict(load_fbank_config(cfg.audio_shards))
        self.data = PairedEpochs(audio, images, cfg.batch_size, seed=cfg.seed, rank=trainer.rank,
                                 world_size=trainer.world, spec_augment=cfg.spec_augment,
                                 fbank=fbank, noise=cfg.noise, utterance_cmvn_prob=cfg.cmvn_utterance_prob)
        self.judge = None
        if trainer.main and cfg.model == "pvae" and cfg.eval_every and cfg.eval_coherence and trainer.device.type == "cpu":
            from .eval.judge import Judge

            # trained once per dataset, then cached; the word judge is for evaluate, not the curve
            self.judge = Judge.load(cfg.audio_shards, cfg.image_shards, word_judge=False)

    def build(self) -> torch.nn.Module:
        cfg = self.cfg
        try:
            return build_model(cfg.model, cfg.pvae)
        except (RuntimeError, MemoryError) as e:  # e.g. an allocation far past the machine's memory
            raise ValueError(f"cannot build the {cfg.model} model with these sizes (pvae.hidden "
                             f"{cfg.pvae.hidden}, latents {cfg.pvae.z_shared}/{cfg.pvae.z_audio}/{cfg.pvae.z_image}): "
                             f"{(str(e).splitlines() or [''])[0][:120]}") from None

    def optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.cfg.lr, betas=self.cfg.betas, eps=self.cfg.eps)

    def num_batches(self) -> int:
        return self.data.num_batches()

    def batches(self, epoch: int):
        return self.data.batches(epoch)

    def batch_items(self, batch: dict) -> int:
        return len(batch["lengths"])

    def epoch_stats(self) -> dict:
        return {"padding_fraction": self.data.padding_fraction()}

    def evaluate(self, model, device) -> dict:
        """z_s purity, and judged generations (PVAE) of ``model``."""
        m = quick_purity(model, self.audio_test, self.image_test, device, MODALITIES[self.cfg.model])
        if self.judge is not None:
            m.update(quick_generation(model, self.judge, self.audio_test, self.image_test,
                                      self.cfg.eval_coherence_images))
        return m

    @torch.no_grad()
    def media(self, model, device) -> dict:
        """PVAE: the written digits of one spoken test digit per class (prior style), and three
        spoken digits of written ones (in the typical training voice, as ``generate`` speaks them;
        Griffin-Lim), for TensorBoard."""
        if self.cfg.model != "pvae":
            return {}
        from .data import pad_audio
        from .eval.audio_synth import fbank_to_wave

        model.eval()
        a, im = self.audio_test, self.image_test
        first = lambda labels, digits: [int(np.flatnonzero(labels == d)[0]) for d in digits if (labels == d).any()]  # noqa: E731
        x, lengths = pad_audio([a.feats[i] for i in first(a.labels, range(10))])
        zs = model.encode_audio(x.to(device), lengths.to(device))["s"][0]
        images = model.decode_image(zs, torch.zeros(len(zs), model.cfg.z_image, device=device)).clamp(0, 1).cpu()
        digits = [d for d in (0, 3, 7) if (im.labels == d).any()]
        zs_i = model.encode_image(im.images[first(im.labels, digits)].to(device))["s"][0]
        t = int(lengths.float().median())
        from .voices import speaker_voices, typical_voice

        voices = speaker_voices(model, self.audio_train, device=device)
        za = voices[typical_voice(voices)] if voices else torch.zeros(model.cfg.z_audio)
        feats = model.decode_audio(zs_i, za.to(device).expand(len(zs_i), -1),
                                   torch.full((len(zs_i),), t, device=device)).cpu()
        fcfg = load_fbank_config(self.cfg.audio_shards)
        audio = {f"image_to_speech/digit{d}": (fbank_to_wave(f[:t].numpy(), fcfg, self.cmvn), int(fcfg["sample_rate"]))
                 for d, f in zip(digits, feats)}
        return {"images": {"speech_to_image": images}, "audio": audio}

    def score(self, metrics: dict) -> float | None:
        """The mean z_s purity of the modalities the model has."""
        got = [metrics[k] for k in ("purity_zs_speech", "purity_zs_image") if k in metrics]
        return sum(got) / len(got) if got else -1.0

    def epoch_line(self, m: dict) -> str:
        return _epoch_line(m)


def _epoch_line(m: dict) -> str:
    terms = ", ".join(f"{k} {m[k]:.3g}" for k in ("nll_audio", "nll_image", "kl", "kl_s", "kl_a", "kl_i",
                                                   "coherence_audio", "coherence_image", "contrastive",
                                                   "kl_unimodal_audio", "kl_unimodal_image") if k in m)
    s = f"epoch {m['epoch']}: loss {m['loss']:.2f} ({terms}), {m['pairs_per_s']:.0f} pairs/s, {m['minutes']:.1f} min"
    if "purity_zs_speech" in m:
        s += f"; z_s purity speech {100 * m['purity_zs_speech']:.2f} %"
    if "purity_zs_image" in m:
        s += f"; z_s purity image {100 * m['purity_zs_image']:.2f} %"
    if "coh_speech_to_image_prior" in m:
        s += (f"; coherence (prior style) speech->image {100 * m['coh_speech_to_image_prior']:.1f} %, "
              f"image->speech {100 * m['coh_image_to_speech_prior']:.1f} %")
    return s

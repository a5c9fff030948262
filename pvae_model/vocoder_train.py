"""Training the vocoder (:mod:`pvae_model.vocoder`) on a corpus's training split, as a run of the
engine: ``pvae-model vocoder --segments SEGMENTS --audio-shards SHARDS --out DIR``.

The data are the utterances a ``pvae-data`` manifest lists (the ``trim`` stage's segments), read
at the FBank's sample rate, and their FBank, computed by the pipeline's own function with the
FBank configuration the audio shards were made with: the vocoder hears exactly what the models
generate.  Each step reads a random crop of ``crop_frames`` frames per utterance; crops are a
function of (seed, epoch, batch), so resume is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pvae_data.config import ConfigMixin, check_field_types

from .engine import Task, run_task
from .vocoder import MelLoss, Vocoder, VocoderConfig, VocoderLoss


@dataclass
class VocoderTrainConfig(ConfigMixin):
    model: str = "vocoder"  # the run's kind, as TrainConfig.model
    segments: str = ""  # a pvae-data manifest (the trim stage's segments.jsonl)
    split: str = "train"  # its records trained on; "test" records are the quick evaluation
    fbank: dict = field(default_factory=dict)  # the FBank config (filled in from --audio-shards)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    crop_frames: int = 24
    batch_size: int = 16
    mel_weight: float = 5.0  # Mel L1 beside the multi-resolution STFT loss
    lr: float = 5e-4
    epochs: int = 400
    max_minutes: float = 10.0  # the time budget stops it (0 = none)
    eval_every: int = 5
    eval_utterances: int = 50
    seed: int = 0
    num_threads: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.vocoder, dict):
            self.vocoder = VocoderConfig.from_dict(self.vocoder)
        check_field_types(self)
        if self.model != "vocoder":
            raise ValueError(f"model must be 'vocoder' in a vocoder config, got {self.model!r}")
        if self.crop_frames < 4 or self.batch_size < 1 or self.lr <= 0 or self.epochs < 1 or self.mel_weight < 0:
            raise ValueError("crop_frames >= 4, batch_size >= 1, lr > 0, epochs >= 1 and mel_weight >= 0 are required")


def load_utterances(cfg: VocoderTrainConfig, split: str, limit: int = 0) -> tuple[list, list, list]:
    """``(waves [-1, 1] at the FBank rate, raw FBank, rejected ids with the reason)`` of the
    manifest's ``split`` records; an unreadable one is rejected, never dropped unsaid, and one
    shorter than a crop is padded with silence at its end."""
    from pvae_data.audio import AudioError, load_audio
    from pvae_data.fbank import FbankConfig, compute_fbank
    from pvae_data.io_utils import read_jsonl

    fb = FbankConfig.from_dict(cfg.fbank)
    waves, feats, rejected = [], [], []
    records = [r for r in read_jsonl(cfg.segments) if r.get("split", "train") == split]
    for r in records[: limit or None]:
        try:
            w, _ = load_audio(r["audio"], start=r.get("start"), end=r.get("end"), target_rate=fb.sample_rate)
        except (AudioError, KeyError) as e:
            rejected.append((r.get("id"), f"unreadable: {e}"))
            continue
        need = (cfg.crop_frames - 1) * fb.window_shift + fb.window_size
        if len(w) < need:
            w = np.concatenate([w, np.zeros(need - len(w), np.float32)])
        f = compute_fbank(w, fb)
        waves.append(np.asarray(w, np.float32) / np.float32(32768.0))
        feats.append(f.astype(np.float32))
    return waves, feats, rejected


def crop_batch(waves, feats, idx, crop: int, hop: int, window: int, rng: np.random.Generator) -> dict:
    """Random ``crop``-frame windows of the utterances ``idx``, with the samples the vocoder must
    produce for them: from the centre of the first frame to the centre of the last."""
    f_out, w_out = [], []
    for i in idx:
        t = int(rng.integers(0, len(feats[i]) - crop + 1))
        f_out.append(feats[i][t: t + crop])
        a = t * hop + window // 2
        w_out.append(waves[i][a: a + (crop - 1) * hop])
    return {"fbank": torch.from_numpy(np.stack(f_out)), "wave": torch.from_numpy(np.stack(w_out))}


class VocoderTask(Task):
    """A vocoder on one corpus's training utterances."""

    shown = ("loss", "mel_l1")

    def __init__(self, cfg: VocoderTrainConfig):
        self.cfg = cfg

    def comparable(self, cfg):
        return type(cfg).from_dict({**cfg.to_dict(), "segments": str(Path(cfg.segments).resolve())})

    def load_data(self, trainer) -> None:
        cfg = self.cfg
        self.waves, self.feats, rejected = load_utterances(cfg, cfg.split)
        if not self.waves:
            raise ValueError(f"{cfg.segments}: no readable {cfg.split} utterance")
        trainer.say(f"vocoder data: {len(self.waves)} {cfg.split} utterances kept, {len(rejected)} rejected"
                    + "".join(f"\n  rejected {i}: {why}" for i, why in rejected))
        test_waves, test_feats, _ = load_utterances(cfg, "test", limit=cfg.eval_utterances)
        self.test = list(zip(test_waves, test_feats))
        frames = np.concatenate(self.feats)
        self.mean, self.std = frames.mean(0), frames.std(0) + 1e-3
        torch.manual_seed(cfg.seed)  # the initial weights do not depend on what loading drew

    def build(self) -> VocoderLoss:
        self.vocoder = Vocoder(self.cfg.vocoder, self.cfg.fbank, self.mean, self.std)
        return VocoderLoss(self.vocoder, self.cfg.mel_weight)

    def num_batches(self) -> int:
        return max(1, len(self.waves) // self.cfg.batch_size)

    def batches(self, epoch: int):
        cfg, v = self.cfg, self.vocoder
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(len(self.waves))
        for n in range(self.num_batches()):
            idx = order[n * cfg.batch_size: (n + 1) * cfg.batch_size]
            yield crop_batch(self.waves, self.feats, idx, cfg.crop_frames, v.hop, v.window,
                             np.random.default_rng([cfg.seed, epoch, n]))

    @torch.no_grad()
    def evaluate(self, model, device) -> dict:
        """Mel L1 of whole test utterances resynthesised, against Griffin-Lim's on the same ones."""
        return {"test_mel_l1": resynthesis_mel_l1(model.vocoder, self.test)}

    def media(self, model, device) -> dict:
        wave, feats = self.test[0] if self.test else (None, None)
        if wave is None:
            return {}
        return {"audio": {"vocoder/test0": (model.vocoder.synthesize(feats), self.vocoder.fbank.sample_rate)}}

    def score(self, metrics: dict) -> float | None:
        return -metrics["test_mel_l1"] if "test_mel_l1" in metrics else None

    def epoch_line(self, m: dict) -> str:
        s = f"vocoder epoch {m['epoch']}: loss {m['loss']:.4g} (mel_l1 {m['mel_l1']:.3g}, stft {m['stft']:.3g}), {m['minutes']:.2f} min"
        return s + (f"; test mel L1 {m['test_mel_l1']:.3f}" if "test_mel_l1" in m else "")


@torch.no_grad()
def resynthesis_mel_l1(vocoder: Vocoder, utterances) -> float:
    """Mean log-Mel L1 between real utterances and their resynthesis from their own FBank."""
    if not utterances:
        return float("nan")
    mel = MelLoss(vocoder.fbank)
    out = []
    for wave, feats in utterances:
        y = torch.from_numpy(vocoder.synthesize(feats))
        n = min(len(y), len(wave))
        out.append(float(mel(y[None, :n], torch.from_numpy(wave[:n])[None])))
    return float(np.mean(out))


def fit(cfg: VocoderTrainConfig, out_dir: str | Path, resume: bool = False, show_progress: bool = True,
        stop_after_batches: int | None = None) -> dict:
    """Train the vocoder through the run engine; returns the last epoch's metrics."""
    if not cfg.segments or not cfg.fbank:
        raise ValueError("a vocoder run needs segments (a manifest) and fbank (from --audio-shards)")
    return run_task(VocoderTask(cfg), Path(out_dir), resume, show_progress, stop_after_batches)

"""The voices a trained PVAE speaks in: each training speaker's mean speech style z_a.

A written digit is spoken from its z_s and a speech style z_a.  The prior's mean (z_a = 0) is the
paper's style, but it is no one's voice: the encoder's z_a of real takes sit about 3 units from it
(free bits let the posterior move off the prior at no cost), and there the decoder draws the mean
over every voice and every timing.  A seven loses its /s/ and second syllable and is heard as
"two" (`make demo`'s model: sevens 0 % with the prior mean, 96-99 % in a training speaker's voice;
docs/results.md).  A voice here is the mean z_a (posterior means) of one training speaker's
unperturbed takes, as a TTS system speaks with a speaker embedding; the *typical* voice is the one
nearest the mean of all voices (a medoid: a real speaker, chosen without labels).
"""

from __future__ import annotations

import numpy as np
import torch

MAX_TAKES = 500  # per speaker: all of an FSDD speaker's 450 training takes; a cap for larger corpora


@torch.no_grad()
def speaker_voices(model, audio, max_takes: int = MAX_TAKES, device="cpu") -> dict[str, torch.Tensor]:
    """``{speaker: mean z_a}`` over each speaker's first ``max_takes`` unperturbed utterances (by
    key, so the same shards give the same voices) of ``audio`` (an :class:`pvae_model.data.AudioSet`,
    normalised as the model reads it), in sorted speaker order; on the CPU whatever ``device``
    the model runs on."""
    from pvae_data.perturb import base_speaker

    from .data import pad_audio

    by_speaker: dict[str, list[int]] = {}
    for i in sorted(range(len(audio.keys)), key=lambda i: audio.keys[i]):
        s = str(audio.speakers[i])
        if base_speaker(s) == s and len(by_speaker.setdefault(s, [])) < max_takes:
            by_speaker[s].append(i)
    was = model.training
    model.eval()
    voices = {}
    for s in sorted(by_speaker):
        x, lengths = pad_audio([audio.feats[i] for i in by_speaker[s]])
        voices[s] = model.encode_audio(x.to(device), lengths.to(device))["a"][0].mean(0).cpu()
    model.train(was)
    return voices


def typical_voice(voices: dict[str, torch.Tensor]) -> str | None:
    """The voice nearest the mean of all voices (None when there are none)."""
    if not voices:
        return None
    names = list(voices)
    z = torch.stack([voices[n] for n in names])
    return names[int((z - z.mean(0)).norm(dim=1).argmin())]


def run_voices(model, audio_shards, cmvn_mode: str, floor_db: float = 0.0) -> dict[str, torch.Tensor]:
    """:func:`speaker_voices` of a run's training split (its shards, read as training read them:
    ``cmvn_mode`` and ``floor_db`` are the run's ``TrainConfig.cmvn`` and ``fbank_floor_db``)."""
    from .data import load_audio_split

    return speaker_voices(model, load_audio_split(audio_shards, "train", mode=cmvn_mode, floor_db=floor_db))


def voices_to_json(voices: dict[str, torch.Tensor]) -> dict:
    """What a bundle's config.json holds: the typical voice's name and every voice's z_a."""
    return {"default": typical_voice(voices), "z_a": {k: [float(x) for x in v] for k, v in voices.items()}}


def voices_from_json(entry, dim: int, where: str) -> dict[str, torch.Tensor]:
    """A bundle's ``voices`` entry back to tensors; a malformed one is a ValueError naming ``where``."""
    if entry is None:
        return {}
    try:
        voices = {str(k): torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in entry["z_a"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{where}: voices: not a map of names to vectors ({e})") from None
    bad = [k for k, v in voices.items() if v.shape != (dim,) or not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{where}: voices: {bad[0]} is not {dim} finite numbers")
    return voices

"""Per-speaker figures: which voices a run has heard, and how it does on each test speaker.

A speaker-disjoint run (``pvae-data prepare --test-speakers``) tests voices it never heard next to
the other takes of the voices it trained on; the official FSDD split tests only the latter.  The
rows here keep them apart:

``speakers``      the base speakers of the training split (perturbed copies folded into their
                  source), the test speakers, and which of those training never saw;
``per_speaker``   for every test speaker: z_s speech "purity" (each k-means cluster of all test
                  z_s labelled with its majority digit, scored on that speaker's utterances),
                  ``speech_to_image`` coherence (prior image style), ``speech_own`` (own
                  reconstructions judged by the speech judge) and ``judge`` (the speech judge on
                  the real utterances: on a held-out speaker, the judge's own leave-one-speaker-out
                  accuracy) and ``judge_adapted`` (the word judge of :mod:`.word_judge`, adapted
                  without labels to each test speaker, on the same utterances);
``groups``        the same pooled over the seen and over the held-out speakers;
``confusion``     10 x 10 counts [intended digit][judged digit] of speech -> image and of
                  image -> speech (prior style), as evaluated.
"""

from __future__ import annotations

import numpy as np
import torch

from pvae_data.perturb import base_speaker

ROWS = ("purity", "speech_to_image", "speech_own", "judge", "judge_adapted")


def training_speakers(audio_shards) -> dict:
    """``{"train": [...], "test": [...], "held_out": [...], "perturbed": n}`` from the shards' index
    (older shard sets without it: read from the items)."""
    from pvae_data.shards.reader import AudioShards
    from pvae_data.shards.schema import load_index

    info = load_index(audio_shards)[1].get("speakers")
    if info:
        return info
    split_speakers = {}
    for split in ("train", "test"):
        try:
            split_speakers[split] = sorted({base_speaker(s) for s in AudioShards(audio_shards, split).speakers})
        except (KeyError, ValueError, FileNotFoundError):
            split_speakers[split] = []
    held = sorted(set(split_speakers["test"]) - set(split_speakers["train"]))
    return {**split_speakers, "held_out": held, "perturbed": None}


def seen_in_training(speakers, speakers_info: dict) -> np.ndarray:
    """Per test item, whether its speaker (perturbed copies folded into their source) is one of
    the training speakers in ``speakers_info`` (``training_speakers``'s dict)."""
    seen = set(speakers_info.get("train") or [])
    return np.array([base_speaker(s) in seen for s in speakers], dtype=bool)


def _cluster_accuracy(z: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per-item correctness of labelling each k-means (k=10) cluster with its majority digit."""
    from sklearn.cluster import KMeans

    assign = KMeans(10, n_init=10, random_state=seed).fit_predict(z)
    majority = {c: np.bincount(labels[assign == c], minlength=10).argmax() for c in np.unique(assign)}
    return np.array([majority[c] for c in assign]) == labels


def confusion(want: np.ndarray, got: np.ndarray) -> list[list[int]]:
    m = np.zeros((10, 10), dtype=np.int64)
    np.add.at(m, (np.asarray(want), np.asarray(got)), 1)
    return m.tolist()


@torch.no_grad()
def speaker_rows(model, judge, audio, images, speakers_info: dict, n_images: int = 1000, seed: int = 1,
                 one_wav: bool = False) -> dict:
    """Everything of the module docstring for a PVAE (``audio``/``images``: the test sets).
    ``one_wav`` (a run trained with per-speaker CMVN): also ``speech_to_image_one_wav``, each take
    normalised by its own statistics alone, as a new voice's single recording is read."""
    from ..data import pad_audio
    from ..noise import renormalise

    was = model.training
    model.eval()
    x, lengths = pad_audio(audio.feats)
    q = model.encode_audio(x, lengths)
    zs, za = q["s"][0], q["a"][0]
    y = np.asarray(audio.labels)
    spk = np.array([base_speaker(s) for s in audio.speakers])
    zi = torch.randn(len(y), model.cfg.z_image, generator=torch.Generator().manual_seed(seed))
    correct = {
        "purity": _cluster_accuracy(zs.numpy(), y, seed),
        "speech_to_image": (s2i := judge.image_predictions(model.decode_image(zs, zi).clamp(0, 1))) == y,
        "speech_own": judge.speech_predictions(model.decode_audio(zs, za, lengths), lengths) == y,
        "judge": judge.speech_predictions(x, lengths) == y,
    }
    if one_wav:  # per-utterance CMVN of the speaker-normalised take = per-utterance CMVN of the raw take
        zs1 = model.encode_audio(renormalise(x, lengths, [None] * len(y)), lengths)["s"][0]
        correct["speech_to_image_one_wav"] = judge.image_predictions(model.decode_image(zs1, zi).clamp(0, 1)) == y
    if judge.words is not None:
        correct["judge_adapted"] = judge.adapted_predictions(x, lengths, groups=spk) == y
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(images.labels))[:n_images]
    yi = np.asarray(images.labels)[pick]
    zs_i = model.encode_image(images.images[pick])["s"][0]
    ref = rng.integers(0, len(y), len(pick))
    za_prior = torch.randn(len(pick), za.shape[1], generator=torch.Generator().manual_seed(seed + 1))
    i2s = judge.speech_predictions(model.decode_audio(zs_i, za_prior, lengths[ref]), lengths[ref])
    model.train(was)

    seen = seen_in_training(audio.speakers, speakers_info)
    per_speaker = {}
    for s in sorted(set(spk)):
        m = spk == s
        per_speaker[s] = {"n": int(m.sum()), "seen_in_training": bool(seen[m].any()),
                          **{k: float(v[m].mean()) for k, v in correct.items()}}
    groups = {}
    for name, m in (("seen", seen), ("held_out", ~seen)):
        if m.any():
            groups[name] = {"n": int(m.sum()), "speakers": sorted(set(spk[m])),
                            **{k: float(v[m].mean()) for k, v in correct.items()}}
    return {"speakers": speakers_info, "per_speaker": per_speaker, "groups": groups,
            "confusion": {"speech_to_image": confusion(y, s2i), "image_to_speech": confusion(yi, i2s)}}

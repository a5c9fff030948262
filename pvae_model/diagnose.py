"""``pvae-model diagnose RUN_DIR``: which latent does each decoder read the digit from?

Cross-modal coherence needs two things: the decoders must take the digit from z_s, and the
private latents (z_a, z_i) must not carry it.  Every figure here is the fraction of generations
that the judge classifiers of :mod:`pvae_model.classifiers` label with the intended digit, on
the test split, for one way of assembling the decoder's input:

``speech_own`` / ``image_own``        z_s and the style latent of the same test item;
``*_zs_only``                        the style latent set to 0 (the digit can only come from z_s);
``*_style_swapped``                  the style latent of another random item (label of the z_s item);
``image_to_speech`` / ``speech_to_image``  z_s from the other modality, style from a random item
                                     (the coherence of ``evaluate``, on other random draws);
``mm_speech_own`` / ``mm_image_own`` the multimodal posterior means of same-label pairs, i.e. the
                                     decoders' training distribution: a gap to ``*_own`` means the
                                     unimodal means are not where the multimodal posterior puts z_s.

Plus the mean norms of the posterior means and the mean distance between the multimodal z_s and
each unimodal z_s of the same pair.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def diagnose(run_dir, checkpoint: str = "last", n_images: int = 1000, seed: int = 1) -> dict:
    from .classifiers import load_or_train, predict_images, predict_speech
    from .data import pad_audio
    from .metrics import load_run

    ck, cfg, model, audio, images, _ = load_run(run_dir, checkpoint)
    if cfg.model != "pvae":
        raise ValueError(f"diagnose needs a PVAE run, {run_dir} holds {cfg.model}")
    sp_clf, im_clf, info = load_or_train(cfg.audio_shards, cfg.image_shards)
    rng = np.random.default_rng(seed)
    x, lengths = pad_audio(audio.feats)
    qa = model.encode_audio(x, lengths)
    zs_a, za = qa["s"][0], qa["a"][0]
    ya = audio.labels
    pick = rng.permutation(len(images.labels))[:n_images]
    qi = model.encode_image(images.images[pick])
    zs_i, zi = qi["s"][0], qi["i"][0]
    yi = images.labels[pick]

    def speech_ok(zs, z_a, lens, want) -> float:
        gen = model.decode_audio(zs, z_a, lens)
        return float((predict_speech(sp_clf, [gen[j, : lens[j]] for j in range(len(lens))]) == want).mean())

    def image_ok(zs, z_i, want) -> float:
        return float((predict_images(im_clf, model.decode_image(zs, z_i).clamp(0, 1)) == want).mean())

    pa, pi = rng.permutation(len(ya)), rng.permutation(len(yi))
    ref = rng.integers(0, len(ya), len(yi))
    r = {
        "speech_own": speech_ok(zs_a, za, lengths, ya),
        "speech_zs_only": speech_ok(zs_a, torch.zeros_like(za), lengths, ya),
        "speech_style_swapped": speech_ok(zs_a, za[pa], lengths[pa], ya),
        "image_own": image_ok(zs_i, zi, yi),
        "image_zs_only": image_ok(zs_i, torch.zeros_like(zi), yi),
        "image_style_swapped": image_ok(zs_i, zi[pi], yi),
        "image_to_speech": speech_ok(zs_i, za[ref], lengths[ref], yi),
        "speech_to_image": image_ok(zs_a, zi[rng.integers(0, len(yi), len(ya))], ya),
    }
    # The multimodal posterior of same-label pairs: what the decoders were trained on.
    by_digit = {d: np.flatnonzero(images.labels == d) for d in range(10)}
    partner = np.array([rng.choice(by_digit[int(y)]) for y in ya])
    q = model.encode_multimodal(x, lengths, images.images[partner])
    zs_m = q["s"][0]
    r.update(mm_speech_own=speech_ok(zs_m, q["a"][0], lengths, ya), mm_image_own=image_ok(zs_m, q["i"][0], ya))
    zs_partner = model.encode_image(images.images[partner])["s"][0]
    norm = lambda t: float(t.norm(dim=1).mean())  # noqa: E731
    r["norms"] = {"zs_speech": norm(zs_a), "za": norm(za), "zs_image": norm(zs_i), "zi": norm(zi), "zs_multimodal": norm(zs_m)}
    r["distance_multimodal_zs_to"] = {"speech_zs": norm(zs_m - zs_a), "image_zs": norm(zs_m - zs_partner)}
    return {"epoch": ck["epoch"], "checkpoint": checkpoint, "n_speech": len(ya), "n_images": len(yi),
            "judges": info, **r}

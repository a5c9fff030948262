"""``pvae-model diagnose RUN_DIR``: which latent does each decoder read the digit from?

Cross-modal coherence needs two things: the decoders must take the digit from z_s, and the
private latents (z_a, z_i) must not carry it.  Every figure here is the fraction of generations
that the judge classifiers label with the intended digit, on the test split, for one way of
assembling the decoder's input: the rows of :func:`pvae_model.eval.judge.generation_checks` (own,
z_s only, style swapped, cross-modal with reference and with prior style), and

``mm_speech_own`` / ``mm_image_own`` the multimodal posterior means of same-label pairs, i.e. the
                                     decoders' training distribution: a gap to ``*_own`` means the
                                     unimodal means are not where the multimodal posterior puts z_s.

``style_transfer``: how much of a reference's slant / ink / width a generated image takes
(:mod:`pvae_model.eval.style`).

Plus the mean norms of the posterior means and the mean distance between the multimodal z_s and
each unimodal z_s of the same pair.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def diagnose(run_dir, checkpoint: str = "best", n_images: int = 1000, seed: int = 1, **shards) -> dict:
    from .judge import Judge, generation_checks
    from ..run import load_run

    ck, cfg, model, audio, images, _ = load_run(run_dir, checkpoint, **shards)
    if cfg.model != "pvae":
        raise ValueError(f"diagnose needs a PVAE run, {run_dir} holds {cfg.model}")
    judge = Judge.load(cfg.audio_shards, cfg.image_shards)
    checks = generation_checks(model, judge, audio, images, n_images=n_images, seed=seed)
    r = dict(checks["rows"])
    (qa, lengths, ya), (qi, _, _) = checks["posteriors"]["speech"], checks["posteriors"]["image"]
    zs_a, za, zs_i, zi = qa["s"][0], qa["a"][0], qi["s"][0], qi["i"][0]
    # The multimodal posterior of same-label pairs: what the decoders were trained on.
    from ..data import pad_audio

    rng = np.random.default_rng(seed)
    x, _ = pad_audio(audio.feats)
    by_digit = {d: np.flatnonzero(images.labels == d) for d in range(10)}
    partner = np.array([rng.choice(by_digit[int(y)]) for y in ya])
    q = model.encode_multimodal(x, lengths, images.images[partner])
    zs_m = q["s"][0]
    r.update(mm_speech_own=judge.speech(model, zs_m, q["a"][0], lengths, ya),
             mm_image_own=judge.image(model, zs_m, q["i"][0], ya))
    zs_partner = model.encode_image(images.images[partner])["s"][0]
    norm = lambda t: float(t.norm(dim=1).mean())  # noqa: E731
    r["norms"] = {"zs_speech": norm(zs_a), "za": norm(za), "zs_image": norm(zs_i), "zi": norm(zi), "zs_multimodal": norm(zs_m)}
    r["distance_multimodal_zs_to"] = {"speech_zs": norm(zs_m - zs_a), "image_zs": norm(zs_m - zs_partner)}
    return {"epoch": ck["epoch"], "checkpoint": checkpoint, "checkpoint_file": ck["loaded_from"], "n_speech": len(ya), "n_images": checks["n_images"],
            "judges": judge.info, **r, "style_transfer": checks["style"]}

"""Judged generations: is what a decoder makes recognisably the intended digit?

One helper, used by ``evaluate`` (coherence), ``diagnose`` and the training-time curve: a
:class:`Judge` holds the pretrained digit classifiers of :mod:`pvae_model.eval.classifiers` and scores
decoder outputs; :func:`generation_checks` assembles the decoder inputs that tell where the digit
comes from.  Every figure is the fraction of generations labelled with the intended digit
(chance: 10 %).

Rows of :func:`generation_checks` (test split; "ref" = a random other test item of the target
modality supplies the style latent and, for speech, the length; "prior" = the style latent is
drawn from N(0, I)):

``speech_own`` / ``image_own``            z_s and style latent of the same item (reconstruction);
``speech_zs_only`` / ``image_zs_only``    style latent set to 0;
``speech_style_swapped`` / ``image_style_swapped``  style of another random item of the modality;
``speech_to_image_ref`` / ``image_to_speech_ref``   z_s from the other modality, reference style;
``speech_to_image_prior`` / ``image_to_speech_prior``  z_s from the other modality, prior style;
``image_to_speech_voices``                {training speaker: image -> speech in that speaker's voice,
                                          its mean z_a (:mod:`pvae_model.voices`)}, when given voices.
``image_to_speech_prior_word``, ``image_to_speech_voices_word``  the same generations judged by
                                          the word judge (:mod:`.word_judge`), unadapted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Judge:
    speech_clf: torch.nn.Module
    image_clf: torch.nn.Module
    info: dict  # the classifiers' own test accuracies
    words: object = None  # the speaker-adapted word-HMM judge (pvae_model.eval.word_judge.WordJudge)

    @classmethod
    def load(cls, audio_shards, image_shards, image_train_limit: int = 0, word_judge: bool = True) -> "Judge":
        """The cached judges (trained on first use); ``word_judge=False`` leaves the word judge out
        (the training curve's quick evaluations do not use it)."""
        from .classifiers import load_or_train

        sp, im, info, words = load_or_train(audio_shards, image_shards, image_train_limit=image_train_limit,
                                            word_judge=word_judge)
        return cls(sp, im, info, words)

    def adapted_predictions(self, x: torch.Tensor, lengths, groups=None, adapt: bool = True) -> np.ndarray:
        """The word judge's digit for each padded utterance of ``x`` [B, T, F], adapted without
        labels to each group (``groups``: one key per utterance, e.g. its speaker; default: the
        batch is one voice), or not adapted (``adapt=False``)."""
        return self.words.predict([x[j, : lengths[j]].numpy() for j in range(len(lengths))], groups=groups,
                                  adapt=adapt)

    @torch.no_grad()
    def speech_words(self, model, zs, z_a, lengths, want) -> float:
        """Fraction of ``decode_audio(zs, z_a, lengths)`` the word judge labels ``want``, not
        adapted: generated speech is in a training voice the judge knows, or (prior style) in no
        one voice, so there is no new voice to adapt to."""
        pred = self.adapted_predictions(model.decode_audio(zs, z_a, lengths), lengths, adapt=False)
        return float((pred == np.asarray(want)).mean())

    @torch.no_grad()
    def speech(self, model, zs, z_a, lengths, want) -> float:
        """Fraction of ``decode_audio(zs, z_a, lengths)`` the speech classifier labels ``want``."""
        return self.utterances(model.decode_audio(zs, z_a, lengths), lengths, want)

    @torch.no_grad()
    def utterances(self, x: torch.Tensor, lengths, want) -> float:
        """Fraction of the (already generated) padded FBank utterances ``x`` [B, T, F], each cut to
        its length, the speech classifier labels ``want``."""
        from .classifiers import predict_speech

        pred = predict_speech(self.speech_clf, [x[j, : lengths[j]] for j in range(len(lengths))])
        return float((pred == np.asarray(want)).mean())

    @torch.no_grad()
    def speech_predictions(self, x: torch.Tensor, lengths) -> np.ndarray:
        """The speech classifier's digit for each padded utterance of ``x`` [B, T, F]."""
        from .classifiers import predict_speech

        return predict_speech(self.speech_clf, [x[j, : lengths[j]] for j in range(len(lengths))])

    @torch.no_grad()
    def image_predictions(self, x: torch.Tensor) -> np.ndarray:
        """The image classifier's digit for each image of ``x`` [B, 1, 28, 28]."""
        from .classifiers import predict_images

        return predict_images(self.image_clf, x)

    @torch.no_grad()
    def image(self, model, zs, z_i, want) -> float:
        """Fraction of ``decode_image(zs, z_i)`` the image classifier labels ``want``."""
        return self.images(model.decode_image(zs, z_i).clamp(0, 1), want)

    @torch.no_grad()
    def images(self, x: torch.Tensor, want) -> float:
        """Fraction of the (already generated) images ``x`` the image classifier labels ``want``."""
        from .classifiers import predict_images

        return float((predict_images(self.image_clf, x) == np.asarray(want)).mean())


@torch.no_grad()
def generation_checks(model, judge: Judge, audio, images, n_images: int = 1000, seed: int = 1,
                      n_speech: int | None = None, voices: dict | None = None, words: bool = True,
                      word_voices=None) -> dict:
    """Every row of the module docstring, plus the unimodal posteriors used (for callers that want
    more from them).  ``n_speech`` limits the spoken test digits (all by default); ``voices``
    (``{name: z_a}``) adds the image -> speech row in each voice, same images and lengths;
    ``words`` adds the word judge's rows (when the judge has one), in the voices named by
    ``word_voices`` (default: every voice)."""
    from ..data import pad_audio
    from .style import style_transfer_r

    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    a_idx = np.arange(len(audio.labels)) if n_speech is None else rng.permutation(len(audio.labels))[:n_speech]
    x, lengths = pad_audio([audio.feats[i] for i in a_idx])
    qa = model.encode_audio(x, lengths)
    zs_a, za, ya = qa["s"][0], qa["a"][0], audio.labels[a_idx]
    pick = rng.permutation(len(images.labels))[:n_images]
    qi = model.encode_image(images.images[pick])
    zs_i, zi, yi = qi["s"][0], qi["i"][0], images.labels[pick]
    pa, pi = rng.permutation(len(ya)), rng.permutation(len(yi))
    ref_a = rng.integers(0, len(ya), len(yi))  # a spoken reference for every written digit
    ref_i = rng.integers(0, len(yi), len(ya))  # a written reference for every spoken digit
    r = {
        "speech_own": judge.speech(model, zs_a, za, lengths, ya),
        "speech_zs_only": judge.speech(model, zs_a, torch.zeros_like(za), lengths, ya),
        "speech_style_swapped": judge.speech(model, zs_a, za[pa], lengths[pa], ya),
    }
    # Each generated image is decoded once, then judged and (where it has a style reference among
    # the picked images) scored for style: {row: (z_s, z_i, intended digit, reference index)}.
    image_rows = {
        "image_own": (zs_i, zi, yi, np.arange(len(yi))),
        "image_zs_only": (zs_i, torch.zeros_like(zi), yi, None),
        "image_style_swapped": (zs_i, zi[pi], yi, pi),
        "speech_to_image_ref": (zs_a, zi[ref_i], ya, ref_i),
        "speech_to_image_prior": (zs_a, _prior(len(ya), zi.shape[1], seed), ya, ref_i),  # style control
    }
    x_ref = images.images[pick].squeeze(1).numpy()
    style = {}
    for key, (zs, z, want, ref) in image_rows.items():
        gen = model.decode_image(zs, z).clamp(0, 1)
        r[key] = judge.images(gen, want)
        if ref is not None:
            style[key] = style_transfer_r(x_ref[ref], yi[ref], gen.squeeze(1).numpy(), want)
    r["image_to_speech_ref"] = judge.speech(model, zs_i, za[ref_a], lengths[ref_a], yi)
    r["image_to_speech_prior"] = judge.speech(model, zs_i, _prior(len(yi), za.shape[1], seed + 1), lengths[ref_a], yi)
    if voices:
        r["image_to_speech_voices"] = {k: judge.speech(model, zs_i, v.expand(len(yi), -1), lengths[ref_a], yi)
                                       for k, v in voices.items()}
    if words and judge.words is not None:  # the same generations, judged by the word judge
        r["image_to_speech_prior_word"] = judge.speech_words(
            model, zs_i, _prior(len(yi), za.shape[1], seed + 1), lengths[ref_a], yi)
        if voices:
            r["image_to_speech_voices_word"] = {
                k: judge.speech_words(model, zs_i, v.expand(len(yi), -1), lengths[ref_a], yi) for k, v in voices.items()
                if word_voices is None or k in word_voices}
    model.train(was_training)
    return {"rows": r, "style": style, "n_speech": len(ya), "n_images": len(yi),
            "posteriors": {"speech": (qa, lengths, ya), "image": (qi, pick, yi)}}


def _prior(n: int, dim: int, seed: int) -> torch.Tensor:
    """Style latents drawn from N(0, I) with their own generator (the global RNG is left alone)."""
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


# the rows of generation_checks()["style"] (style carried over to generated images), in order
STYLE_KEYS = ("image_own", "image_style_swapped", "speech_to_image_ref", "speech_to_image_prior")
COHERENCE_KEYS = ("speech_to_image_prior", "image_to_speech_prior", "speech_to_image_ref", "image_to_speech_ref")

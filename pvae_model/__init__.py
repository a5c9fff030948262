"""pvae_model: the Partitioned VAE (Hsu & Glass, 2018), its baselines and evaluation."""

from ._version import __version__  # noqa: F401


def load(path, checkpoint: str = "last"):
    """A trained model, from a run directory or an exported bundle, ready for your own digits:
    ``load(PATH).speech_to_image(wave, sample_rate)`` and ``.image_to_speech(image)``
    (:mod:`pvae_model.generate`)."""
    from .generate import load as _load

    return _load(path, checkpoint)

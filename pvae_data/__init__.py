"""pvae_data: a Kaldi-grade data pipeline for spoken digits.

Stages (each a function here and a ``pvae-data`` command): ``prepare`` (corpus -> manifest),
``trim`` (VAD), ``fbank`` (Kaldi-exact 80-dim log-Mel filter banks).
"""

__version__ = "0.1.0"

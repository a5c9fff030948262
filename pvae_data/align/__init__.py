"""Forced alignment of connected digits: whole-word HMMs trained by flat start (see docs/alignment.md).

features  MFCC + deltas + CMN (from the Kaldi-exact filter banks)
hmm       the model, its emissions and decoding graphs, save/load
_kernels  the numba Viterbi loops
train     flat-start Viterbi training and threshold calibration
aligner   align one utterance, or reject it with the reason
ctm       CTM import / export
score     boundary errors against known boundaries
"""

from .aligner import AlignConfig, Alignment, align_words
from .mfcc import AlignFeatureConfig, align_features
from .hmm import WordHMMs, load_model, save_model
from .train import AlignTrainConfig, TrainUtterance, train_word_hmms

__all__ = ["AlignConfig", "Alignment", "align_words", "AlignFeatureConfig", "align_features", "WordHMMs",
           "load_model", "save_model", "AlignTrainConfig", "TrainUtterance", "train_word_hmms"]

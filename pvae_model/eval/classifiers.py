"""Digit classifiers per modality, trained once on the training split, used to score generations.

Cross-modal coherence (MultiVae's "coherence with pretrained classifiers"): the fraction of
generated samples that the classifier of the target modality assigns the intended digit.
The classifiers are cached next to the shards (``<audio shards>/../classifiers/``) together with
their test accuracy and the shards' fingerprint, so every run evaluated on the same data is scored
by the same judges, and a run on other shards never by theirs (:func:`judge_cache_dir`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pvae_data.io_utils import atomic_path, write_json

from ..modules import masked_utterance_norm


class SpeechDigitClassifier(nn.Module):
    """Per-utterance CMVN, then 1-D convolutions over FBank frames (``depth`` of them; from depth
    4 on, max-pooling in time after the second and third, so the last sees ~0.3 s), masked mean
    over time, dropout, linear."""

    def __init__(self, feat_dim: int = 80, width: int = 128, depth: int = 2, dropout: float = 0.0,
                 normalize: bool = True):
        super().__init__()
        self.normalize = normalize
        self.conv = nn.ModuleList([nn.Conv1d(feat_dim if i == 0 else width, width, 5, padding=2) for i in range(depth)])
        self.pool_after = (1, 2) if depth >= 4 else ()
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = (masked_utterance_norm(x, lengths) if self.normalize else x).transpose(1, 2)  # [B, F, T]
        for i, conv in enumerate(self.conv):
            h = torch.relu(conv(h))
            if i in self.pool_after:
                h = nn.functional.max_pool1d(h, 2, ceil_mode=True)
                lengths = (lengths + 1) // 2
        mask = (torch.arange(h.shape[-1])[None, :] < lengths[:, None]).to(h.dtype).unsqueeze(1)
        return self.out(self.drop((h * mask).sum(-1) / lengths[:, None].to(h.dtype)))


class ImageDigitClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _batches(n: int, size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for b in range(0, n, size):
        yield order[b:b + size]


@torch.no_grad()
def predict_speech(clf, feats: list[torch.Tensor], batch: int = 256) -> np.ndarray:
    from ..data import pad_audio

    clf.eval()
    out = []
    for b in range(0, len(feats), batch):
        x, lengths = pad_audio(feats[b:b + batch])
        out.append(clf(x, lengths).argmax(-1).numpy())
    return np.concatenate(out)


@torch.no_grad()
def predict_images(clf, images: torch.Tensor, batch: int = 1000) -> np.ndarray:
    clf.eval()
    return np.concatenate([clf(images[b:b + batch]).argmax(-1).numpy() for b in range(0, len(images), batch)])


# The speech judge (docs/voices.md, "The judge"): chosen by its leave-one-speaker-out accuracy on FSDD.
JUDGE = {"depth": 2, "width": 128, "dropout": 0.0, "epochs": 30,
         "spec_augment": {"freq_masks": 0, "freq_width": 0, "time_masks": 0, "time_width": 0}}
JUDGE_VERSION = 2  # cached judges of another version are trained anew


@torch.enable_grad()  # callable from inside evaluation code that runs under no_grad
def train_speech_classifier(train_set, epochs: int | None = None, seed: int = 0, **arch) -> SpeechDigitClassifier:
    """The speech judge trained on ``train_set`` (an AudioSet: its perturbed copies, if the shards
    hold any, are training data like the rest), with SpecAugment masks in training."""
    from ..augment import SpecAugmentConfig, spec_augment
    from ..data import pad_audio

    spec = {**JUDGE, **arch}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    masks = SpecAugmentConfig(**spec["spec_augment"])
    clf = SpeechDigitClassifier(train_set.feats[0].shape[1], width=spec["width"], depth=spec["depth"],
                                dropout=spec["dropout"])
    y = torch.from_numpy(train_set.labels.astype(np.int64))

    def loss_of(idx):
        x, lengths = pad_audio([train_set.feats[i] for i in idx])
        x = spec_augment(masked_utterance_norm(x, lengths), lengths, masks, g)
        return nn.functional.cross_entropy(clf(x, lengths), y[idx])

    _fit(clf, len(y), 64, epochs or spec["epochs"], rng, loss_of)
    return clf.eval()


@torch.enable_grad()
def train_image_classifier(train_set, epochs: int = 2, seed: int = 0) -> ImageDigitClassifier:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    clf = ImageDigitClassifier()
    y = torch.from_numpy(train_set.labels.astype(np.int64))
    _fit(clf, len(y), 128, epochs, rng, lambda idx: nn.functional.cross_entropy(clf(train_set.images[idx]), y[idx]))
    return clf


def _fit(clf: nn.Module, n: int, batch_size: int, epochs: int, rng, loss_of) -> None:
    """The judges are fitted in memory, as a scikit-learn estimator is (a few epochs of plain Adam,
    no run directory: they are instruments of evaluation, cached by ``load_or_train``)."""
    opt = torch.optim.Adam(clf.parameters(), 1e-3)
    for _ in range(epochs):
        clf.train()
        for idx in _batches(n, batch_size, rng):
            loss = loss_of(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()


def shards_fingerprint(audio_shards: str | Path, image_shards: str | Path) -> str:
    """sha256 over the shard files' own sha256s, which each shards' ``index.json`` records: the
    judges belong to these data wherever they lie (a moved ``exp/`` keeps its judges, shards made
    anew with other contents do not)."""
    import hashlib

    from pvae_data.shards.schema import load_index

    h = hashlib.sha256()
    for d in (audio_shards, image_shards):
        try:
            h.update("".join(sorted(s["sha256"] for s in load_index(d)[1]["shards"])).encode())
        except (OSError, ValueError, KeyError, TypeError):  # shards without an index: known by their place
            h.update(str(Path(d).resolve()).encode())
        h.update(b"/")
    return h.hexdigest()


def _read_info(cache: Path) -> dict | None:
    try:
        info = json.loads((cache / "classifiers.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _cache_fits(info: dict, fingerprint: str, audio_shards: Path) -> bool:
    """The cached judges were trained on these shards (caches written before the fingerprint was
    recorded: on shards at this path)."""
    if "shards_fingerprint" in info:
        return info["shards_fingerprint"] == fingerprint
    return info.get("audio_shards") == str(audio_shards)


def judge_cache_dir(audio_shards: str | Path, fingerprint: str) -> Path:
    """``<audio shards>/../classifiers/``, unless it holds the judges of other shards in the same
    folder (``shards/audio_clean`` beside ``shards/audio``): then ``classifiers-<shards' name>/``.
    Shards made anew in place of the ones it was trained on (the same name) train it anew there."""
    shards = Path(audio_shards).resolve()
    first = shards.parent / "classifiers"
    info = _read_info(first)
    if info is None or _cache_fits(info, fingerprint, shards):
        return first
    if Path(str(info.get("audio_shards"))).name == shards.name:
        return first
    return shards.parent / f"classifiers-{shards.name}"


def load_or_train(audio_shards: str | Path, image_shards: str | Path, cache: str | Path | None = None,
                  image_train_limit: int = 0, word_judge: bool = True):
    """(speech classifier, image classifier, info with test accuracies, word judge); trained once,
    then cached.  The word judge (:mod:`pvae_model.eval.word_judge`, the speaker-adapted one) has
    its own cache beside the classifiers, so adding it left cached classifiers as they were; its
    accuracies join ``info`` under ``word_judge*``.  ``word_judge=False``: (..., None) instead.
    A cache of another version or trained on other shards (their fingerprint) is trained anew.

    ``image_train_limit`` > 0 trains the image classifier on that many training images only
    (for quick tests; the default uses all 60,000).
    """
    from ..data import load_audio_split, load_image_split
    from ..run import load_cmvn

    fingerprint = shards_fingerprint(audio_shards, image_shards)
    cache = Path(cache) if cache else judge_cache_dir(audio_shards, fingerprint)
    info_path = cache / "classifiers.json"
    sp = SpeechDigitClassifier(width=JUDGE["width"], depth=JUDGE["depth"], dropout=JUDGE["dropout"])
    im = ImageDigitClassifier()
    info = _read_info(cache)
    fits = info is not None and _cache_fits(info, fingerprint, Path(audio_shards).resolve())
    if fits and info.get("judge_version") == JUDGE_VERSION:
        sp.load_state_dict(torch.load(cache / "speech.pt", weights_only=True))
        im.load_state_dict(torch.load(cache / "image.pt", weights_only=True))
        if not word_judge:
            return sp.eval(), im.eval(), info, None
        words, word_info = load_or_train_word_judge(audio_shards, cache)
        return sp.eval(), im.eval(), {**info, **word_info}, words
    cmvn = load_cmvn(audio_shards)
    a_tr, a_te = load_audio_split(audio_shards, "train", cmvn=cmvn), load_audio_split(audio_shards, "test", cmvn=cmvn)
    i_tr, i_te = load_image_split(image_shards, "train"), load_image_split(image_shards, "test")
    if image_train_limit:
        i_tr = type(i_tr)(i_tr.images[:image_train_limit], i_tr.labels[:image_train_limit], i_tr.keys[:image_train_limit])
    with torch.random.fork_rng():  # a trainer that loads the judges keeps its own random stream
        sp, im = train_speech_classifier(a_tr), train_image_classifier(i_tr)
    from pvae_data.perturb import base_speaker

    from .speakers import seen_in_training, training_speakers

    correct = predict_speech(sp, a_te.feats) == a_te.labels
    held = ~seen_in_training(a_te.speakers, training_speakers(audio_shards))
    info = {"judge_version": JUDGE_VERSION, "speech_judge": JUDGE,
            "speech_test_accuracy": float(correct.mean()),
            # on the test speakers training never heard: the judge's leave-one-speaker-out accuracy
            "speech_held_out_accuracy": float(correct[held].mean()) if held.any() else None,
            "speech_seen_accuracy": float(correct[~held].mean()) if (~held).any() else None,
            "speech_held_out_speakers": sorted({base_speaker(s) for s, h in zip(a_te.speakers, held) if h}),
            "image_test_accuracy": float((predict_images(im, i_te.images) == i_te.labels).mean()),
            "image_train_images": len(i_tr.labels), "speech_train_utterances": len(a_tr.labels),
            "audio_shards": str(Path(audio_shards).resolve()), "image_shards": str(Path(image_shards).resolve()),
            "shards_fingerprint": fingerprint}
    # Each file whole under a temporary name, then renamed, the info (what says the cache is there)
    # last: runs started together on the same shards each train the judges, and none of them reads
    # a file another is still writing.
    for name, net in (("speech.pt", sp), ("image.pt", im)):
        with atomic_path(cache / name) as tmp:
            torch.save(net.state_dict(), tmp)
    write_json(info_path, info)
    if not word_judge:
        return sp.eval(), im.eval(), info, None
    words, word_info = load_or_train_word_judge(audio_shards, cache, a_tr, a_te, fresh=True)
    return sp.eval(), im.eval(), {**info, **word_info}, words


def load_or_train_word_judge(audio_shards: str | Path, cache: Path, a_tr=None, a_te=None, fresh: bool = False):
    """(word judge, its accuracies) from ``cache/word_judge/``, trained on the shards' training
    split when absent, unreadable or of another version, without its perturbed copies (they cost
    it 1.3 points leave-one-speaker-out, 90.3 against 91.6 %, and triple its training).
    Accuracies on the test split: adapted without labels to each test speaker, on the held-out
    and the seen speakers, and unadapted.  ``fresh``: trained anew whatever is cached (the
    classifiers beside it were: the shards changed)."""
    from pvae_data.perturb import base_speaker

    from ..data import load_audio_split
    from ..run import load_cmvn
    from .speakers import seen_in_training, training_speakers
    from .word_judge import WORD_JUDGE_VERSION, WordJudge

    d = cache / "word_judge"
    info_path = d / "accuracy.json"
    if info_path.exists() and not fresh:
        try:
            info = json.loads(info_path.read_text())
            if isinstance(info, dict) and info.get("word_judge_version") == WORD_JUDGE_VERSION:
                return WordJudge.load(d), info
        except (OSError, ValueError) as e:  # a damaged cache is trained anew, and said so
            print(f"warning: {d}: unreadable word judge cache ({str(e)[:80]}); training it anew", file=sys.stderr)
    if a_tr is None:
        cmvn = load_cmvn(audio_shards)
        a_tr, a_te = load_audio_split(audio_shards, "train", cmvn=cmvn), load_audio_split(audio_shards, "test", cmvn=cmvn)
    real = [i for i, s in enumerate(a_tr.speakers) if base_speaker(s) == s] or list(range(len(a_tr.labels)))
    words = WordJudge.train([a_tr.feats[i].numpy() for i in real], a_tr.labels[real])
    held = ~seen_in_training(a_te.speakers, training_speakers(audio_shards))
    feats = [f.numpy() for f in a_te.feats]
    adapted, plain = words.predict(feats, groups=[base_speaker(s) for s in a_te.speakers], with_first=True)
    adapted, plain = adapted == a_te.labels, plain == a_te.labels
    info = {"word_judge_version": WORD_JUDGE_VERSION, "word_judge": words.cfg.to_dict(),
            "word_judge_train_utterances": len(real),
            # adapted to each test speaker without labels; on the held-out speakers: its own
            # leave-one-speaker-out accuracy
            "word_judge_held_out_accuracy": float(adapted[held].mean()) if held.any() else None,
            "word_judge_seen_accuracy": float(adapted[~held].mean()) if (~held).any() else None,
            "word_judge_held_out_unadapted": float(plain[held].mean()) if held.any() else None,
            "word_judge_seen_unadapted": float(plain[~held].mean()) if (~held).any() else None}
    words.save(d)
    write_json(info_path, info)  # after the model, as for the classifiers
    return words, info

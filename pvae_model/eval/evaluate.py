"""``pvae-model evaluate RUN_DIR``: the paper's metrics and figures for one trained run.

Writes ``RUN_DIR/eval/``: ``metrics.json`` and figures (inertia, t-SNE, style-transfer and
cross-modal grids, training curves) and WAV files of generated speech.  ``metrics.json`` holds,
for every latent of the *unimodal* encoders on the test split:

- ``purity``: k-means purity of the posterior means over several seeds (the paper's Table 1),
  and of the raw inputs (the paper's "Feat." column);
- ``rate``: mean KL to the prior (nats) - a latent with purity but no rate holds nothing usable;
- ``probe``: a linear probe's digit accuracy on posterior *samples* (trained on the train split);

plus ``inertia`` for k = 1..20, and for the PVAE ``coherence`` both ways (prior and reference style),
``generation`` (:mod:`pvae_model.eval.judge`), ``objective`` and ``deviations`` (from the spec).
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pvae_data.config import ConfigMixin

from .plots import pyplot

DIGIT = "0123456789"


@dataclass(frozen=True)
class EvalConfig(ConfigMixin):
    checkpoint: str = "best"  # best | last | a path to a .pt file
    audio_shards: str | None = None  # override the shard paths saved in the run (a moved run)
    image_shards: str | None = None
    seeds: int = 5  # k-means initialisations for mean +- std
    max_k: int = 20  # inertia curve k = 1..max_k
    tsne_images: int = 1000  # test images in the t-SNE plots (all spoken test digits are used)
    styles: int = 4  # rows of style references in the grids
    wav_refs: int = 2  # reference speakers for written -> spoken WAVs
    coherence_images: int = 1000  # test images generated as speech for the image -> speech coherence
    classifier_images: int = 0  # MNIST training images for the judge classifier (0 = all)
    probe_images: int = 10000  # MNIST training images the linear probes are fitted on (0 = all)
    seed: int = 0
    vocoder: str = ""  # a vocoder run (pvae-model vocoder) for the WAVs; "" = Griffin-Lim


def evaluate(run_dir: str | Path, ecfg: EvalConfig = EvalConfig()) -> dict:
    """Compute everything; returns the metrics dict (also written to ``eval/metrics.json``)."""
    from .metrics import LATENT_NAMES, encode_posteriors, kmeans_purity, latent_purity, rate
    from ..run import load_run
    from ..models import MODALITIES

    t0 = time.perf_counter()
    run = Path(run_dir)
    curves = _read_curves(run / "metrics.jsonl")  # first: a damaged log is named before minutes of work
    out = run / "eval"
    out.mkdir(parents=True, exist_ok=True)
    ck, cfg, model, audio, images, cmvn = load_run(run, ecfg.checkpoint, audio_shards=ecfg.audio_shards,
                                                   image_shards=ecfg.image_shards)
    has = MODALITIES[cfg.model]
    post = encode_posteriors(model, audio if "audio" in has else None, images if "image" in has else None)
    means = {k: mu for k, (mu, _) in post.items()}
    metrics: dict = {"model": cfg.model, "epoch": ck["epoch"], "checkpoint": ecfg.checkpoint,
                     "checkpoint_file": ck["loaded_from"],
                     "objective": cfg.pvae.objective if cfg.model == "pvae" else None,
                     "deviations": cfg.deviations(),
                     "size_changes": cfg.pvae.size_changes(),
                     "vocoder": ecfg.vocoder or "griffin-lim",
                     "cmvn": {"mode": cfg.cmvn, "fallback_speakers": audio.cmvn_fallback},
                     "n_speech": len(audio.labels), "n_images": len(images.labels),
                     "purity": latent_purity(means, audio.labels, images.labels, ecfg.seeds),
                     "rate": {LATENT_NAMES[k]: rate(*v) for k, v in post.items()},
                     "probe": _probes(model, cfg, post, audio.labels, images.labels, ecfg)}
    # The paper's "Feat." column: k-means on the raw inputs (mean-pooled normalised FBank, pixels).
    for name, x, y in (("feat_speech", np.stack([f.mean(0).numpy() for f in audio.feats]), audio.labels),
                       ("feat_image", images.images.flatten(1).numpy(), images.labels)):
        vals = [kmeans_purity(x, y, seed=s, n_init=1) for s in range(ecfg.seeds)]
        metrics["purity"][name] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    names = LATENT_NAMES
    metrics["inertia"] = {names[k]: _inertia(means[k], ecfg.max_k, ecfg.seed) for k in ("s_audio", "s_image") if k in means}
    _plot_inertia(metrics["inertia"], out / "inertia.png")
    _plot_tsne(means, audio.labels, images.labels, ecfg, out)
    from .speakers import training_speakers

    metrics["speakers"] = training_speakers(cfg.audio_shards)  # which voices training heard
    if cfg.model == "pvae":
        _generation(model, audio, images, cmvn, cfg, ecfg, out)
        metrics.update(_coherence(model, audio, images, cfg, ecfg))
        metrics.update(_per_speaker(model, audio, images, cfg, ecfg, metrics["speakers"]))
    _plot_curves(curves, out / "training_curves.png")
    from ..provenance import provenance

    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    metrics["provenance"] = provenance({"audio_shards": cfg.audio_shards, "image_shards": cfg.image_shards})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _per_speaker(model, audio, images, cfg, ecfg: EvalConfig, speakers_info: dict) -> dict:
    """``per_speaker``, ``speaker_groups`` (seen / held-out) and ``confusion``: :mod:`.speakers`."""
    from .judge import Judge
    from .speakers import speaker_rows

    judge = Judge.load(cfg.audio_shards, cfg.image_shards, image_train_limit=ecfg.classifier_images)
    r = speaker_rows(model, judge, audio, images, speakers_info, n_images=ecfg.coherence_images, seed=ecfg.seed + 1,
                     one_wav=cfg.cmvn == "speaker")
    return {"per_speaker": r["per_speaker"], "speaker_groups": r["groups"], "confusion": r["confusion"]}


@torch.no_grad()
def _coherence(model, audio, images, cfg, ecfg: EvalConfig) -> dict:
    """``coherence``: fraction of cross-modal generations that a pretrained classifier labels with
    the intended digit, both ways, with the style latent from the prior and from a random
    reference item (``speech_to_image`` / ``image_to_speech`` = the reference-style figures);
    ``generation``: every row of :func:`pvae_model.eval.judge.generation_checks`; ``voices``:
    image -> speech in each training speaker's voice (:mod:`pvae_model.voices`; ``default`` is the
    voice ``generate`` speaks in), beside the paper's prior-style figure.

    Speech -> image uses every spoken test digit, image -> speech ``coherence_images`` test images.
    """
    from ..voices import run_voices, typical_voice
    from .judge import COHERENCE_KEYS, Judge, generation_checks

    judge = Judge.load(cfg.audio_shards, cfg.image_shards, image_train_limit=ecfg.classifier_images)
    voices = run_voices(model, cfg.audio_shards, cfg.cmvn, cfg.fbank_floor_db)
    checks = generation_checks(model, judge, audio, images, n_images=ecfg.coherence_images, seed=ecfg.seed + 1,
                               voices=voices, word_voices=[typical_voice(voices)] if voices else None)
    rows = checks["rows"]
    by_voice, by_voice_words = rows.pop("image_to_speech_voices", {}), rows.pop("image_to_speech_voices_word", {})
    words = rows.pop("image_to_speech_prior_word", None)  # the same generations, judged by the word judge
    coherence = {k: rows[k] for k in COHERENCE_KEYS}
    if words is not None:
        coherence["word_judge"] = {"image_to_speech_prior": words}
    coherence.update(speech_to_image=rows["speech_to_image_ref"], image_to_speech=rows["image_to_speech_ref"],
                     n_speech_to_image=checks["n_speech"], n_image_to_speech=checks["n_images"],
                     classifiers=judge.info)
    return {"coherence": coherence, "generation": {k: v for k, v in rows.items() if k not in COHERENCE_KEYS},
            "style_transfer": checks["style"],
            "voices": {"default": typical_voice(voices), "image_to_speech": by_voice,
                       "image_to_speech_word_judge": by_voice_words}}


def _probes(model, cfg, post_test: dict, a_labels, i_labels, ecfg: EvalConfig) -> dict:
    """Linear-probe digit accuracy on posterior samples of every latent (fit on train, score on test)."""
    from ..data import load_audio_split, load_image_split
    from .metrics import LATENT_NAMES, encode_posteriors, sample_probe_accuracy
    from ..models import MODALITIES

    has = MODALITIES[cfg.model]
    a_tr = load_audio_split(cfg.audio_shards, "train", mode=cfg.cmvn, floor_db=cfg.fbank_floor_db) if "audio" in has else None
    i_tr = load_image_split(cfg.image_shards, "train") if "image" in has else None
    if i_tr is not None and ecfg.probe_images and ecfg.probe_images < len(i_tr.labels):
        idx = np.random.default_rng(ecfg.seed).permutation(len(i_tr.labels))[: ecfg.probe_images]
        i_tr = type(i_tr)(i_tr.images[idx], i_tr.labels[idx], [i_tr.keys[i] for i in idx])
    post_train = encode_posteriors(model, a_tr, i_tr)
    out = {}
    for key, test in post_test.items():
        speech = key in ("s_audio", "a")
        y_tr = (a_tr if speech else i_tr).labels
        out[LATENT_NAMES[key]] = sample_probe_accuracy(post_train[key], y_tr, test, a_labels if speech else i_labels,
                                                       seed=ecfg.seed)
    return out


def _inertia(x: np.ndarray, max_k: int, seed: int) -> list[float]:
    from sklearn.cluster import KMeans

    return [float(KMeans(n_clusters=k, n_init=3, random_state=seed).fit(x).inertia_) for k in range(1, max_k + 1)]


CURVE_TERMS = ("nll_audio", "nll_image", "cross_nll_audio", "cross_nll_image", "kl_s", "kl_a", "kl_i",
               "coherence_audio", "coherence_image", "contrastive",
               # plus terms, plotted when the run has them
               "digit_critic_ce_audio", "digit_critic_ce_image")
CURVE_EVALS = ("purity_zs_speech", "purity_zs_image", "coh_speech_to_image_prior", "coh_image_to_speech_prior",
               "coh_speech_to_image_ref", "coh_image_to_speech_ref", "gen_speech_own", "gen_image_own")


def _read_curves(metrics_path: Path) -> list[dict]:
    """The training log's rows for the curves figure; a damaged log is a warning naming the file
    and line (the curves are then left out: the model's evaluation does not need them)."""
    if not metrics_path.exists():
        return []
    rows = []
    for i, ln in enumerate(metrics_path.read_text(errors="replace").splitlines(), 1):
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
            if not isinstance(row, dict) or not isinstance(row.get("minutes"), (int, float)):
                raise ValueError("not a metrics record")
        except ValueError as e:
            print(f"warning: {metrics_path}: line {i} is not a metrics record ({str(e)[:60]}); "
                  f"no training_curves.png", file=sys.stderr)
            return []
        rows.append(row)
    return rows


def _plot_curves(rows: list[dict], path: Path) -> None:
    """Every loss term (log scale) and every quick evaluation against training minutes."""
    if not rows:
        return
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    t = [r["minutes"] for r in rows]
    for k in CURVE_TERMS:
        if k in rows[0]:
            ax1.plot(t, [r[k] for r in rows], label=k, lw=1.2)
    ax1.set_yscale("symlog", linthresh=1.0)  # Gaussian NLLs go negative once the fit is sharp
    ax1.set_xlabel("training minutes")
    ax1.set_title("loss terms (per pair, epoch mean)", fontsize=10)
    ax1.legend(fontsize=7, ncol=2)
    plotted = 0
    for k in CURVE_EVALS:
        pts = [(r["minutes"], 100 * r[k]) for r in rows if k in r]
        if pts:
            ax2.plot(*zip(*pts), marker="o", ms=3, label=k.replace("coh_", "coherence "))
            plotted += 1
    ax2.axhline(90, color="grey", ls="--", lw=1)
    ax2.set_xlabel("training minutes")
    ax2.set_ylabel("%")
    ax2.set_ylim(0, 101)
    ax2.set_title("quick evaluation on the test split", fontsize=10)
    if plotted:
        ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_inertia(inertia: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, vals in inertia.items():
        k = np.arange(1, len(vals) + 1)
        ax.plot(k, np.asarray(vals) / vals[0], marker="o", ms=3, label=name.replace("zs_", "z_s from "))
    ax.axvline(10, color="grey", ls="--", lw=1)
    ax.set_xlabel("k (k-means clusters)")
    ax.set_ylabel("inertia / inertia at k = 1")
    ax.set_xticks(range(1, len(next(iter(inertia.values()))) + 1, 2))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_tsne(means: dict, a_labels, i_labels, ecfg: EvalConfig, out: Path) -> None:
    plt = pyplot()
    rng = np.random.default_rng(ecfg.seed)
    sub = rng.permutation(len(i_labels))[: ecfg.tsne_images]
    panels = []
    if "s_audio" in means:
        panels.append(("z_s from speech", means["s_audio"], a_labels, None))
    if "s_image" in means:
        panels.append(("z_s from images", means["s_image"][sub], i_labels[sub], None))
    if "s_audio" in means and "s_image" in means:
        pooled = np.concatenate([means["s_audio"], means["s_image"][sub]])
        marks = np.r_[np.zeros(len(a_labels)), np.ones(len(sub))]
        panels.append(("z_s pooled (o speech, x images)", pooled, np.r_[a_labels, i_labels[sub]], marks))
    if "a" in means:
        panels.append(("z_a (speech style)", means["a"], a_labels, None))
    if "i" in means:
        panels.append(("z_i (image style)", means["i"][sub], i_labels[sub], None))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (title, x, y, marks) in zip(axes[0], panels):
        e = _tsne(x, ecfg.seed)
        if e is None:  # a collapsed latent: every point in one place (t-SNE would crash on it)
            ax.text(0.5, 0.5, "collapsed:\nall points coincide", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(title, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if marks is None:
            sc = ax.scatter(e[:, 0], e[:, 1], c=y, cmap="tab10", s=6, vmin=0, vmax=9)
        else:
            for m, sym in ((0, "o"), (1, "x")):
                w = marks == m
                sc = ax.scatter(e[w, 0], e[w, 1], c=y[w], cmap="tab10", s=8, marker=sym, vmin=0, vmax=9)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=axes[0].tolist(), ticks=range(10), fraction=0.02, label="digit")
    fig.savefig(out / "tsne.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _tsne(x: np.ndarray, seed: int) -> np.ndarray | None:
    """2-D t-SNE of ``x``; None for a collapsed latent (fewer than 3 distinct points), whose PCA
    initialisation divides by zero and makes sklearn's Barnes-Hut code crash the process."""
    from sklearn.manifold import TSNE

    x = np.asarray(x, dtype=np.float64)
    if len(np.unique(np.round(x, 7), axis=0)) < 3:
        return None
    top = np.linalg.svd(x - x.mean(0), compute_uv=False)[0]
    perplexity = min(30.0, max(2.0, (len(x) - 1) / 3))  # small test sets need a smaller one
    init = "pca" if top > 1e-6 * np.sqrt(len(x)) else "random"
    return TSNE(n_components=2, init=init, perplexity=perplexity, random_state=seed).fit_transform(x)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _first_of_each_digit(labels: np.ndarray, start: int = 0) -> np.ndarray:
    return np.array([np.flatnonzero(labels == d)[start % max(1, (labels == d).sum())] for d in range(10)])


@contextmanager
def _grid_figure(plt, rows: int, cols: int, width: float, title: str, path: Path):
    """A rows x cols grid of bare axes, titled and saved to ``path`` when the block ends."""
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, rows))
    for ax in axes.ravel():
        ax.axis("off")
    yield axes
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


@torch.no_grad()
def _generation(model, audio, images, cmvn, cfg, ecfg: EvalConfig, out: Path) -> None:
    """Style transfer (within a modality) and cross-modal generation grids, plus WAV files."""
    import soundfile as sf

    from ..data import pad_audio
    from ..run import load_fbank_config
    from ..vocoder import speaking_vocoder
    from .audio_synth import fbank_to_wave

    plt = pyplot()
    rng = np.random.default_rng(ecfg.seed)
    dig_i = _first_of_each_digit(images.labels)
    dig_a = _first_of_each_digit(audio.labels)
    sty_i = rng.choice(len(images.labels), ecfg.styles, replace=False)
    sty_a = rng.choice(len(audio.labels), ecfg.styles, replace=False)

    def enc_a(idx):
        x, lengths = pad_audio([audio.feats[i] for i in idx])
        q = model.encode_audio(x, lengths)
        return q["s"][0], q["a"][0], lengths

    def enc_i(idx):
        q = model.encode_image(images.images[idx])
        return q["s"][0], q["i"][0]

    (zs_i, _), (_, zi_sty) = enc_i(dig_i), enc_i(sty_i)
    (zs_a, _, _), (_, za_sty, len_sty) = enc_a(dig_a), enc_a(sty_a)

    def image_grid(zs, zi, top, title, path):
        imgs = model.decode_image(zs.repeat(len(zi), 1), zi.repeat_interleave(len(zs), 0)).clamp(0, 1)
        with _grid_figure(plt, len(zi) + 1, len(zs) + 1, 1.0, title, path) as axes:
            for c in range(len(zs)):
                top(axes[0, c + 1], c)
            for r in range(len(zi)):
                axes[r + 1, 0].imshow(_np(images.images[sty_i[r], 0]), cmap="gray")
                for c in range(len(zs)):
                    axes[r + 1, c + 1].imshow(_np(imgs[r * len(zs) + c, 0]), cmap="gray")

    image_grid(zs_i, zi_sty, lambda ax, c: ax.imshow(_np(images.images[dig_i[c], 0]), cmap="gray"),
               "image style transfer: z_s from the top row, z_i from the left column", out / "style_images.png")
    image_grid(zs_a, zi_sty, lambda ax, c: ax.imshow(_np(audio.feats[dig_a[c]].T), origin="lower", aspect="auto"),
               "spoken -> written: z_s from the spoken digit on top, z_i from the left column",
               out / "cross_speech_to_image.png")

    fcfg = load_fbank_config(cfg.audio_shards)
    vocoder = speaking_vocoder(ecfg.vocoder, fcfg)

    def fbank_grid(zs, top, title, path, wav_prefix=None):
        with _grid_figure(plt, len(za_sty) + 1, len(zs) + 1, 1.3, title, path) as axes:
            for c in range(len(zs)):
                top(axes[0, c + 1], c)
            for r in range(len(za_sty)):
                t = int(len_sty[r])
                axes[r + 1, 0].imshow(_np(audio.feats[sty_a[r]].T), origin="lower", aspect="auto")
                gen = model.decode_audio(zs, za_sty[r].expand(len(zs), -1), torch.full((len(zs),), t))
                for c in range(len(zs)):
                    axes[r + 1, c + 1].imshow(_np(gen[c, :t].T), origin="lower", aspect="auto")
                    if wav_prefix and r < ecfg.wav_refs:
                        wave = fbank_to_wave(gen[c, :t].numpy(), fcfg, cmvn, vocoder=vocoder)
                        sf.write(out / f"{wav_prefix}_digit{c}_ref{r}.wav", wave, int(fcfg["sample_rate"]))

    fbank_grid(zs_a, lambda ax, c: ax.imshow(_np(audio.feats[dig_a[c]].T), origin="lower", aspect="auto"),
               "speech style transfer (FBank): z_s from the top row, z_a from the left column",
               out / "style_speech.png", wav_prefix="style")
    fbank_grid(zs_i, lambda ax, c: ax.imshow(_np(images.images[dig_i[c], 0]), cmap="gray"),
               "written -> spoken: z_s from the written digit on top, z_a from the left column",
               out / "cross_image_to_speech.png", wav_prefix="written_to_spoken")
    for r in range(min(ecfg.wav_refs, len(sty_a))):
        ref = fbank_to_wave(audio.feats[sty_a[r]].numpy(), fcfg, cmvn, vocoder=vocoder)
        sf.write(out / f"reference_speaker_ref{r}.wav", ref, int(fcfg["sample_rate"]))

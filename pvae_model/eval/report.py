"""``pvae-model report RUN_DIR... --out report.html``: one self-contained page for a person.

Metrics of every evaluated run side by side with the paper's Table 1, the training curves, every
figure of ``RUN_DIR/eval`` and an audio player for every generated WAV, all embedded (base64), so
the page can be mailed or archived as one file.  A small inline script records in the page
(``data-images-ok``, ``data-audio``) whether every image decoded, for automated checks.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from pvae_data.io_utils import atomic_open

# Hsu & Glass (2018), Table 1 (k-means purity, %): (z_s speech, z_s image, z_a, z_i)
PAPER = [
    ("paper: PVAE (TIDIGITS-MNIST)", 99.77, 99.10, 24.79, 20.63),
    ("paper: PVAE, no β (TIDIGITS-MNIST)", 65.69, 97.95, None, None),
    ("paper: JMVAE-kl (TIDIGITS-MNIST)", 45.48, 98.16, None, None),
    ("paper: VAE-sp (TIDIGITS)", 45.73, None, None, None),
    ("paper: VAE-im (MNIST)", None, 76.38, None, None),
    ("paper: PVAE (SecuVoice-MNIST)", 99.30, 99.02, None, None),
]

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1320px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:88%;display:block;overflow-x:auto}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.paper td{color:#666;font-style:italic}
img{max-width:100%;border:1px solid #eee;margin:4px 0}figure{margin:1em 0}figcaption{color:#555;font-size:90%}
.audio{display:inline-block;margin:4px 12px 4px 0;font-size:85%}
"""

CHECK = """
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.imagesOk = imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + imgs.length;
  document.body.dataset.audio = String(document.querySelectorAll('audio').length);
});
"""


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _pct(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def _row(name: str, cells: list, cls: str = "") -> str:
    """Every cell is text, escaped: a metrics file from elsewhere cannot put markup in the page."""
    tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
    return f"<tr class='{html.escape(cls, quote=True)}'><td>{html.escape(str(name))}</td>{tds}</tr>"


COLUMNS = ["z_s speech", "z_s image", "z_a", "z_i", "Feat. speech", "Feat. image",
           "coh. speech→image (prior style)", "coh. image→speech (prior style)",
           "coh. speech→image (ref. style)", "coh. image→speech (ref. style)", "objective"]
LATENTS = (("zs_speech", "z_s speech"), ("zs_image", "z_s image"), ("za_speech", "z_a"), ("zi_image", "z_i"))
GENERATION = ("speech_own", "image_own", "speech_zs_only", "image_zs_only", "speech_style_swapped",
              "image_style_swapped")


def load_runs(run_dirs: list[str | Path]) -> list[tuple[Path, dict]]:
    """(run dir, eval/metrics.json) for every run; a clear error when one was not evaluated."""
    runs = []
    for r in map(Path, run_dirs):
        mpath = r / "eval" / "metrics.json"
        if not mpath.exists():
            raise FileNotFoundError(f"{mpath}: run `pvae-model evaluate {r}` first")
        try:
            m = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{mpath}: not valid JSON ({e})") from None
        if not isinstance(m, dict):
            raise ValueError(f"{mpath}: not a JSON object")
        runs.append((r, m))
    return runs


def deviation_notes(runs: list[tuple[Path, dict]]) -> list[str]:
    """One footnote per distinct set of deviations (empty: none), each naming what it departs from:
    the spec's objective for PVAE and its baselines, the paper's documented runs for a bridge."""
    notes = []
    for _, m in runs:
        text = _deviation_text(m)
        if text and text not in notes:
            notes.append(text)
    return notes


def _deviation_text(m: dict) -> str:
    dev = m.get("deviations") or {}
    if not dev:
        return ""
    source = ("Tian & Engel's documented runs" if m.get("objective") == "bridge"
              else "the paper's objective (shared/docs/pvae-spec.md)")
    return f"deviations from {source}: " + ", ".join(f"{k} = {v}" for k, v in dev.items())


def size_notes(runs: list[tuple[Path, dict]]) -> list[str]:
    """One line per run whose layer sizes differ from the paper's (``size_changes``)."""
    from ..models.pvae_config import PAPER_SIZES

    notes = []
    for r, m in runs:
        changes = m.get("size_changes") or {}
        if changes:
            text = ", ".join(f"{k} = {v} (paper: {PAPER_SIZES[k]})" for k, v in changes.items())
            notes.append(f"{r.name}: {text}")
    return notes


def _objective_cell(m: dict, notes: list[str]) -> str:
    text = _deviation_text(m)
    if not text:
        return m.get("objective") or "spec"
    return f"{m.get('objective') or 'spec'} [{notes.index(text) + 1}]"


def _word_judge_sentence(m: dict) -> str:
    """The speaker-adapted word judge: its accuracy on new voices and its image -> speech figure."""
    c = m.get("coherence") or {}
    cl, words = c.get("classifiers") or {}, (c.get("word_judge") or {}).get("image_to_speech_prior")
    held = cl.get("word_judge_held_out_accuracy")
    if words is None:
        return ""
    return (f" The word judge (whole-word HMMs): image→speech {100 * words:.1f} % (prior style)"
            + (f"; on the real takes of voices it never heard, adapted to each without labels, "
               f"{100 * held:.1f} %" if held is not None else "") + ".")


def voice_section(m: dict) -> list[str]:
    """Image -> speech in each training speaker's voice, beside the paper's prior style."""
    v = m.get("voices") or {}
    if not v.get("image_to_speech"):
        return []
    cells = ", ".join(f"{html.escape(k)} {100 * a:.1f} %" for k, a in v["image_to_speech"].items())
    prior = (m.get("coherence") or {}).get("image_to_speech_prior")
    return [f"<p>Image→speech in the voices training heard (each speaker's mean z_a; "
            f"<code>generate</code> speaks in {html.escape(str(v.get('default')))}'s): {cells}"
            + (f"; with the prior's style (the paper's) {100 * prior:.1f} %" if prior is not None else "")
            + ".</p>"]


def table_rows(runs: list[tuple[Path, dict]], paper: bool = True) -> list[tuple[str, list[str], bool]]:
    """(name, cells in COLUMNS order, is_paper) for our runs, then the paper's Table 1 rows."""
    rows = []
    notes = deviation_notes(runs)
    for r, m in runs:
        p, c = m["purity"], m.get("coherence", {})
        get = lambda k: f"{100 * p[k]['mean']:.2f} ± {100 * p[k]['std']:.2f}" if k in p else "–"  # noqa: E731
        coh = lambda k: f"{100 * c[k]:.1f}" if k in c else "–"  # noqa: E731
        rows.append((f"{r.name} ({m['model']}, epoch {m['epoch']})",
                     [get("zs_speech"), get("zs_image"), get("za_speech"), get("zi_image"),
                      get("feat_speech"), get("feat_image"), coh("speech_to_image_prior"), coh("image_to_speech_prior"),
                      coh("speech_to_image"), coh("image_to_speech"), _objective_cell(m, notes)], False))
    if paper:
        rows += [(name, [_pct(v) for v in vals] + ["–"] * 6 + ["paper"], True) for name, *vals in PAPER]
    return rows


def latent_rows(runs: list[tuple[Path, dict]]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Rate (nats) and sample-probe accuracy (%) of every latent: what purity on means cannot show."""
    cols = [f"{label} {what}" for _, label in LATENTS for what in ("rate", "probe")]
    rows = []
    for r, m in runs:
        rate, probe = m.get("rate") or {}, m.get("probe") or {}
        cells = []
        for key, _ in LATENTS:
            cells.append(f"{rate[key]:.1f}" if key in rate else "–")
            cells.append(f"{100 * probe[key]:.1f}" if key in probe else "–")
        rows.append((f"{r.name} ({m['model']})", cells))
    return cols, rows


def generation_rows(runs: list[tuple[Path, dict]]) -> list[tuple[str, list[str]]]:
    rows = []
    for r, m in runs:
        g = m.get("generation")
        if g:
            rows.append((f"{r.name} ({m['model']})", [f"{100 * g[k]:.1f}" if k in g else "–" for k in GENERATION]))
    return rows


def style_rows(runs: list[tuple[Path, dict]]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Style carried over to generated images (``eval/metrics.json`` "style_transfer"): Pearson r of
    the reference's and the generation's class-centred slant / ink / width (pvae_model.eval.style),
    one row per run and way of generating."""
    from .judge import STYLE_KEYS
    from .style import FEATURES

    rows = []
    for r, m in runs:
        st = m.get("style_transfer") or {}
        for kind in STYLE_KEYS:
            if kind in st:
                rows.append((f"{r.name}: {kind.replace('_', ' ')}", [f"{st[kind][f]:.2f}" for f in FEATURES]))
    return list(FEATURES), rows


STYLE_NOTE = ("Style carried over to generated images: Pearson r between the reference's and the generation's "
              "slant, ink and width (pixel moments, each centred within its digit class). Own reconstructions "
              "give the decoder's ceiling; prior style scored against the same references is the control (~0).")


def _md(header: list[str], rows) -> list[str]:
    lines = ["| run | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    return lines + [f"| {name} | " + " | ".join(cells) + " |" for name, cells, *_ in rows]


def markdown_table(runs: list[tuple[Path, dict]], paper: bool = True) -> str:
    """The report's tables as Markdown: what the CLI prints and docs/results.md quotes."""
    lines = _md(COLUMNS, table_rows(runs, paper))
    cols, lrows = latent_rows(runs)
    lines += ["", "Rate (nats, mean KL to the prior) and linear-probe digit accuracy on posterior samples (%):", ""]
    lines += _md(cols, lrows)
    grows = generation_rows(runs)
    if grows:
        lines += ["", "Judged generations (%):", ""] + _md(list(GENERATION), grows)
    scols, srows = style_rows(runs)
    if srows:
        lines += ["", STYLE_NOTE, ""] + _md(scols, srows)
    notes = deviation_notes(runs)
    if notes:
        lines += [""] + [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    sizes = size_notes(runs)
    if sizes:
        lines += [""] + [f"model sizes that differ from the paper's: {n}" for n in sizes]
    return "\n".join(lines)


def _html_table(header: list[str], rows, first: str = "run") -> str:
    out = [f"<table><tr><th>{html.escape(first)}</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"]
    for name, cells, *rest in rows:
        out.append(_row(name, cells, "paper" if rest and rest[0] else ""))
    return "".join(out) + "</table>"


def provenance_section(m: dict) -> list[str]:
    """Where the figures came from: commit, command, date, host, and the data's hashes."""
    p = m.get("provenance")
    if not isinstance(p, dict):
        return ["<p class='notes'>Provenance: not recorded (evaluated before pvae recorded it).</p>"]
    data = p.get("data") if isinstance(p.get("data"), dict) else {}
    cells = [("commit", p.get("commit")), ("command", p.get("command")), ("evaluated", p.get("date")),
             ("host", p.get("host")), ("python / torch", f"{p.get('python')} / {p.get('torch')}"),
             *[(k.replace("_", " "), f"{(d or {}).get('path')} (source sha256 {(d or {}).get('source_sha256')})")
               for k, d in data.items()]]
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in cells)
    return [f"<table class='provenance'>{rows}</table>"]


def speaker_section(m: dict) -> list[str]:
    """Which voices training heard, per-speaker and seen/held-out rows, the confusion matrices."""
    sp = m.get("speakers")
    if not sp:
        return []
    esc = html.escape
    parts = [f"<p>Speakers training saw: {esc(', '.join(sp.get('train') or []) or 'none recorded')}"
             + (f"; perturbed training copies: {esc(str(sp['perturbed']))}" if sp.get("perturbed") else "")
             + (f". Held-out test speakers (never heard in training): {esc(', '.join(sp['held_out']))}"
                if sp.get("held_out") else ". No held-out speaker: every test voice was heard in training")
             + ".</p>"]
    heads = ["n", "z_s purity", "speech→image", "own speech", "speech judge", "adapted word judge"]
    keys = ("purity", "speech_to_image", "speech_own", "judge", "judge_adapted")
    if any("speech_to_image_one_wav" in g for g in (m.get("speaker_groups") or {}).values()):
        heads, keys = heads + ["speech→image, one WAV"], keys + ("speech_to_image_one_wav",)
    cell = lambda g, k: f"{100 * g[k]:.1f}" if g.get(k) is not None else "–"  # noqa: E731
    rows = []
    for name, g in (m.get("speaker_groups") or {}).items():
        rows.append((f"{name} ({', '.join(g['speakers'])})", [str(g["n"])] + [cell(g, k) for k in keys]))
    for name, g in (m.get("per_speaker") or {}).items():
        tag = "" if g.get("seen_in_training") else " (held out)"
        rows.append((name + tag, [str(g["n"])] + [cell(g, k) for k in keys]))
    if rows:
        parts += ["<p>Per speaker (%): z_s purity (k-means clusters of all test z_s, each labelled with its "
                  "majority digit), speech→image coherence (prior style), own reconstructions and the real "
                  "utterances judged by the speech judge (on a held-out speaker: the judge's own "
                  "leave-one-speaker-out accuracy) and by the word judge adapted to each speaker "
                  "without labels"
                  + (". Per-speaker CMVN: each speaker normalised by the statistics of all its takes; "
                     "one WAV: each take normalised by itself alone, as a new voice's single recording is"
                     if "speech_to_image_one_wav" in keys else "") + ".</p>", _html_table(heads, rows, "test speakers")]
    for direction, mat in (m.get("confusion") or {}).items():
        cells = [(str(i), [str(int(v)) for v in row]) for i, row in enumerate(mat)]
        parts += [f"<p>Confusion, {esc(direction.replace('_', ' '))} (rows: intended digit, columns: "
                  "judged digit).</p>", _html_table([str(j) for j in range(10)], cells, "digit")]
    return parts


def build_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """One self-contained page for ``run_dirs``.  Every value from a metrics file is escaped; a
    damaged ``eval/metrics.json`` is a ``ValueError`` naming it, and no page is written."""
    runs = load_runs(run_dirs)
    for r, m in runs:  # each run alone first, so that a damaged file is named
        try:
            _render([(r, m)])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise ValueError(f"{r / 'eval' / 'metrics.json'}: damaged or not made by `pvae-model evaluate` "
                             f"({type(e).__name__}: {e})") from None
    page = _render(runs)
    out = Path(out)
    with atomic_open(out, "w", encoding="utf-8") as f:
        f.write(page)
    return out


# The WAVs each figure's grid was made with: their players go right under it.
WAVS_OF_FIGURE = {"cross_image_to_speech": ("written_to_spoken_",), "style_speech": ("style_", "reference_speaker_"),
                  "bridge_interpolation": ("bridge_written_to_spoken_",)}


def _players(wavs: list[Path]) -> list[str]:
    return ["<div>", *[f"<span class='audio'>{html.escape(w.stem)}<br><audio controls preload='none' "
                       f"src='data:audio/wav;base64,{_b64(w)}'></audio></span>" for w in wavs], "</div>"]


def _render(runs: list[tuple[Path, dict]]) -> str:
    cols, lrows = latent_rows(runs)
    notes = deviation_notes(runs)
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>PVAE report</title>"
             f"<style>{CSS}</style></head><body>",
             "<h1>Partitioned VAE on spoken + written digits</h1>",
             "<p>k-means purity (k = 10, %, mean ± std over seeds) of the unimodal encoders' posterior means on the "
             "test split; coherence (%) = cross-modal generations a pretrained digit classifier labels with the "
             "intended digit, with the style latent drawn from the prior or taken from a random reference item.</p>",
             _html_table(COLUMNS, table_rows(runs)),
             "<p>What purity on posterior means cannot show: each latent's rate (mean KL to the prior, nats) and a "
             "linear probe's digit accuracy (%) on posterior <em>samples</em> (fit on the train split). A style "
             "latent should have a rate and a probe near chance (10 %).</p>",
             _html_table(cols, lrows)]
    grows = generation_rows(runs)
    if grows:
        parts += ["<p>Judged generations (%): own reconstructions, z_s with the style latent at 0, and with "
                  "another item's style.</p>", _html_table(list(GENERATION), grows)]
    scols, srows = style_rows(runs)
    if srows:
        parts += [f"<p>{html.escape(STYLE_NOTE)}</p>", _html_table(scols, srows)]
    if notes:
        parts.append("<p class='notes'>" + "<br>".join(
            f"[{i + 1}] {html.escape(n)}" for i, n in enumerate(notes)) + "</p>")
    sizes = size_notes(runs)
    if sizes:
        parts.append("<p class='notes'>" + "<br>".join(
            f"model sizes that differ from the paper's: {html.escape(n)}" for n in sizes) + "</p>")
    for r, m in runs:
        parts.append(f"<h2>{html.escape(r.name)}</h2>")
        if m.get("model") == "bridge":
            cost, div = m.get("cost_minutes", {}), m.get("diversity", {})
            parts.append(
                f"<p>Latent translation (Tian &amp; Engel 2019) between frozen VAE-sp and VAE-im: speech→image "
                f"{100 * m['coherence']['speech_to_image_prior']:.1f} %, image→speech "
                f"{100 * m['coherence']['image_to_speech_prior']:.1f} % (no style latent: one output per input). "
                f"Training cost: base VAE-sp {cost.get('vae_sp', 0):.1f} min + VAE-im {cost.get('vae_im', 0):.1f} min, "
                f"bridge {cost.get('bridge', 0):.2f} min. Output diversity within a digit, relative to real digits: "
                f"{div.get('pairwise_distance_ratio', 0):.2f}; near-copies {100 * div.get('near_copy_fraction', 0):.1f} %; "
                f"round-trip z1→z'→z1 relative error {m.get('round_trip_relative_error', 0):.3f}.</p>")
        cl = (m.get("coherence") or {}).get("classifiers")
        if cl:
            held = cl.get("speech_held_out_accuracy")
            parts.append(f"<p>Judge classifiers' test accuracy: speech {100 * cl['speech_test_accuracy']:.1f} %, "
                         f"images {100 * cl['image_test_accuracy']:.1f} %. "
                         + (f"The speech judge on voices it never heard ({html.escape(', '.join(cl.get('speech_held_out_speakers', [])))}): "
                            f"{100 * held:.1f} %, its own leave-one-speaker-out accuracy: every figure it scores "
                            "(image→speech, own speech) means only as much." if held is not None else
                            "No held-out voice: the speech judge's accuracy on new voices is not measured here "
                            "(pipelines/loso.sh, docs/voices.md).") + _word_judge_sentence(m) + "</p>")
        parts += voice_section(m)
        parts += provenance_section(m)
        parts += speaker_section(m)
        wavs = sorted((r / "eval").glob("*.wav"))
        for png in sorted((r / "eval").glob("*.png")):
            parts.append(f"<figure><img alt='{html.escape(png.stem, quote=True)}' src='data:image/png;base64,{_b64(png)}'>"
                         f"<figcaption>{html.escape(png.stem.replace('_', ' '))}</figcaption></figure>")
            beside = [w for w in wavs if w.stem.startswith(WAVS_OF_FIGURE.get(png.stem, ()))]
            if beside:  # the players of a grid right under it
                parts += _players(beside)
                wavs = [w for w in wavs if w not in beside]
        if wavs:
            parts.append("<h3>Generated speech</h3>")
            parts += _players(wavs)
    parts.append(f"<script>{CHECK}</script></body></html>")
    return "\n".join(parts)

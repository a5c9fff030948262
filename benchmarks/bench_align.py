"""Forced-alignment segmentation quality and speed on connected digits built from real FSDD takes.

    PYTHONPATH=. python benchmarks/bench_align.py [--data ../shared/data] [--passes 2] [--test-passes 3]
                                                  [--loso] [--out /tmp/bench_align]

Utterances of 2-7 digits of one speaker are built from FSDD takes (``pvae_data.synth_digits``:
tightly VAD-trimmed takes, 0-300 ms pauses, some zero, light noise), so every digit's true span
is known.  The aligner is trained on utterances built from the training takes (5-49) only and
the ``segment`` stage is scored on utterances built from the test takes (0-4): boundary error
(starts and ends of every digit), % within 50 ms, % of digits with IoU >= 0.8.  Speed: the
aligner alone (features + Viterbi + checks, audio in memory) and the whole stage (``-j 1``:
read, align, VAD-trim, write) in x real time, one process, on 8 kHz WAV and on the same
utterances as 20 kHz NIST SPHERE.  ``--loso``: leave one speaker out, six folds (train on five
speakers' training-take utterances, test on all of the sixth's).

Conditions (issue 13; ``--no-conditions`` skips them), each a test set from takes 0-4 scored
against median <= 10 ms, >= 97 % within 50 ms, >= 95 % IoU >= 0.8: the standard set, tight cuts
(no leading/trailing silence), abutting runs (3-7 digits, no pauses), both at once.  Mismatch
rows send every utterance of the four sets through the ``segment`` stage (speaker adaptation included) with its correct
transcript and with one word substituted, dropped or inserted, and two-/three-digit recordings
labelled with one of their digits: rejected must be <= 0.5 % / caught >= 95 %.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def spans_by_utt(segments: list[dict]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list] = defaultdict(list)
    for s in sorted(segments, key=lambda s: (s["utterance"], s["position"])):
        out[s["utterance"]].append((s["start"], s["end"]))
    return dict(out)


def sphere_copy(manifest: Path, out: Path, rate: int = 20000) -> Path:
    """The manifest's WAVs rewritten as ``rate`` Hz NIST SPHERE (as TIDIGITS ships), for the speed row."""
    import soundfile as sf
    import soxr

    from pvae_data.io_utils import read_jsonl, write_jsonl

    (out / "wav").mkdir(parents=True, exist_ok=True)
    recs = []
    for r in read_jsonl(manifest):
        x, sr = sf.read(r["audio"], dtype="int16")
        y = np.clip(np.round(soxr.resample(x.astype(np.float32), sr, rate, quality="HQ")), -32768, 32767)
        path = out / "wav" / f"{r['id']}.sph"
        sf.write(path, y.astype(np.int16), rate, format="NIST", subtype="PCM_16")
        recs.append({**r, "audio": str(path), "sample_rate": rate, "num_samples": len(y)})
    write_jsonl(out / "utterances.jsonl", recs)
    return out / "utterances.jsonl"


# Bars of issue 13, per condition: median <= 10 ms, >= 97 % within 50 ms, >= 95 % IoU >= 0.8.
BAR_MEDIAN_MS, BAR_WITHIN_PCT, BAR_IOU_PCT = 10.0, 97.0, 95.0


def segmentation_met(s: dict) -> bool:
    return s["median_ms"] <= BAR_MEDIAN_MS and s["within_pct"] >= BAR_WITHIN_PCT and s["iou_pct"] >= BAR_IOU_PCT


def conditions(passes: int) -> dict:
    """Test-set recipes that reproduce what real corpora do to the segmenter (issue 13)."""
    from pvae_data.synth_digits import SynthConfig

    return {
        "standard (pauses, 0.1-0.4 s edges)": SynthConfig(seed=1, passes=passes),
        "tight cuts (no leading/trailing silence)": SynthConfig(seed=2, passes=passes, edge_silence_s=(0.0, 0.0)),
        "abutting runs (3-7 digits, no pauses)": SynthConfig(seed=3, passes=passes, min_digits=3, zero_pause_prob=1.0),
        "tight + abutting (no background at all)": SynthConfig(seed=4, passes=passes, min_digits=3,
                                                               zero_pause_prob=1.0, edge_silence_s=(0.0, 0.0)),
    }


def score_condition(recordings: Path, work: Path, model_dir: Path, name: str, cfg, cache: dict | None = None,
                    seg_cfg=None) -> dict:
    from pvae_data.align.score import score_boundaries
    from pvae_data.io_utils import read_jsonl
    from pvae_data.stages.segment import SegmentConfig, segment_manifest
    from pvae_data.synth_digits import TEST_TAKES, synth_utterances, write_synth

    d = work / ("cond_" + "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]))
    utts = synth_utterances(recordings, takes=TEST_TAKES, cfg=cfg, prefix="cond")
    files = write_synth(utts, d, split="test")
    segment_manifest(files["utterances"], d / "seg", model=model_dir, cfg=seg_cfg or SegmentConfig(), show_progress=False)
    truth = {r["id"]: [tuple(s) for s in r["spans"]] for r in read_jsonl(files["truth"])}
    score = score_boundaries(spans_by_utt(read_jsonl(d / "seg" / "segments.jsonl")), truth)
    if cache is not None:
        cache[name] = files
    return score


def condition_rows(recordings: Path, work: Path, model_dir: Path, passes: int,
                   built: dict | None = None, seg_cfg=None) -> list[tuple[str, str, bool]]:
    """One scored row per condition; ``built`` receives each condition's files (for the mismatch rows)."""
    from pvae_data.align.score import format_score

    rows = []
    for name, cfg in conditions(passes).items():
        s = score_condition(recordings, work, model_dir, name, cfg, built, seg_cfg)
        rows.append((name, format_score(s), segmentation_met(s)))
    return rows


def mismatch_rows(recordings: Path, work: Path, model_dir: Path, passes: int,
                  built: dict | None = None, seg_cfg=None) -> list[tuple[str, str, bool]]:
    """Rejection of wrong transcripts through the whole ``segment`` stage (speaker adaptation
    included, as a user runs it): correct, one word substituted / dropped / inserted, and two- or
    three-digit recordings labelled with one of their digits; one manifest per kind."""
    from pvae_data.align import load_model
    from pvae_data.io_utils import read_jsonl, write_jsonl
    from pvae_data.stages.segment import SegmentConfig, segment_manifest
    from pvae_data.synth_digits import SynthConfig, TEST_TAKES, synth_utterances, write_synth

    rng = np.random.default_rng(7)
    recs = []
    for k, (name, c) in enumerate(conditions(passes).items()):
        if built and name in built:  # the condition rows' utterances: not synthesised again
            recs += read_jsonl(built[name]["utterances"])
            continue
        d = work / f"mismatch_{k}"
        recs += read_jsonl(write_synth(synth_utterances(recordings, takes=TEST_TAKES, cfg=c, prefix=f"m{k}"), d,
                                       split="test")["utterances"])
    recs = [{**r, "id": f"{r['id']}-c{k}"} for k, r in enumerate(recs)]  # conditions reuse ids
    words_all = list(load_model(model_dir).words)
    manifests: dict[str, list[dict]] = {"correct": recs, "substituted": [], "dropped": [], "inserted": []}
    for r in recs:
        w = r["transcript"].split()
        k = int(rng.integers(len(w)))
        sub = list(w)
        sub[k] = str(rng.choice([x for x in words_all if x != w[k]]))
        ins = list(w)
        ins.insert(int(rng.integers(len(w) + 1)), str(rng.choice(words_all)))
        manifests["substituted"].append({**r, "transcript": " ".join(sub)})
        manifests["dropped"].append({**r, "transcript": " ".join(w[:k] + w[k + 1:])})
        manifests["inserted"].append({**r, "transcript": " ".join(ins)})
    short = synth_utterances(recordings, takes=TEST_TAKES, cfg=SynthConfig(seed=9, passes=passes, min_digits=2,
                                                                            max_digits=3), prefix="short")
    srecs = read_jsonl(write_synth(short, work / "mismatch_single", split="test")["utterances"])
    manifests["single"] = [{**r, "transcript": str(rng.choice(r["transcript"].split()))} for r in srecs]
    counts, reasons = {}, {}
    for kind, rs in manifests.items():
        write_jsonl(work / f"mismatch_{kind}.jsonl", rs)
        summary = segment_manifest(work / f"mismatch_{kind}.jsonl", work / f"mismatch_{kind}", model=model_dir,
                                   cfg=seg_cfg or SegmentConfig(), show_progress=False)
        bad = read_jsonl(work / f"mismatch_{kind}" / "rejected.jsonl")
        counts[kind] = [len(bad), summary.total]
        reasons[kind] = [f"{r['id']}: {r['reason']}" for r in bad[:5]]
    single = counts.pop("single")
    wrong_reasons = reasons["correct"]
    rows = []
    n, t = counts.pop("correct")
    rows.append(("correct transcripts rejected", f"{n} of {t} ({100 * n / t:.2f} %, bar <= 0.5 %)"
                 + ("; first: " + " | ".join(wrong_reasons) if wrong_reasons else ""), n / t <= 0.005))
    for kind, (n, t) in counts.items():
        rows.append((f"one word {kind}: caught", f"{n} of {t} ({100 * n / t:.1f} %, bar >= 95 %)", n / t >= 0.95))
    n, t = single
    rows.append(("2-3 digits labelled with one digit: rejected", f"{n} of {t} ({100 * n / t:.1f} %, bar >= 95 %)",
                 n / t >= 0.95))
    return rows


def perturbed_training_copies(records: list[dict], factors: str) -> list[dict]:
    """``pvae-data perturb`` speed copies of training records (the aligner applies ``speed``)."""
    from pvae_data.stages.perturb import PerturbConfig, perturbed_copies

    if not factors:
        return []
    cfg = PerturbConfig(speed=factors, splits=("train",))
    return [c for r in records for c in perturbed_copies({**r, "split": "train"}, cfg)]


def speed_copies(records: list[dict], truth: dict, factors: str, out: Path) -> tuple[list[dict], dict]:
    """Every utterance written again played ``f`` times faster (WAV, same rate), with its true spans / f."""
    import soundfile as sf

    from pvae_data.perturb import speed_perturb

    recs, spans = [], {}
    out.mkdir(parents=True, exist_ok=True)
    for f in [float(x) for x in factors.split(",") if x]:
        for r in records:
            x, sr = sf.read(r["audio"], dtype="int16")
            y = np.clip(np.round(speed_perturb(x.astype(np.float32), sr, f)), -32768, 32767).astype(np.int16)
            rid = f"sp{f:g}-{r['id']}"
            path = out / f"{rid}.wav"
            sf.write(path, y, sr, subtype="PCM_16")
            recs.append({**r, "id": rid, "audio": str(path), "num_samples": len(y), "duration": len(y) / sr,
                         "speaker": f"sp{f:g}-{r['speaker']}"})
            spans[rid] = [(a / f, b / f) for a, b in truth[r["id"]]]
    return recs, spans


def outside_row(list_csv: Path, work: Path, model_dir: Path, passes: int, seg_cfg) -> str:
    """The aligner (trained on FSDD) on connected digits built from isolated digits of voices from
    outside FSDD, joined as the FSDD test utterances are; scored against the issue's bars."""
    import csv

    from pvae_data.align.score import format_score, score_boundaries
    from pvae_data.digits import word_to_label
    from pvae_data.io_utils import read_jsonl
    from pvae_data.stages.segment import segment_manifest
    from pvae_data.synth_digits import SynthConfig, synth_utterances, write_synth

    rec = work / "outside_recordings"
    rec.mkdir(parents=True, exist_ok=True)
    count: dict = defaultdict(int)
    for row in csv.DictReader(open(list_csv, newline="")):
        d, spk = word_to_label(row["transcript"]), row["speaker"]
        link = rec / f"{d}_{spk}_{count[spk, d]}.wav"
        count[spk, d] += 1
        if not link.exists():
            link.symlink_to(Path(row["path"]).resolve())
    speakers = tuple(sorted({s for s, _ in count}))
    takes = tuple(range(max(count.values())))
    utts = synth_utterances(rec, speakers=speakers, takes=takes, cfg=SynthConfig(seed=2, passes=passes), prefix="out")
    o = write_synth(utts, work / "outside", split="test")
    seg = segment_manifest(o["utterances"], work / "seg_outside", model=model_dir, cfg=seg_cfg, jobs=1,
                           show_progress=False)
    truth = {r["id"]: [tuple(x) for x in r["spans"]] for r in read_jsonl(o["truth"])}
    s = score_boundaries(spans_by_utt(read_jsonl(work / "seg_outside" / "segments.jsonl")), truth)
    return (f"voices from outside FSDD ({len(speakers)} voices, {len(utts)} utterances, "
            f"{sum(len(u.digits) for u in utts)} digits): {format_score(s)}; segment: {seg.line()}  "
            f"[bars: IoU >= 0.8 for >= 95 %, median <= 10 ms, <= 0.5 % rejected -> "
            f"{'MET' if s['iou_pct'] >= 95 and s['median_ms'] <= 10 and s['missing'] <= 0.005 * s['utterances'] else 'NOT MET'}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("PVAE_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--passes", type=int, default=2, help="times each training take is used")
    ap.add_argument("--test-passes", type=int, default=3, help="times each test take is used")
    ap.add_argument("--loso", action="store_true", help="also the leave-one-speaker-out folds")
    ap.add_argument("--loso-speakers", default="", help="only these folds (comma-separated) [default: all six]")
    ap.add_argument("--voice-speeds", default="0.9,1.1",
                    help="held-out-voice condition of each fold: its test utterances played this much faster")
    ap.add_argument("--perturb-train", default="",
                    help="speed factors of extra training copies of every fold's aligner (e.g. 0.9,1.1; "
                         "`pvae-data perturb` records) [default: none]")
    ap.add_argument("--no-conditions", action="store_true", help="skip the condition and mismatch rows")
    ap.add_argument("--ablation", action="store_true", help="also score the trimming variants (docs/alignment.md)")
    ap.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an AlignTrainConfig field for every aligner trained here (e.g. augment=none, features.cvn=true)")
    ap.add_argument("--segment-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a SegmentConfig field for every segment run here (e.g. junction_search_s=0.02)")
    ap.add_argument("--outside", default=None, metavar="LIST_CSV",
                    help="also voices from outside FSDD: isolated digits in a `pvae-data prepare list` file "
                         "(benchmarks/outside_voices.py make writes one), joined into connected digits")
    ap.add_argument("--out", default=None, help="work directory [default: a temporary one]")
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits

    from pvae_data.align import AlignConfig, align_words, load_model
    from pvae_data.align.score import format_score, score_boundaries
    from pvae_data.io_utils import read_jsonl, write_jsonl
    from pvae_data.stages.align_train import train_aligner
    from pvae_data.stages.segment import SegmentConfig, segment_manifest
    from pvae_data.synth_digits import TEST_TAKES, TRAIN_TAKES, SynthConfig, synth_utterances, words_of, write_synth

    from pvae_data.align.train import AlignTrainConfig
    from pvae_data.config import apply_overrides, parse_set

    # the CLIs' --set parser: dotted keys for nested fields (features.cvn=true)
    train_cfg = AlignTrainConfig.from_dict(apply_overrides(AlignTrainConfig().to_dict(), parse_set(args.train_set)))
    seg_cfg = SegmentConfig.from_dict(apply_overrides(SegmentConfig().to_dict(), parse_set(args.segment_set)))
    rec = Path(args.data) / "fsdd" / "recordings"
    if not rec.is_dir():
        raise SystemExit(f"no FSDD recordings under {rec}")
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_align_"))
    t0 = time.perf_counter()
    train = synth_utterances(rec, takes=TRAIN_TAKES, cfg=SynthConfig(seed=0, passes=args.passes), prefix="train")
    test = synth_utterances(rec, takes=TEST_TAKES, cfg=SynthConfig(seed=1, passes=args.test_passes), prefix="test")
    tr = write_synth(train, work / "train", split="train")
    te = write_synth(test, work / "test", split="test")
    hours = lambda us: sum(len(u.wave) / u.sample_rate for u in us) / 3600  # noqa: E731
    print(f"built {len(train)} training utterances ({hours(train):.2f} h) and {len(test)} test utterances "
          f"({hours(test):.2f} h, {sum(len(u.digits) for u in test)} digits) in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    summary = train_aligner(tr["utterances"], work / "model", train_cfg, show_progress=False)
    train_s = time.perf_counter() - t0
    model = load_model(work / "model")
    print(f"training: {summary.line()}; {train_s:.1f} s wall ({model.info['train_seconds']:.1f} s in HMM training); "
          f"states per word {dict(zip(model.words, model.n_states))}")

    # speed of the aligner alone, one process, audio in memory
    waves = [u.wave.astype(np.float32) for u in test]
    audio_s = sum(len(w) for w in waves) / test[0].sample_rate
    with threadpool_limits(1):
        align_words(model, waves[0], words_of(test[0].digits))
        t = time.perf_counter()
        for u, w in zip(test, waves):
            align_words(model, w, words_of(u.digits), AlignConfig())
        align_s = time.perf_counter() - t
    t = time.perf_counter()
    seg = segment_manifest(te["utterances"], work / "seg", model=work / "model", cfg=seg_cfg, jobs=1,
                           show_progress=False)
    stage_s = time.perf_counter() - t
    print(f"segment: {seg.line()}")
    print(f"speed (1 process, {audio_s:.0f} s of test audio): aligner {audio_s / align_s:.0f}x real time "
          f"(features + forced Viterbi + free-loop check); whole segment stage {audio_s / stage_s:.0f}x "
          f"(read, align, VAD-trim, write)")
    sph = sphere_copy(te["utterances"], work / "test_sph20k")
    t = time.perf_counter()
    segment_manifest(sph, work / "seg_sph", model=work / "model", cfg=seg_cfg, jobs=1, show_progress=False)
    print(f"  the same utterances as 20 kHz NIST SPHERE (TIDIGITS-like; resampled to 8 kHz for the aligner): "
          f"whole segment stage {audio_s / (time.perf_counter() - t):.0f}x")
    truth = {r["id"]: [tuple(s) for s in r["spans"]] for r in read_jsonl(te["truth"])}
    score = score_boundaries(spans_by_utt(read_jsonl(work / "seg" / "segments.jsonl")), truth)
    print(f"quality (train takes 5-49 -> test takes 0-4): {format_score(score)}")
    print(f"  targets: median <= 20 ms, >= 95 % within 50 ms, >= 97 % IoU >= 0.8 -> "
          f"{'MET' if score['median_ms'] <= 20 and score['within_pct'] >= 95 and score['iou_pct'] >= 97 else 'NOT MET'}")

    if args.outside:
        print(outside_row(Path(args.outside), work, work / "model", args.test_passes, seg_cfg))

    if not args.no_conditions:
        built: dict = {}
        rows = condition_rows(rec, work, work / "model", args.test_passes, built, seg_cfg)
        rows += mismatch_rows(rec, work, work / "model", args.test_passes, built, seg_cfg)
        print("conditions (test takes 0-4, the model above):")
        for name, text, met in rows:
            print(f"  {name:44s}{text}  [{'MET' if met else 'NOT MET'}]")

    if args.ablation:
        from pvae_data.align.ctm import read_ctm

        segment_manifest(te["utterances"], work / "seg_ctm", model=work / "model", export_ctm=work / "words.ctm",
                         show_progress=False)
        ctm, _ = read_ctm(work / "words.ctm")
        raw = {u: [(s, e) for _, s, e in v] for u, v in ctm.items()}
        print(f"  HMM word spans alone:                    {format_score(score_boundaries(raw, truth))}")
        for name, cfg in (("VAD on the span, no slack, no reference", SegmentConfig(slack_s=0.0, noise_ref_s=0.0)),
                          ("VAD, 0.2 s slack, no reference", SegmentConfig(noise_ref_s=0.0)),
                          ("VAD, 0.2 s slack, background reference", SegmentConfig())):
            segment_manifest(te["utterances"], work / "seg_var", model=work / "model", cfg=cfg, show_progress=False)
            sc = score_boundaries(spans_by_utt(read_jsonl(work / "seg_var" / "segments.jsonl")), truth)
            print(f"  {name + ':':41s}{format_score(sc)}")

    if args.loso:
        all_test = read_jsonl(tr["utterances"]) + read_jsonl(te["utterances"])
        all_truth = {**{r["id"]: [tuple(s) for s in r["spans"]] for r in read_jsonl(tr["truth"])}, **truth}
        folds = []
        voices = []
        only = {x for x in args.loso_speakers.split(",") if x}
        for spk in sorted({r["speaker"] for r in all_test}):
            if only and spk not in only:
                continue
            d = work / f"loso_{spk}"
            train_recs = [r for r in read_jsonl(tr["utterances"]) if r["speaker"] != spk]
            train_recs += perturbed_training_copies(train_recs, args.perturb_train)
            test_recs = [r for r in all_test if r["speaker"] == spk]
            write_jsonl(d / "train.jsonl", train_recs)
            write_jsonl(d / "test.jsonl", test_recs)
            t = time.perf_counter()
            train_aligner(d / "train.jsonl", d / "model", train_cfg, show_progress=False)
            tt = time.perf_counter() - t
            segment_manifest(d / "test.jsonl", d / "seg", model=d / "model", cfg=seg_cfg, jobs=1, show_progress=False)
            s = score_boundaries(spans_by_utt(read_jsonl(d / "seg" / "segments.jsonl")),
                                 {r["id"]: all_truth[r["id"]] for r in test_recs})
            folds.append(s)
            print(f"  leave out {spk:9s} (trained {tt:.0f} s): {format_score(s)}")
            # the held-out voice changed further: every test utterance sped up / slowed down (pitch and
            # formants move with it), a voice unlike any of the six
            v_recs, v_truth = speed_copies(test_recs, all_truth, args.voice_speeds, d / "voice")
            if v_recs:
                write_jsonl(d / "voice.jsonl", v_recs)
                segment_manifest(d / "voice.jsonl", d / "seg_voice", model=d / "model", cfg=seg_cfg, jobs=1,
                                 show_progress=False)
                sv = score_boundaries(spans_by_utt(read_jsonl(d / "seg_voice" / "segments.jsonl")), v_truth)
                voices.append(sv)
                print(f"    held-out voice x speed {args.voice_speeds}: {format_score(sv)}")
        if voices:
            vw = sum(f["words"] for f in voices)
            print(f"held-out voice (speed {args.voice_speeds}), pooled: "
                  f"{sum(f['within_pct'] * f['boundaries'] for f in voices) / sum(f['boundaries'] for f in voices):.1f} % "
                  f"within 50 ms, {sum(f['iou_pct'] * f['words'] for f in voices) / vw:.1f} % IoU >= 0.8, worst median "
                  f"{max(f['median_ms'] for f in voices):.1f} ms, rejected {sum(f['missing'] for f in voices)} of "
                  f"{sum(f['utterances'] for f in voices)} utterances")
        n = sum(f["boundaries"] for f in folds)
        w = lambda key: sum(f[key] * f["boundaries"] for f in folds) / n  # noqa: E731
        print(f"leave-one-speaker-out, pooled over 6 folds: mean of per-fold medians "
              f"{np.mean([f['median_ms'] for f in folds]):.1f} ms, {w('within_pct'):.1f} % within 50 ms, "
              f"{sum(f['iou_pct'] * f['words'] for f in folds) / sum(f['words'] for f in folds):.1f} % IoU >= 0.8, "
              f"rejected {sum(f['missing'] for f in folds)} of {sum(f['utterances'] for f in folds)} utterances")
        pooled = {"median_ms": max(f["median_ms"] for f in folds), "within_pct": w("within_pct"),
                  "iou_pct": sum(f["iou_pct"] * f["words"] for f in folds) / sum(f["words"] for f in folds)}
        print(f"  speaker held out, against the bars (worst fold's median): "
              f"{'MET' if segmentation_met(pooled) else 'NOT MET'}")
    print(f"work directory: {work}")


if __name__ == "__main__":
    main()

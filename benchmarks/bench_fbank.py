"""FBank speed: ours vs kaldi-native-fbank on the same FSDD files, in one process.

    python benchmarks/bench_fbank.py [--files 1000] [--data ../shared/data] [--jobs 1 2]

Prints x real time (seconds of audio per second of compute) for each and the ratio ours/knf
(the issue's target: >= 3).  Audio is loaded and resampled to 16 kHz once, before timing; both
extractors see identical int16-scale float32 samples and the same options (dither 0).  knf is
used through its only Python API (OnlineFbank + get_frame).  With --jobs, the ``fbank`` stage
(audio loading, resampling, features, ark writing) is timed end to end at each job count.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings")
    ap.add_argument("--jobs", type=int, nargs="*", default=[1, 2], help="job counts for the stage timing")
    ap.add_argument("--stage-files", type=int, default=3000, help="files for the stage timing (all of FSDD)")
    args = ap.parse_args()

    import kaldi_native_fbank as knf

    from pvae_data.fbank import FbankConfig, compute_fbank_batch

    files = sorted(glob.glob(os.path.join(args.data, "fsdd", "recordings", "*.wav")))[: args.files]
    if not files:
        raise SystemExit(f"no FSDD files under {args.data}/fsdd/recordings")
    waves = []
    for f in files:
        x, sr = sf.read(f, dtype="float32")
        waves.append((soxr.resample(x, sr, 16000, quality="HQ") * 32768.0).astype(np.float32))
    audio_s = sum(len(w) for w in waves) / 16000
    cfg = FbankConfig()
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80

    def run_knf():
        for w in waves:
            fb = knf.OnlineFbank(opts)
            fb.accept_waveform(16000, w)
            fb.input_finished()
            np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])

    def run_ours():
        compute_fbank_batch(waves, cfg)

    compute_fbank_batch(waves[:2], cfg)  # compile / load the cached kernel outside the timing
    t_knf = min(_time(run_knf) for _ in range(args.repeat))
    t_ours = min(_time(run_ours) for _ in range(args.repeat))
    print(f"fbank on {len(files)} FSDD files ({audio_s:.1f} s of audio at 16 kHz, 80 bins, 1 process)")
    print(f"  kaldi-native-fbank {knf.__version__}: {audio_s / t_knf:8.0f} x real time ({t_knf * 1e3:.0f} ms)")
    print(f"  pvae_data.fbank      : {audio_s / t_ours:8.0f} x real time ({t_ours * 1e3:.0f} ms)")
    print(f"  ratio ours / knf     : {t_knf / t_ours:8.2f}  (target >= 3)")
    if args.jobs:
        stage_files = sorted(glob.glob(os.path.join(args.data, "fsdd", "recordings", "*.wav")))[: args.stage_files]
        stage_audio_s = sum(sf.info(f).duration for f in stage_files)
        print(f"fbank stage on {len(stage_files)} files ({stage_audio_s:.0f} s of audio at the files' 8 kHz):")
        _bench_stage(stage_files, args.jobs, stage_audio_s)


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _bench_stage(files: list[str], jobs_list: list[int], audio_s: float) -> None:
    """The whole `fbank` stage (load + resample + features + ark) at several job counts."""
    from pvae_data.stages.fbank import FbankStageConfig, compute_features

    tmp = Path(tempfile.mkdtemp(prefix="bench_fbank_"))
    try:
        manifest = tmp / "m.jsonl"
        with open(manifest, "w") as f:
            for p in files:
                f.write(json.dumps({"id": Path(p).stem, "audio": p, "speaker": Path(p).stem.split("_")[1],
                                    "split": "train"}) + "\n")
        cfg = FbankStageConfig(chunk_size=max(1, len(files) // 8))
        base = None
        for jobs in jobs_list:
            out = tmp / f"j{jobs}"
            t = _time(lambda: compute_features(manifest, out, cfg, jobs=jobs, show_progress=False))
            base = base or t
            print(f"  --jobs {jobs}: {audio_s / t:8.0f} x real time ({t:.2f} s, speed-up {base / t:.2f}; "
                  "reading, resampling, features, ark writing, worker start)")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()

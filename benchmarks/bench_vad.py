"""VAD speed: the energy (Kaldi compute-vad) and webrtc backends on the same FSDD files, one process.

    PYTHONPATH=. python benchmarks/bench_vad.py [--files 1000] [--data ../shared/data] [--rate 8000]

Prints x real time (seconds of audio per second of compute) for each backend and the ratio
energy / webrtc, twice: for ``speech_bounds`` (what the ``trim`` stage calls: detector plus the
shared boundary refinement) and for the detector alone (``frame_log_energy`` + ``energy_vad``
vs ``webrtc_vad``).  Audio is loaded (and resampled with --rate) once, before timing, as
int16-scale float64; timings are the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--rate", type=int, default=0, help="resample to this rate first [default: keep 8 kHz]")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings")
    args = ap.parse_args()

    from pvae_data.vad import VadConfig, energy_vad, frame_log_energy, speech_bounds, webrtc_vad

    files = sorted(glob.glob(os.path.join(args.data, "fsdd", "recordings", "*.wav")))
    if not files:
        raise SystemExit(f"no FSDD files under {args.data}/fsdd/recordings")
    files = files[:: max(1, len(files) // args.files)][: args.files]  # spread over digits/speakers
    waves, rate = [], 0
    for f in files:
        x, sr = sf.read(f, dtype="int16")
        x = x.astype(np.float64)
        if args.rate and args.rate != sr:
            import soxr

            x, sr = soxr.resample(x, sr, args.rate), args.rate
        waves.append(x)
        rate = sr
    audio_s = sum(len(w) for w in waves) / rate
    energy, webrtc = VadConfig(backend="energy"), VadConfig(backend="webrtc")

    def bounds(cfg: VadConfig):
        return lambda: [speech_bounds(w, rate, cfg) for w in waves]

    def detector_energy():
        for w in waves:
            energy_vad(frame_log_energy(w, rate, energy), energy)

    def detector_webrtc():
        for w in waves:
            webrtc_vad(w, rate, webrtc)

    bounds(webrtc)()  # imports and first-call costs outside the timing
    bounds(energy)()
    print(f"VAD on {len(waves)} FSDD files ({audio_s:.1f} s of audio at {rate} Hz, 1 process, best of {args.repeat})")
    for name, fe, fw in (("speech_bounds", bounds(energy), bounds(webrtc)),
                         ("detector only", detector_energy, detector_webrtc)):
        te = min(_time(fe) for _ in range(args.repeat))
        tw = min(_time(fw) for _ in range(args.repeat))
        print(f"  {name}:")
        print(f"    energy (Kaldi compute-vad): {audio_s / te:8.0f} x real time ({te * 1e3:7.1f} ms)")
        print(f"    webrtc (mode {webrtc.webrtc_mode}, {webrtc.webrtc_frame_ms} ms)  : "
              f"{audio_s / tw:8.0f} x real time ({tw * 1e3:7.1f} ms)")
        print(f"    ratio energy / webrtc     : {tw / te:8.2f}")


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()

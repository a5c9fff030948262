"""Is generated speech understood once it is a waveform?  The speech judge on FBank, before and
after the vocoder (waveform -> the pipeline's own front end -> the judge), for real test
utterances resynthesised and for spoken digits generated from written ones.

    PYTHONPATH=. python benchmarks/vocoder_judge.py exp/demo/pvae_fast [--n 200] [--iters 48]

Prints one JSON line: accuracy of the judge on the real FBank (its ceiling here), on real FBank
vocoded and re-featurised, on generated FBank, on generated FBank vocoded and re-featurised.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=200, help="test utterances (and as many written digits)")
    ap.add_argument("--iters", type=int, default=48, help="Griffin-Lim iterations")
    ap.add_argument("--checkpoint", default="last")
    a = ap.parse_args()

    from pvae_model.data import pad_audio
    from pvae_model.eval.audio_synth import fbank_to_wave
    from pvae_model.eval.judge import Judge
    from pvae_model.generate import load
    from pvae_model.run import load_run

    t0 = time.perf_counter()
    _, cfg, model, audio, images, cmvn = load_run(a.run, a.checkpoint)
    m = load(a.run, a.checkpoint)
    judge = Judge.load(cfg.audio_shards, cfg.image_shards)
    rng = np.random.default_rng(0)
    ia = rng.permutation(len(audio.labels))[: a.n]
    ii = rng.permutation(len(images.labels))[: a.n]
    fcfg, rate = m.frontend.fbank, m.sample_rate

    def judged(feats: list, labels) -> float:
        x, lengths = pad_audio(feats)
        return float((judge.speech_predictions(x, lengths) == np.asarray(labels)).mean())

    def vocoded(feats: list) -> list:
        out = []
        for f in feats:
            wave = fbank_to_wave(f.numpy(), fcfg, cmvn, n_iter=a.iters)
            out.append(m.frontend.features(wave, rate))
        return out

    real = [audio.feats[i] for i in ia]
    y_real = audio.labels[ia]
    with torch.no_grad():
        zs = model.encode_image(images.images[ii])["s"][0]
        t = int(np.median([len(f) for f in audio.feats]))
        gen = model.decode_audio(zs, torch.zeros(len(zs), model.cfg.z_audio), torch.full((len(zs),), t))
    gen = [g[:t] for g in gen]
    y_gen = images.labels[ii]
    r = {"run": a.run, "n": a.n, "griffin_lim_iters": a.iters,
         "real_fbank": judged(real, y_real), "real_vocoded": judged(vocoded(real), y_real),
         "generated_fbank": judged(gen, y_gen), "generated_vocoded": judged(vocoded(gen), y_gen),
         "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(r))


if __name__ == "__main__":
    main()

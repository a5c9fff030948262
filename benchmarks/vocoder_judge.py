"""Is generated speech understood once it is a waveform?  The speech judge on FBank, before and
after each vocoder (waveform -> the pipeline's own front end -> the judge), for real test
utterances resynthesised and for spoken digits generated from written ones; Griffin-Lim and a
trained vocoder (``pvae-model vocoder``) side by side, on the same items, in one run.

    PYTHONPATH=. python benchmarks/vocoder_judge.py RUN [--vocoder VOCODER_RUN] [--n 300] [--iters 48]
                                                    [--style voice|prior]

Generated speech is spoken as ``pvae-model generate`` speaks it: in the typical training voice
(``--style voice``, the default; pvae_model.voices), or with the prior's mean (``--style prior``,
the paper's style).

Prints one JSON line: the judge's accuracy on real FBank (its ceiling here; on all test takes and
on the seen speakers' takes alone), then per vocoder: real FBank vocoded and re-featurised,
generated FBank vocoded and re-featurised, the log-Mel L1 between real utterances and their
resynthesis, and the seconds per utterance; and the ratio of the two vocoders' speeds.  Each
judged figure also as the word judge hears it (``*_word``: pvae_model/eval/word_judge.py,
unadapted), which is harsher on generated speech than the convolutional judge (docs/voices.md).
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
    ap.add_argument("--vocoder", default=None, help="a vocoder run directory")
    ap.add_argument("--n", type=int, default=300, help="test utterances (and as many written digits)")
    ap.add_argument("--iters", type=int, default=48, help="Griffin-Lim iterations")
    ap.add_argument("--checkpoint", default="last")
    ap.add_argument("--style", choices=("voice", "prior"), default="voice",
                    help="the speech style of generated digits: the typical training voice or the prior's mean")
    a = ap.parse_args()
    torch.set_num_threads(1)

    from pvae_model.data import pad_audio
    from pvae_model.eval.audio_synth import fbank_to_wave
    from pvae_model.eval.judge import Judge
    from pvae_model.generate import load
    from pvae_model.run import load_run
    from pvae_model.vocoder import MelLoss

    _, cfg, model, audio, images, cmvn = load_run(a.run, a.checkpoint)
    m = load(a.run, a.checkpoint, vocoder=a.vocoder)
    judge = Judge.load(cfg.audio_shards, cfg.image_shards)
    rng = np.random.default_rng(0)
    ia = rng.permutation(len(audio.labels))[: a.n]
    ii = rng.permutation(len(images.labels))[: a.n]
    fcfg, rate = m.frontend.fbank, m.sample_rate
    held = set((m.info.get("speakers") or {}).get("held_out") or [])
    seen = np.array([audio.speakers[i].split("-")[-1] not in held for i in ia])

    def judged(feats: list, labels, mask=None) -> float:
        x, lengths = pad_audio(feats)
        ok = judge.speech_predictions(x, lengths) == np.asarray(labels)
        return float(ok[mask].mean() if mask is not None else ok.mean())

    def word_judged(feats: list, labels) -> float:
        return float((judge.words.predict([f.numpy() for f in feats], adapt=False) == np.asarray(labels)).mean())

    real = [audio.feats[i] for i in ia]
    y_real = audio.labels[ia]
    with torch.no_grad():
        zs = model.encode_image(images.images[ii])["s"][0]
        t = int(np.median([len(f) for f in audio.feats]))
        za = m.voice() if a.style == "voice" else torch.zeros(model.cfg.z_audio)
        gen = model.decode_audio(zs, za.expand(len(zs), -1), torch.full((len(zs),), t))
    gen = [g[:t] for g in gen]
    y_gen = images.labels[ii]
    mel = MelLoss(m.vocoder.fbank) if m.vocoder is not None else None
    r = {"run": a.run, "vocoder_run": a.vocoder, "n": a.n, "style": a.style,
         "voice": m.default_voice if a.style == "voice" else None, "n_seen": int(seen.sum()), "griffin_lim_iters": a.iters,
         "real_fbank": judged(real, y_real), "real_fbank_seen": judged(real, y_real, seen),
         "generated_fbank": judged(gen, y_gen),
         "real_fbank_word": word_judged(real, y_real), "generated_fbank_word": word_judged(gen, y_gen)}
    for name, voc in (("griffin_lim", None), ("vocoder", m.vocoder)):
        if name == "vocoder" and voc is None:
            continue
        t0 = time.perf_counter()
        waves_real = [fbank_to_wave(f.numpy(), fcfg, cmvn, n_iter=a.iters, vocoder=voc) for f in real]
        waves_gen = [fbank_to_wave(f.numpy(), fcfg, cmvn, n_iter=a.iters, vocoder=voc) for f in gen]
        per = (time.perf_counter() - t0) / (len(real) + len(gen))
        feats_real = [m.frontend.features(w, rate) for w in waves_real]
        feats_gen = [m.frontend.features(w, rate) for w in waves_gen]
        r[name] = {"real_vocoded": judged(feats_real, y_real), "real_vocoded_seen": judged(feats_real, y_real, seen),
                   "generated_vocoded": judged(feats_gen, y_gen),
                   "real_vocoded_word": word_judged(feats_real, y_real),
                   "generated_vocoded_word": word_judged(feats_gen, y_gen),
                   "seconds_per_utterance": round(per, 4)}
        if mel is not None:
            r[name]["real_log_mel_l1"] = _mel_l1(mel, a.vocoder, 100, fcfg, a.iters, voc)
    if "vocoder" in r:
        r["speed_ratio_vocoder_over_griffin_lim"] = round(r["griffin_lim"]["seconds_per_utterance"]
                                                          / r["vocoder"]["seconds_per_utterance"], 1)
    print(json.dumps(r))


def _mel_l1(mel, vocoder_run: str, n: int, fcfg: dict, iters: int, voc) -> float:
    """log-Mel L1 between real test utterances (the vocoder run's manifest, its test split) and
    their resynthesis from their own raw FBank, all peak-normalised: what is heard, not the judge."""
    from pvae_data.config import load_yaml
    from pvae_model.eval.audio_synth import fbank_to_wave
    from pvae_model.vocoder_train import VocoderTrainConfig, load_utterances
    from pathlib import Path

    vcfg = VocoderTrainConfig.from_dict(load_yaml((Path(vocoder_run) / "config.yaml").read_text()))
    waves, feats, _ = load_utterances(vcfg, "test", limit=n)
    out = []
    for x, f in zip(waves, feats):
        y = fbank_to_wave(f, fcfg, None, n_iter=iters, vocoder=voc)
        x = (0.9 * x / max(float(np.abs(x).max()), 1e-9)).astype(np.float32)
        k = min(len(x), len(y))
        out.append(float(mel(torch.from_numpy(y[:k])[None], torch.from_numpy(x[:k])[None])))
    return round(float(np.mean(out)), 4)


if __name__ == "__main__":
    main()

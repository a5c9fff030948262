"""Which spoken digits does the speech decoder render, and is it the judge or the decoder?  Two
judges, on the same items: the CNN speech judge ``evaluate`` uses, and a model-free one, DTW to
real templates (the seen speakers' test takes, per-utterance-normalised log-Mel; the mean of the 3
nearest per digit).  Items: spoken digits generated from written ones (prior style), and the seen
speakers' own test takes decoded from their own z_s with their own z_a and with the prior-mean z_a.

    PYTHONPATH=. python benchmarks/decoder_digits.py RUN [--digits 7,5,2,8,0] [--n 40] [--figure PNG]

Prints one line per digit and item kind; ``--figure`` draws three real takes of 7, 5 and 2 beside
their reconstructions from their own z_s and z_a.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    import librosa

    from pvae_model.data import pad_audio
    from pvae_model.eval.judge import Judge
    from pvae_model.eval.speakers import seen_in_training, training_speakers
    from pvae_model.run import load_run

    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--digits", default="7,5,2,8,0")
    ap.add_argument("--n", type=int, default=40, help="written digits per digit")
    ap.add_argument("--checkpoint", default="last")
    ap.add_argument("--figure", default=None)
    args = ap.parse_args()
    ck, cfg, model, audio, images, _ = load_run(args.run, args.checkpoint)
    judge = Judge.load(cfg.audio_shards, cfg.image_shards)
    info = training_speakers(cfg.audio_shards)
    y = np.asarray(audio.labels)
    seen = seen_in_training(audio.speakers, info) if info.get("train") else np.ones(len(y), bool)
    templates = [audio.feats[i].numpy().T for i in np.flatnonzero(seen)]
    t_labels = y[seen]

    def dtw(x: np.ndarray) -> int:
        d = np.array([(lambda D, wp: D[-1, -1] / len(wp))(*librosa.sequence.dtw(x.T, t, metric="euclidean"))
                      for t in templates])
        return int(np.argmin([np.sort(d[t_labels == k])[:3].mean() if (t_labels == k).any() else np.inf
                              for k in range(10)]))

    def line(what: str, digit: int, feats: torch.Tensor, lens: torch.Tensor) -> None:
        cnn = judge.speech_predictions(feats, lens)
        tw = np.array([dtw(f[:n].numpy()) for f, n in zip(feats, lens)])
        print(f"{what} {digit} (n={len(lens)}): CNN judge {100 * np.mean(cnn == digit):.0f} % "
              f"(most often {np.bincount(cnn, minlength=10).argmax()}), DTW {100 * np.mean(tw == digit):.0f} % "
              f"(most often {np.bincount(tw, minlength=10).argmax()})", flush=True)

    rng = np.random.default_rng(0)
    yi = np.asarray(images.labels)
    with torch.no_grad():
        for digit in map(int, args.digits.split(",")):
            idx = rng.permutation(np.flatnonzero(yi == digit))[:args.n]
            zs = model.encode_image(images.images[idx])["s"][0]
            lens = torch.from_numpy(np.asarray(audio.lengths)[rng.integers(0, len(y), len(idx))]).long()
            line("written", digit, model.decode_audio(zs, torch.zeros(len(idx), model.cfg.z_audio), lens), lens)
            take = np.flatnonzero(seen & (y == digit))
            x, lens = pad_audio([audio.feats[i] for i in take])
            q = model.encode_audio(x, lens)
            line("spoken, own z_s and z_a:", digit, model.decode_audio(q["s"][0], q["a"][0], lens), lens)
            line("spoken, own z_s, prior z_a:", digit,
                 model.decode_audio(q["s"][0], torch.zeros_like(q["a"][0]), lens), lens)
        if args.figure:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(3, 6, figsize=(18, 8))
            for col, digit in enumerate((7, 5, 2)):
                take = np.flatnonzero(seen & (y == digit))[:3]
                x, lens = pad_audio([audio.feats[i] for i in take])
                q = model.encode_audio(x, lens)
                rec = model.decode_audio(q["s"][0], q["a"][0], lens)
                for r in range(len(take)):
                    n = int(lens[r])
                    for j, (img, title) in enumerate(((x[r, :n], f"real {digit} ({audio.speakers[take[r]]})"),
                                                      (rec[r, :n], f"decoded {digit}, own z_s and z_a"))):
                        ax[r, 2 * col + j].imshow(img.numpy().T, origin="lower", aspect="auto", vmin=-3, vmax=3)
                        ax[r, 2 * col + j].set_title(title)
            plt.tight_layout()
            plt.savefig(args.figure, dpi=60)


if __name__ == "__main__":
    main()

"""PVAE training speed: pairs/s and model FLOP utilisation (MFU) on this CPU.

    python benchmarks/bench_train.py [--shards exp/demo/shards] [--batches 12] [--threads 2]

MFU = useful FLOPs per second / torch's dense fp32 matmul FLOP/s, both measured in this run
with the same number of threads.  Useful FLOPs are counted analytically for the real frames
only (padding excluded): every matmul / convolution of the forward pass (3 LSTMs over the
audio, the audio output layer, 2 image pre-encoders, the image decoder, the Gaussian heads),
times 3 for forward + backward (backward = 2x forward).  Element-wise work (activations,
losses, Adam) is not counted: it is overhead, as in the usual MFU definition.
The padded fraction of frames is printed too (the issue's bar: < 10 %).

``--objective both`` (the default) times the spec's objective and ``plus`` (which adds two
cross-modal reconstructions: one more audio-decoder and one more image-decoder pass) in the same
run, so "pairs/s per term computed" (MFU) of the two can be compared directly.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def lstm_flops(frames: int, inp: int, hidden: int) -> float:
    return 2.0 * frames * 4 * hidden * (inp + hidden)


def _conv(cin: int, cout: int, hw: int, k: int = 4) -> float:
    return 2.0 * cin * cout * k * k * hw * hw  # (output hw; transposed convs count the same)


def image_decoder_flops(cfg) -> float:
    return 2.0 * (cfg.z_shared + cfg.z_image) * 512 + 2.0 * 512 * 784 + _conv(16, 8, 14) + _conv(8, 1, 28)


def image_flops(cfg) -> float:
    """Forward FLOPs per image: two pre-encoders (multimodal + unimodal) and the decoder."""
    c1, c2 = cfg.image_channels
    pre = _conv(1, c1, 14) + _conv(c1, c2, 7) + 2.0 * c2 * 49 * cfg.hidden
    return 2 * pre + image_decoder_flops(cfg)


def head_flops(cfg) -> float:
    H, s, a, i = cfg.hidden, cfg.z_shared, cfg.z_audio, cfg.z_image
    mm = 2.0 * 2 * H * 2 * (s + a + i)
    uni = 2.0 * H * 2 * (s + a) + 2.0 * H * 2 * (s + i)
    return mm + uni


def batch_useful_flops(cfg, lengths: torch.Tensor) -> float:
    real = int(lengths.sum())
    H, D = cfg.hidden, cfg.feat_dim
    decoder = lstm_flops(real, cfg.z_shared + cfg.z_audio, H) + 2.0 * real * H * D
    n = len(lengths)
    extra = 0.0
    if cfg.objective == "plus":  # cross-modal reconstruction: one more pass through each decoder
        extra = decoder + n * image_decoder_flops(cfg)
    audio = 2 * lstm_flops(real, D, H) + decoder
    return 3.0 * (audio + n * (image_flops(cfg) + head_flops(cfg)) + extra)


def matmul_peak(threads: int, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2.0 * n**3 * reps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default=str(ROOT / "exp" / "demo" / "shards"), help="dir with audio/ and images/")
    ap.add_argument("--batches", type=int, default=12, help="timed training steps (after 2 warm-up steps)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--objective", choices=["paper", "plus", "both"], default="both")
    ap.add_argument("--hidden", type=int, default=512, help="LSTM / pre-encoder size (the paper's: 512)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pvae_model.data import PairedEpochs, load_audio_split, load_image_split
    from pvae_model.models.pvae import PVAE, PVAEConfig

    shards = Path(args.shards)
    audio = load_audio_split(shards / "audio", "train")
    images = load_image_split(shards / "images", "train")
    data = PairedEpochs(audio, images, args.batch_size, seed=0)
    batches = [b for _, b in zip(range(args.batches + 2), data.batches(0))]
    peak = matmul_peak(args.threads)
    size = "paper architecture" if args.hidden == 512 else f"hidden {args.hidden}, paper: 512"
    print(f"PVAE training step on this CPU ({args.threads} threads, batch {args.batch_size}, {size})")
    objectives = ["paper", "plus"] if args.objective == "both" else [args.objective]
    mfu = {}
    for objective in objectives:
        torch.manual_seed(0)
        plus = objective == "plus"
        cfg = PVAEConfig(objective=objective, hidden=args.hidden,
                         departures={"image_nll_std": 0.31 if plus else 1.0})
        model = PVAE(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.95, 0.999))

        def step(batch):
            out = model(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()

        for b in batches[:2]:
            step(b)
        flops = pairs = frames_real = frames_padded = 0
        t = time.perf_counter()
        for b in batches[2:]:
            step(b)
        dt = time.perf_counter() - t
        for b in batches[2:]:
            flops += batch_useful_flops(cfg, b["lengths"])
            pairs += len(b["lengths"])
            frames_real += int(b["lengths"].sum())
            frames_padded += int(b["lengths"].max()) * len(b["lengths"])
        peak = max(peak, matmul_peak(args.threads))
        mfu[objective] = flops / dt / peak
        print(f"objective {objective}:")
        print(f"  pairs/s                 : {pairs / dt:8.1f}   ({len(batches) - 2} steps, {dt:.1f} s)")
        print(f"  useful GFLOP/s          : {flops / dt / 1e9:8.1f}   (real frames only, fwd + bwd)")
        print(f"  MFU                     : {100 * mfu[objective]:8.1f} %  (target >= 40 %)")
    print(f"fp32 matmul peak GFLOP/s  : {peak / 1e9:8.1f}   (torch, 2048 x 2048, same threads, same run)")
    print(f"padded frames             : {100 * (1 - frames_real / frames_padded):8.1f} %  (target < 10 %; "
          f"whole epoch: {100 * data.padding_fraction():.1f} %)")
    if len(mfu) == 2:
        print(f"ratio plus / paper, useful FLOP/s per second (pairs/s per term computed): "
              f"{mfu['plus'] / mfu['paper']:.2f}  (bar: >= 0.80)")


if __name__ == "__main__":
    main()

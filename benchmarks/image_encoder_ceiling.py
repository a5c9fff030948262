"""The PVAE's image encoder trained *with the labels*: the most any latent it computes can say about
the digit, for the same network, optimiser, batch size and number of image presentations.

The unimodal image z_s is read off this network (ImagePreEncoder -> a linear 32-dim head); here a
linear 10-way layer on that head is trained by cross-entropy on the MNIST training images, and
test/train accuracy is printed after every pass over them. `make demo` shows the image encoder
~2,700 images per epoch (one per spoken digit): 30 minutes = 184 epochs = ~0.5 M presentations,
the paper's 400 epochs = ~1.1 M.

    PYTHONPATH=. python benchmarks/image_encoder_ceiling.py [--channels 32,64] [--passes 14]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from pvae_model.data import load_image_split
from pvae_model.modules import ImagePreEncoder


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each ``[N, 1, H, W]`` image moved by its own whole-pixel offset in [-max_shift, max_shift]
    on both axes (zero fill): the classic MNIST augmentation; an encoder that has seen digits a
    pixel or two off-centre generalises to the test split better than one that has not."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, 1, h, w + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, 1, h, w)
    return out.gather(3, cols)


def pre_encoder(channels: tuple[int, int], hidden: int, depth: str) -> nn.Module:
    """The PVAE's image pre-encoder ("spec"), or the same with a 3x3/1 conv (ReLU) of the same width
    before each strided one ("deep", an experiment that left the library: docs/study/pvae.md)."""
    if depth == "spec":
        return ImagePreEncoder(channels, hidden)
    if depth != "deep":
        raise SystemExit(f"--depth must be spec or deep, got {depth!r}")
    layers: list[nn.Module] = []
    c_in = 1
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 4, stride=2, padding=1), nn.ReLU()]
        c_in = c
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels[1] * 7 * 7, hidden))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default="exp/demo/shards/images")
    ap.add_argument("--channels", default="32,64", help="the pre-encoder's conv channels (make demo: 32,64)")
    ap.add_argument("--hidden", type=int, default=256, help="its FC width (make demo: 256)")
    ap.add_argument("--z", type=int, default=32, help="the z_s head's size")
    ap.add_argument("--depth", default="spec", help="spec | deep (a 3x3 conv before each strided one)")
    ap.add_argument("--shift", type=int, default=0, help="random whole-pixel shifts of up to this many pixels")
    ap.add_argument("--ema", type=float, default=0.0, help="also score an exponential moving average of the weights (decay)")
    ap.add_argument("--fc-relu", action="store_true", help="a ReLU after the pre-encoder's FC layer")
    ap.add_argument("--passes", type=int, default=14, help="passes over the 60,000 training images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train, test = load_image_split(a.shards, "train"), load_image_split(a.shards, "test")
    x, y = train.images, torch.as_tensor(np.asarray(train.labels))
    xt, yt = test.images, torch.as_tensor(np.asarray(test.labels))
    channels = tuple(int(c) for c in a.channels.split(","))
    act = [nn.ReLU()] if a.fc_relu else []
    net = nn.Sequential(pre_encoder(channels, a.hidden, a.depth), *act, nn.Linear(a.hidden, a.z), nn.Linear(a.z, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3, betas=(0.95, 0.999))  # make demo's optimiser
    g = torch.Generator().manual_seed(a.seed)
    ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(a.ema)) if a.ema else None

    @torch.no_grad()
    def accuracy(xs: torch.Tensor, ys: torch.Tensor, model: nn.Module = net) -> float:
        return float((torch.cat([model(xs[i:i + 2000]).argmax(1) for i in range(0, len(xs), 2000)]) == ys).float().mean())

    t0 = time.perf_counter()
    print("pass  presentations  test acc  train acc (first 10,000)  minutes" + ("  EMA test acc" if ema else ""))
    for p in range(a.passes):
        for b in torch.randperm(len(x), generator=g).split(128):
            loss = nn.functional.cross_entropy(net(random_shift(x[b], a.shift, g)), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(net)
        print(f"{p + 1:4d}  {(p + 1) * len(x):13,d}  {accuracy(xt, yt):8.2%}  {accuracy(x[:10000], y[:10000]):9.2%}"
              f"  {(time.perf_counter() - t0) / 60:7.1f}" + (f"  {accuracy(xt, yt, ema):12.2%}" if ema else ""), flush=True)


if __name__ == "__main__":
    main()

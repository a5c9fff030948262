"""The model-free style measure (pvae_model.eval.style) on drawn strokes and real MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest

from pvae_model.eval.style import image_style_features, style_transfer_r

from conftest import DATA_ROOT


def _stroke(lean: float, width: int = 1) -> np.ndarray:
    """A vertical stroke sheared by ``lean`` (x moves right by lean per row going up)."""
    img = np.zeros((28, 28))
    for y in range(4, 24):
        x = int(round(14 + lean * (14 - y)))
        img[y, x: x + width] = 1.0
    return img


def test_slant_sign_and_ink_follow_the_drawing():
    f = image_style_features(np.stack([_stroke(0.4), _stroke(0.0), _stroke(-0.4), _stroke(0.0, width=3)]))
    assert f["slant"][0] == pytest.approx(0.4, abs=0.05) and f["slant"][2] == pytest.approx(-0.4, abs=0.05)
    assert abs(f["slant"][1]) < 1e-9
    assert f["ink"][3] == pytest.approx(3 * f["ink"][1])
    assert f["width"][3] > f["width"][1]
    assert np.isfinite(image_style_features(np.zeros((1, 28, 28)))["slant"]).all()  # an empty image


def test_transfer_r_is_one_for_copies_and_near_zero_for_unrelated_real_digits():
    mnist = DATA_ROOT / "mnist"
    if not (mnist / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("MNIST not found")
    from pvae_data.mnist import load_mnist

    test = load_mnist(mnist, "test")
    x, y = test.images[:2000].astype(np.float64) / 255.0, test.labels[:2000]
    same = style_transfer_r(x, y, x, y)
    assert all(v == pytest.approx(1.0) for v in same.values())
    perm = np.random.default_rng(0).permutation(len(y))
    shuffled = style_transfer_r(x[perm], y[perm], x, y)  # a random other digit's "style"
    assert all(abs(v) < 0.1 for v in shuffled.values())
    # class centring: the same digits, each moved one pixel down, keep their style exactly
    moved = np.roll(x, 1, axis=1)
    assert style_transfer_r(x, y, moved, y)["slant"] > 0.99
    with pytest.raises(ValueError):
        style_transfer_r(x[:10], y[:10], x[:9], y[:9])

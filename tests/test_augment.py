from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from s2l_tools.data.augment import EMA_FILL, EMA_FILL_UINT8, augment, random_crop


def _coded(h: int, w: int, seed: int = 0):
    """Image channels = source row / column (linear, so bilinear is exact),
    ema = a linear function of them, scribbles = random 1/2 blocks (never 0)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([rows, cols])
    ema = ((rows + 2 * cols) / (h + 2 * w)).astype(np.float32)
    blocks = rng.integers(1, 3, size=(h // 5 + 1, w // 5 + 1)).astype(np.uint8)
    scribble = np.kron(blocks, np.ones((5, 5), np.uint8))[:h, :w]
    return image, scribble, ema


def _check_consistent(image, scribble, ema, img, scr, em, *, h, w):
    r, c = img[0].astype(float), img[1].astype(float)
    inside = ndimage.binary_erosion(scr != 0, np.ones((3, 3)), border_value=0)
    assert inside.mean() > 0.3
    # every in-image pixel came from a source position (r, c) inside the image ...
    assert (r[inside] > -0.51).all() and (r[inside] < h - 0.49).all()
    assert (c[inside] > -0.51).all() and (c[inside] < w - 0.49).all()
    # ... the EMA map was moved exactly like the image (bilinear, linear content)
    np.testing.assert_allclose(em[inside], ((r + 2 * c) / (h + 2 * w))[inside], atol=1e-4)
    # ... and the scribble is the nearest source pixel's label (ties excluded)
    tie = (np.abs(r - np.floor(r) - 0.5) < 1e-3) | (np.abs(c - np.floor(c) - 0.5) < 1e-3)
    ok = inside & ~tie
    ri = np.clip(np.rint(r), 0, h - 1).astype(int)
    ci = np.clip(np.rint(c), 0, w - 1).astype(int)
    np.testing.assert_array_equal(scr[ok], scribble[ri, ci][ok])
    # where the scribble is out of the image, the EMA map says "not confident"
    outside = ndimage.binary_erosion(scr == 0, np.ones((3, 3)), border_value=1)
    np.testing.assert_allclose(em[outside], EMA_FILL, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_geometry_is_shared(seed):
    h, w = 90, 110
    image, scribble, ema = _coded(h, w)
    rng = np.random.default_rng(seed)
    img, scr, em = augment(
        image, scribble, ema, rng=rng, crop=64, p_ssr=1.0, brightness=0, contrast=0
    )
    assert img.shape == (2, 64, 64) and img.dtype == np.float32
    assert scr.shape == (64, 64) and scr.dtype == np.uint8
    assert em.shape == (64, 64) and em.dtype == np.float32
    _check_consistent(image, scribble, ema, img, scr, em, h=h, w=w)


def test_warp_really_rotates_and_leaves_image():
    h, w = 70, 70
    image, scribble, ema = _coded(h, w)
    rng = np.random.default_rng(1)
    img, scr, em = augment(
        image, scribble, ema, rng=rng, crop=64, p_ssr=1.0, rotate=45, shift=0.2,
        flips=False, brightness=0, contrast=0,
    )
    _check_consistent(image, scribble, ema, img, scr, em, h=h, w=w)
    # non-integer source positions: a real warp happened
    assert np.abs(img[0] - np.rint(img[0])).max() > 0.1


def test_no_ssr_is_an_exact_crop_with_flips():
    image, scribble, ema = _coded(80, 100)
    for seed in range(4):
        img, scr, em = augment(
            image, scribble, ema, rng=np.random.default_rng(seed), crop=48,
            p_ssr=0.0, brightness=0, contrast=0,
        )
        r, c = img[0].astype(int), img[1].astype(int)
        assert np.array_equal(img[0], r) and np.array_equal(img[1], c)
        np.testing.assert_array_equal(scr, scribble[r, c])
        np.testing.assert_array_equal(em, ema[r, c])


def test_small_image_is_padded():
    h, w = 20, 30
    image, scribble, ema = _coded(h, w)
    img, scr, em = random_crop(image, scribble, ema, size=64, rng=np.random.default_rng(0))
    assert img.shape == (2, 64, 64) and scr.shape == em.shape == (64, 64)
    rows = np.flatnonzero((scr != 0).any(axis=1))
    cols = np.flatnonzero((scr != 0).any(axis=0))
    assert len(rows) == h and len(cols) == w  # the whole image is in the crop
    y0, x0 = rows[0], cols[0]
    np.testing.assert_array_equal(scr[y0 : y0 + h, x0 : x0 + w], scribble)
    np.testing.assert_array_equal(img[:, y0 : y0 + h, x0 : x0 + w], image)
    assert (scr == 0).sum() == 64 * 64 - h * w
    assert np.all(em[scr == 0] == EMA_FILL)
    # the image is padded by reflection (numpy 'reflect', repeated as needed)
    ref = np.pad(image, ((0, 0), (y0, 64 - h - y0), (x0, 64 - w - x0)), mode="reflect")
    np.testing.assert_array_equal(img, ref)


def test_uint8_ema_and_no_ema():
    image, scribble, ema = _coded(40, 40)
    ema8 = np.rint(ema * 255).astype(np.uint8)
    img, scr, em = augment(image, scribble, ema8, rng=np.random.default_rng(2), crop=64)
    assert em.dtype == np.uint8 and (em[scr == 0] == EMA_FILL_UINT8).mean() > 0.9
    img, scr, em = augment(image, scribble, None, rng=np.random.default_rng(2), crop=64)
    assert em is None and img.shape == (2, 64, 64)


def test_reproducible_and_seed_dependent():
    rng0 = np.random.default_rng(0)
    image = rng0.normal(size=(1, 100, 120)).astype(np.float32)
    scribble = rng0.integers(0, 3, size=(100, 120)).astype(np.uint8)
    ema = rng0.random((100, 120)).astype(np.float32)
    copies = [a.copy() for a in (image, scribble, ema)]
    a = augment(image, scribble, ema, rng=np.random.default_rng(5), crop=64)
    b = augment(image, scribble, ema, rng=np.random.default_rng(5), crop=64)
    c = augment(image, scribble, ema, rng=np.random.default_rng(6), crop=64)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    for orig, now in zip(copies, (image, scribble, ema)):
        np.testing.assert_array_equal(orig, now)  # inputs untouched


def test_photometric_touches_image_only():
    image, scribble, ema = _coded(64, 64)
    img, scr, em = augment(
        image, scribble, ema, rng=np.random.default_rng(3), crop=64, p_ssr=0.0,
        flips=False, brightness=0.2, contrast=0.2,
    )
    np.testing.assert_array_equal(scr, scribble)
    np.testing.assert_array_equal(em, ema)
    # image -> a * image + b with |a - 1| <= 0.2, |b| <= 0.2
    a = (img[0, 10, 0] - img[0, 0, 0]) / 10.0
    b = img[0, 0, 0]
    assert abs(a - 1) <= 0.2 + 1e-6 and abs(b) <= 0.2 + 1e-6 and (a, b) != (1, 0)
    np.testing.assert_allclose(img, image * a + b, atol=1e-4)


_PLAIN = dict(crop=64, p_ssr=0.0, flips=False, brightness=0.0, contrast=0.0)


def _without_and_with(arrays, seed: int, **extra):
    """The images of one crop drawn without and with ``extra`` (same rng seed); the
    scribbles and the EMA map of the two must be the same."""
    a = augment(*arrays, rng=np.random.default_rng(seed), crop=64)
    b = augment(*arrays, rng=np.random.default_rng(seed), crop=64, **extra)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    return a[0], b[0]


def _share_changed(arrays, **extra) -> float:
    """The share of 400 otherwise untransformed crops whose image ``extra`` changed."""
    return float(np.mean([
        not np.array_equal(augment(*arrays, rng=np.random.default_rng(k), **extra, **_PLAIN)[0],
                           arrays[0])
        for k in range(400)]))


def test_noise_touches_image_only_and_leaves_the_rest_as_without_it():
    image, scribble, ema = _coded(64, 64)
    # the noise is drawn after every other transform: with it, each crop is the crop
    # without it (same window, turn, flips, brightness) plus zero-mean noise
    for seed in range(5):
        a, b = _without_and_with((image, scribble, ema), seed, noise=0.1, p_noise=1.0)
        assert 0 < float(np.abs(b - a).max()) and float((b - a).std()) <= 0.1
    img, scr, em = augment(image, scribble, ema, rng=np.random.default_rng(0), noise=0.3,
                           p_noise=1.0, **_PLAIN)
    np.testing.assert_array_equal(scr, scribble)
    np.testing.assert_array_equal(em, ema)
    residual = img - image
    assert img.dtype == np.float32 and 0 < residual.std() <= 0.3
    assert abs(float(residual.mean())) < 0.05  # zero-mean noise, no brightness shift
    # p_noise: the share of crops that get it
    assert 0.09 < _share_changed((image, scribble, ema), noise=0.1) < 0.21


def test_gain_scales_the_image_only_and_leaves_the_rest_as_without_it():
    image, scribble, ema = _coded(64, 64)
    # the gain comes last: with it, a crop is the crop without it times one factor
    # in [1/3, 3]; the scribbles and the EMA map are those of the crop without it
    factors = []
    for seed in range(40):
        a, b = _without_and_with((image, scribble, ema), seed, gain=3.0, p_gain=1.0)
        big = np.abs(a) > 1
        ratio = b[big] / a[big]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
        factors.append(float(ratio[0]))
    assert 1 / 3 - 1e-6 <= min(factors) < 0.6 and 1.7 < max(factors) <= 3 + 1e-6
    # gain 1 (the default) draws nothing: the next crops are those of a call without it
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(3):
        a = augment(image, scribble, ema, rng=rng_a, crop=32)
        b = augment(image, scribble, ema, rng=rng_b, crop=32, gain=1.0, p_gain=1.0)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    # p_gain: the share of crops that get it
    assert 0.42 < _share_changed((image, scribble, ema), gain=2.0) < 0.58


def test_shape_errors():
    image, scribble, ema = _coded(30, 30)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="scribble"):
        augment(image, scribble[:-1], ema, rng=rng)
    with pytest.raises(ValueError, match="ema"):
        augment(image, scribble, ema[:, :-1], rng=rng)
    with pytest.raises(ValueError, match="image"):
        augment(image[0], scribble, ema, rng=rng)

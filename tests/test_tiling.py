"""Tests of s2l_tools.inference.tiling (tiled prediction with blending)."""

from __future__ import annotations

import numpy as np
import pytest

from s2l_tools.inference.tiling import (blend_window, flip_averaged, gain_averaged,
                                        parse_gains, predict_tiled, tile_positions)


def _identity(batch):
    assert batch.dtype == np.float32
    assert batch.shape[2] % 32 == 0 and batch.shape[3] % 32 == 0
    return batch.copy()


def _sigmoid2(batch):
    """Pointwise, two output channels: sigmoid(x0) and 1 - sigmoid(x0)."""
    s = 1.0 / (1.0 + np.exp(-batch[:, :1]))
    return np.concatenate([s, 1.0 - s], axis=1)


@pytest.mark.parametrize(
    "shape",
    [(1, 1), (1, 7), (5, 3), (31, 33), (64, 64), (96, 96), (97, 130), (200, 71), (517, 1031)],
)
def test_identity_returns_input(shape):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    out = predict_tiled(_identity, image, tile=96, overlap=32, batch_size=3)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile,overlap", [(32, 0), (64, 16), (128, 64), (512, 64)])
def test_pointwise_fn_is_exact(tile, overlap):
    rng = np.random.default_rng(1)
    image = rng.normal(scale=3, size=(1, 150, 203)).astype(np.float32)
    out = predict_tiled(_sigmoid2, image, tile=tile, overlap=overlap)
    expected = _sigmoid2(image[None])[0]
    assert out.shape == (2, 150, 203)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_batch_size_does_not_change_result():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(3, 170, 140)).astype(np.float32)

    def fn(batch):  # not pointwise: each tile's output depends on the tile's mean
        return batch[:, :1] - batch.mean(axis=(1, 2, 3), keepdims=True)

    outs = [predict_tiled(fn, image, tile=64, overlap=16, batch_size=b) for b in (1, 2, 5, 100)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def test_fn_batches_and_progress():
    image = np.zeros((1, 200, 200), np.float32)
    calls, progress = [], []

    def fn(batch):
        calls.append(batch.shape)
        return batch

    predict_tiled(fn, image, tile=64, overlap=16, batch_size=4, progress=lambda d, t: progress.append((d, t)))
    n_tiles = len(tile_positions(216, 64, 16)) ** 2
    assert sum(s[0] for s in calls) == n_tiles
    assert all(s[0] <= 4 and s[2:] == (64, 64) for s in calls)
    assert progress[-1] == (n_tiles, n_tiles)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_small_image_single_padded_tile():
    shapes = []

    def fn(batch):
        shapes.append(batch.shape)
        return batch

    predict_tiled(fn, np.ones((1, 40, 70), np.float32), tile=512, overlap=64)
    # an image that fits in one tile is one tile, padded to multiples of 32 at its end
    assert shapes == [(1, 1, 64, 96)]


@pytest.mark.parametrize("shape", [(64, 96), (40, 70)])
def test_one_tile_is_fn_of_the_padded_image(shape):
    # no ramp with one tile: the result is fn's output, cropped, bit for bit, in a new
    # array; fn may write into its batch without touching the caller's image
    rng = np.random.default_rng(3)
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    kept = image.copy()
    outputs = []

    def fn(batch):  # not pointwise: a running sum along x reaches into the padding
        outputs.append(np.concatenate([batch, np.cumsum(batch, axis=3)], axis=1))
        batch[:] = 0
        return outputs[-1]

    out = predict_tiled(fn, image, tile=128, overlap=32)
    h, w = shape
    padded = np.pad(kept, ((0, 0), (0, 64 - h), (0, 96 - w)), mode="reflect")
    expected = np.concatenate([padded, np.cumsum(padded, axis=2)])[:, :h, :w]
    assert len(outputs) == 1 and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(image, kept)
    assert not np.shares_memory(out, outputs[0])


@pytest.mark.parametrize(
    "length,tile,overlap", [(1, 4, 1), (4, 4, 1), (5, 4, 1), (10, 4, 1), (11, 4, 2), (1000, 96, 32)]
)
def test_tile_positions_cover_with_overlap(length, tile, overlap):
    starts = tile_positions(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == max(length - tile, 0)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    gaps = np.diff(starts)
    assert np.all(gaps > 0) and np.all(gaps <= tile - overlap)


def test_tile_positions_examples_and_errors():
    assert tile_positions(10, 4, 1) == [0, 3, 6]
    assert tile_positions(11, 4, 1) == [0, 3, 6, 7]
    with pytest.raises(ValueError, match="overlap"):
        tile_positions(10, 4, 4)
    with pytest.raises(ValueError, match="length"):
        tile_positions(0, 4, 1)


def test_blend_window_positive_symmetric():
    w = blend_window(96, 32)
    assert w.shape == (96,) and np.all(w > 0) and np.all(w <= 1)
    np.testing.assert_allclose(w, w[::-1])
    assert w[0] < 0.01 and np.all(w[32:64] == 1)
    assert np.all(np.diff(w[:33]) >= 0)
    np.testing.assert_array_equal(blend_window(10, 0), np.ones(10))
    assert np.all(blend_window(3, 64) > 0)


def test_blended_weights_normalise():
    """A constant fn gives the constant everywhere: sum(w * c) / sum(w) == c."""
    def fn(batch):
        return np.full((batch.shape[0], 1, *batch.shape[2:]), 0.25, np.float32)

    out = predict_tiled(fn, np.zeros((1, 301, 257), np.float32), tile=64, overlap=32)
    np.testing.assert_allclose(out, 0.25, rtol=1e-6)


def test_overlapping_ramps_sum_to_one():
    """With stride tile - overlap, the cosine ramps of neighbours add up to 1."""
    tile, overlap = 64, 32
    w = blend_window(tile, overlap)
    total = np.zeros(tile * 4)
    for s in range(0, tile * 4 - tile + 1, tile - overlap):
        total[s : s + tile] += w
    np.testing.assert_allclose(total[overlap : -overlap], 1.0, atol=1e-12)


def test_bad_arguments():
    image = np.zeros((1, 10, 10), np.float32)
    with pytest.raises(ValueError, match="multiple"):
        predict_tiled(_identity, image, tile=100)
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(_identity, image, tile=64, overlap=64)
    with pytest.raises(ValueError, match="batch_size"):
        predict_tiled(_identity, image, batch_size=0)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        predict_tiled(_identity, np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="fn returned"):
        predict_tiled(lambda b: b[:, :, :8], image, tile=64, overlap=0)


def test_default_tile_on_odd_large_image():
    rng = np.random.default_rng(3)
    image = rng.random((1, 517, 1031)).astype(np.float32)
    out = predict_tiled(_identity, image)
    np.testing.assert_allclose(out, image, rtol=1e-5, atol=1e-6)


def test_flip_averaged_is_the_mean_of_the_flipped_outputs():
    """Each flipped input's output is flipped back before the mean: a map that depends on
    the position (x plus 10 y) averages to its mean over the four flips, a constant."""
    batch = np.zeros((2, 1, 4, 6), np.float32)
    yy, xx = np.mgrid[0:4, 0:6].astype(np.float32)

    def position(b):
        return np.broadcast_to(xx + 10 * yy, (b.shape[0], 1, 4, 6)).copy()

    out = flip_averaged(position)(batch)
    np.testing.assert_allclose(out, np.full((2, 1, 4, 6), 2.5 + 10 * 1.5), atol=1e-6)
    # a flip-equivariant (pointwise) fn is unchanged, and the input is left as it was
    x = np.random.default_rng(3).normal(size=(3, 1, 32, 64)).astype(np.float32)
    keep = x.copy()
    np.testing.assert_allclose(flip_averaged(_sigmoid2)(x), _sigmoid2(x), atol=1e-6)
    np.testing.assert_array_equal(x, keep)


def test_flips_in_predict_tiled():
    """flips=True: four fn calls per batch, the same progress, the four flips' mean; an fn
    that writes into its input does not change what the other flips see."""
    image = np.random.default_rng(4).normal(size=(1, 150, 203)).astype(np.float32)
    calls = []

    def fn(batch):
        calls.append(batch.shape[0])
        out = _sigmoid2(batch)
        batch[:] = 0  # scribbles over its input
        return out

    progress = []
    out = predict_tiled(fn, image, tile=64, overlap=16, flips=True,
                        progress=lambda d, t: progress.append(d))
    n_tiles = progress[-1]
    assert sum(calls) == 4 * n_tiles and len(calls) == 4 * len(progress)
    np.testing.assert_allclose(out, _sigmoid2(image[None])[0], atol=1e-5)
    one = predict_tiled(fn, image[:, :40, :50], tile=64, overlap=16, flips=True)  # one tile
    np.testing.assert_allclose(one, _sigmoid2(image[None, :, :40, :50])[0], atol=1e-6)
    # not equivariant: a map that grows to the right is averaged with its mirror image
    ramp = predict_tiled(lambda b: np.broadcast_to(np.arange(b.shape[3], dtype=np.float32),
                                                   b.shape).copy(),
                         np.zeros((1, 40, 50), np.float32), tile=64, overlap=16, flips=True)
    assert np.ptp(ramp) < 1e-5


def test_gain_averaged_is_the_mean_over_the_brightened_images():
    """Each gain one call on the image times the gain; the maps averaged; gain 1 alone is the
    call itself."""
    image = np.random.default_rng(0).random((2, 9, 7)).astype(np.float32)
    seen = []

    def predict(im):
        seen.append(float(im.max()))
        return np.tanh(im.sum(0))

    got = gain_averaged(predict, image, (1, 1.5, 2))
    want = np.mean([np.tanh(image.sum(0) * g) for g in (1, 1.5, 2)], axis=0)
    assert got.dtype == np.float32 and got.shape == (9, 7)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert len(seen) == 3 and seen[2] == pytest.approx(2 * seen[0], rel=1e-6)
    np.testing.assert_array_equal(gain_averaged(predict, image, (1,)), np.tanh(image.sum(0)))
    for bad in ((), (1, 0), (1, float("nan")), (-1,)):
        with pytest.raises(ValueError, match="each must be a number above 0"):
            gain_averaged(predict, image, bad)


@pytest.mark.parametrize("text, want", [("1", (1.0,)), (" 1, 1.5,2 ", (1.0, 1.5, 2.0)),
                                        ("0.5,1", (0.5, 1.0))])
def test_parse_gains(text, want):
    assert parse_gains(text) == want


@pytest.mark.parametrize("text", ["", "1,", "1;2", "x", "0", "1,-2", "inf"])
def test_parse_gains_says_the_fix(text):
    with pytest.raises(ValueError, match=r"above 0 .*e\.g\. 1,1\.5,2"):
        parse_gains(text)

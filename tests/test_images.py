"""Image reading: dtypes, channels, normalisation and every bad input."""

import numpy as np
import pytest
import tifffile

from s2l_tools.errors import S2LError, S2LWarning
from s2l_tools.io.images import image_stem, normalize, read_image, read_labels, read_raw, write_tiff


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_grey_tiff_any_dtype(tmp_path, rng, dtype):
    data = (rng.random((30, 40)) * 200).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", data)
    img = read_image(tmp_path / "a.tif")
    assert img.shape == (1, 30, 40) and img.dtype == np.float32
    lo, hi = np.percentile(img, [1, 99.8])
    assert abs(lo) < 1e-5 and abs(hi - 1) < 1e-5


def test_normalisation_is_affine_invariant(tmp_path, rng):
    data = rng.random((32, 32)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", data)
    tifffile.imwrite(tmp_path / "u.tif", (data * 60000 + 100).astype(np.uint16))
    a, b = read_image(tmp_path / "f.tif"), read_image(tmp_path / "u.tif")
    assert np.allclose(a, b, atol=1e-3)


def test_rgb_png_and_channel_pick(tmp_path, rng):
    import imageio.v3 as iio

    rgb = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "c.png", rgb)
    img = read_raw(tmp_path / "c.png")
    assert img.shape == (3, 20, 24)
    assert np.array_equal(img[1], rgb[..., 1])
    one = read_raw(tmp_path / "c.png", channel=2)
    assert one.shape == (1, 20, 24) and np.array_equal(one[0], rgb[..., 2])


def test_grey_stored_as_rgb_becomes_one_channel(tmp_path, rng):
    import imageio.v3 as iio

    g = (rng.random((20, 24)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "g.png", np.stack([g, g, g], -1))
    assert read_raw(tmp_path / "g.png").shape == (1, 20, 24)


def test_many_channels_need_channel(tmp_path, rng):
    tifffile.imwrite(tmp_path / "m.tif", rng.random((5, 16, 16)).astype(np.float32),
                     imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(S2LError, match=r"m\.tif: 5 channels; pick .* --channel"):
        read_raw(tmp_path / "m.tif")
    assert read_raw(tmp_path / "m.tif", channel=4).shape == (1, 16, 16)
    with pytest.raises(S2LError, match="--channel 7 is out of range"):
        read_raw(tmp_path / "m.tif", channel=7)


def test_stack_is_refused(tmp_path, rng):
    tifffile.imwrite(tmp_path / "z.tif", rng.random((4, 16, 16)).astype(np.float32),
                     imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(S2LError, match=r"z\.tif: a 3-D stack .*Z=4.*Z Project"):
        read_raw(tmp_path / "z.tif")


def test_corrupt_and_empty_files(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage that is not a tiff")
    with pytest.raises(S2LError, match=r"bad\.tif: cannot read the image"):
        read_raw(tmp_path / "bad.tif")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(S2LError, match=r"empty\.png: the file is empty"):
        read_raw(tmp_path / "empty.png")
    with pytest.raises(S2LError, match="no such image file"):
        read_raw(tmp_path / "missing.tif")
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(S2LError, match="unsupported image type"):
        read_raw(tmp_path / "x.bmp")


def test_huge_image_refused(tmp_path, monkeypatch):
    import s2l_tools.io.images as images

    tifffile.imwrite(tmp_path / "h.tif", np.zeros((64, 64), np.uint8))
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(S2LError, match=r"h\.tif: image is huge \(64 x 64"):
        read_raw(tmp_path / "h.tif")


def test_constant_image_warns():
    with pytest.warns(S2LWarning, match="constant"):
        out = normalize(np.full((1, 8, 8), 7, np.uint16))
    assert np.all(out == 0)


def test_labels_round_trip_and_errors(tmp_path):
    lab = np.zeros((10, 12), np.uint16)
    lab[2:5, 3:7] = 300
    write_tiff(tmp_path / "l.tif", lab)
    assert np.array_equal(read_labels(tmp_path / "l.tif"), lab)
    assert not list(tmp_path.glob("*.part"))
    tifffile.imwrite(tmp_path / "f.tif", np.full((4, 4), 0.5, np.float32))
    with pytest.raises(S2LError, match="non-integer values"):
        read_labels(tmp_path / "f.tif")
    nan = np.zeros((4, 4), np.float32)
    nan[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(S2LError, match="non-integer values"):
        read_labels(tmp_path / "nan.tif")
    tifffile.imwrite(tmp_path / "neg.tif", np.array([[0, -1], [2, 2]], np.int16))
    with pytest.raises(S2LError, match=r"neg\.tif: label image has negative values; use 0"):
        read_labels(tmp_path / "neg.tif")
    tifffile.imwrite(tmp_path / "negf.tif", np.array([[0, -1], [2, 2]], np.float32))
    with pytest.raises(S2LError, match="negative values"):
        read_labels(tmp_path / "negf.tif")
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(S2LError, match="must be 2-D"):
        read_labels(tmp_path / "s.tif")
    tifffile.imwrite(tmp_path / "one.tif", lab[None])  # a length-1 axis is dropped
    assert np.array_equal(read_labels(tmp_path / "one.tif"), lab)


def test_image_stem():
    assert image_stem("a/b/x.ome.tif") == "x"
    assert image_stem("x.TIF") == "x"
    assert image_stem("cell.01.png") == "cell.01"

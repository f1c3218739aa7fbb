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


# --------------------------------------------------------------------------- atomic writes
def test_outputs_respect_the_umask(tmp_path):
    """Outputs used to be mode 0600 (mkstemp's) whatever the umask."""
    import os
    import stat

    old = os.umask(0o002)
    try:
        write_tiff(tmp_path / "group.tif", np.zeros((4, 4), np.uint8))
        os.umask(0o077)
        write_tiff(tmp_path / "private.tif", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "group.tif").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "private.tif").stat().st_mode) == 0o600


def test_stale_part_files_are_removed(tmp_path):
    """A writer killed mid-write (a checkpoint, say) left a large .part file forever."""
    import os
    import subprocess
    import sys

    from s2l_tools.io.atomic import _host

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    killed = tmp_path / f".checkpoint.pt.{_host()}-{dead_pid}.abc123.part"
    killed.write_bytes(b"x" * 1000)
    other = tmp_path / f".m.tif.{_host()}-{dead_pid}.qwerty.part"  # another target, same fate
    other.write_bytes(b"x")
    old = tmp_path / ".m.tif.otherhost-1.zzzzzz.part"  # another host: only by age
    old.write_bytes(b"x")
    os.utime(old, (1, 1))
    legacy = tmp_path / ".m.tif.k2j4h5l6.part"  # mkstemp's name before: only by age
    legacy.write_bytes(b"x")
    os.utime(legacy, (1, 1))
    recent = tmp_path / ".m.tif.otherhost-2.yyyyyy.part"  # another host, recent: kept
    recent.write_bytes(b"x")
    alive = tmp_path / f".m.tif.{_host()}-{os.getppid()}.qqqqqq.part"  # a running process
    alive.write_bytes(b"x")
    foreign = tmp_path / "download.part"  # not ours: never touched
    foreign.write_bytes(b"x")
    os.utime(foreign, (1, 1))
    write_tiff(tmp_path / "m.tif", np.zeros((4, 4), np.uint8))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["m.tif", recent.name, alive.name, foreign.name])


def test_write_failure_is_one_line_naming_the_file(tmp_path):
    """A full disk (here: a file-size limit) ended as an internal error and left a .part."""
    import subprocess
    import sys

    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (10000, 10000))\n"
        "import numpy as np\n"
        "from s2l_tools.errors import S2LError\n"
        "from s2l_tools.io.images import write_tiff\n"
        "try:\n"
        "    write_tiff(sys.argv[1], np.ones((200, 200)), compression=None)\n"
        "except S2LError as exc:\n"
        "    print(exc)\n"
    )
    target = tmp_path / "big.tif"
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.startswith(f"{target}: cannot write"), done.stdout + done.stderr
    assert "free space" in done.stdout and "\n" not in done.stdout.strip()
    assert list(tmp_path.iterdir()) == []


def test_output_under_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(S2LError, match=r"f/o\.tif: cannot write \(a parent of the output is a "
                       r"file, not a folder\); choose another output folder"):
        write_tiff(tmp_path / "f" / "o.tif", np.zeros((4, 4), np.uint8))


# --------------------------------------------------------------------------- issue 16: odd images
def test_image_without_pixels_is_one_line(tmp_path):
    """A 0x0 TIFF was an internal error (percentiles of nothing)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile: "writing zero-size array"
        tifffile.imwrite(tmp_path / "z.tif", np.zeros((0, 0), np.uint8))
    with pytest.raises(S2LError, match=r"z\.tif: the image has no pixels"):
        read_raw(tmp_path / "z.tif")
    with pytest.raises(S2LError, match=r"z\.tif: .*no pixels"):
        read_labels(tmp_path / "z.tif")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_pixels_are_refused(tmp_path, bad):
    """NaN/Inf pixels made the percentile normalisation NaN: empty predictions, NaN losses."""
    data = np.ones((6, 7), np.float32)
    data[2, 3] = bad
    data[4, 4] = bad
    tifffile.imwrite(tmp_path / "n.tif", data)
    with pytest.raises(S2LError, match=r"n\.tif: 2 pixel\(s\) are NaN or infinite; replace them"):
        read_raw(tmp_path / "n.tif")
    with pytest.raises(S2LError, match="non-integer values"):
        read_labels(tmp_path / "n.tif")


def test_reader_errors_are_one_line(tmp_path):
    """bioio's multi-line messages came out as several lines."""
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + bytes(50))
    for name in ("bad.png", "bad.tif"):
        with pytest.raises(S2LError) as info:
            read_raw(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name)) and "\n" not in str(info.value)

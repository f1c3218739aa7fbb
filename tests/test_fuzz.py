"""Fuzz tests (Hypothesis): the ROI reader, the rasteriser and the image reader.

Damaged or hostile input may only ever end as an :class:`S2LError` (one line,
naming the file) or an :class:`S2LWarning`; any other exception is a bug
(issue 16: it was "internal error", exit 3). Examples and time are bounded so
that the whole file takes well under 30 s.
"""

from __future__ import annotations

import io
import struct
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from roifile import ROI_OPTIONS, ROI_TYPE, ImagejRoi

from s2l_tools.errors import S2LError, S2LWarning
from s2l_tools.io import roi as R
from s2l_tools.io.images import read_labels, read_raw

_COMMON = dict(derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                        HealthCheck.too_slow])
# the deadline catches work that grows with an ROI's extent (minutes and GBs before the fix)
FUZZ = settings(max_examples=50, deadline=10_000, **_COMMON)
# image readers: their speed is theirs (the first call imports bioio's plugins)
FUZZ_IMAGES = settings(max_examples=30, deadline=None, **_COMMON)
SHAPE = (48, 64)


def _only_ours(fn, *args, **kw):
    """Call ``fn``; an S2LError must be one line; S2LWarnings are allowed, other
    warnings are not."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning (overflow, invalid cast) is a bug
        warnings.simplefilter("ignore", S2LWarning)
        try:
            return fn(*args, **kw)
        except S2LError as exc:
            assert "\n" not in str(exc), str(exc)
            return None


def _seed_rois() -> list[ImagejRoi]:
    """Valid ROIs of each kind the rasteriser draws, the seeds of the byte mutations."""
    rois = []
    for roitype, pts in ((ROI_TYPE.POLYGON, [[3, 4], [30, 5], [20, 40]]),
                         (ROI_TYPE.POLYLINE, [[2.5, 3.25], [40.75, 30.5], [60.0, 2.0]]),
                         (ROI_TYPE.FREELINE, [[5, 5], [6, 7], [8, 9], [12, 9]]),
                         (ROI_TYPE.POINT, [[1, 1], [10, 20]])):
        roi = ImagejRoi.frompoints(np.asarray(pts, dtype=np.float64), name="fg-x")
        roi.roitype = roitype
        roi.stroke_width = 3
        roi.group = 1
        rois.append(roi)
    line = ImagejRoi(roitype=ROI_TYPE.LINE, version=228, name="fg-line", group=1)
    line.x1, line.y1, line.x2, line.y2 = 2.5, 3.0, 50.25, 40.0
    line.left, line.top, line.right, line.bottom = 2, 3, 51, 41
    line.options |= ROI_OPTIONS.SUB_PIXEL_RESOLUTION
    line.stroke_width = 4
    rois.append(line)
    oval = ImagejRoi(roitype=ROI_TYPE.OVAL, version=228, name="bg-oval", group=2)
    oval.left, oval.top, oval.right, oval.bottom = 5, 6, 25, 30
    rois.append(oval)
    return rois


SEEDS = [r.tobytes() for r in _seed_rois()]


@st.composite
def mutated_roi_bytes(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["byte", "float", "int16", "cut"]))
        if kind == "cut":
            del data[draw(st.integers(4, len(data))):]
            continue
        if len(data) < 8:
            break
        pos = draw(st.integers(4, len(data) - 4))
        if kind == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "float":
            value = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e30,
                                          -1e9, 3.4e38, 0.5, 65535.5]))
            data[pos:pos + 4] = struct.pack(">f", value)
        else:
            data[pos:pos + 2] = struct.pack(">h", draw(st.integers(-32768, 32767)))
    return bytes(data)


@FUZZ
@given(mutated_roi_bytes())
def test_fuzzed_roi_files(tmp_path_factory, data):
    """Read a damaged .roi file and rasterise it: our error or a mask of the image's size."""
    path = tmp_path_factory.mktemp("roi") / "x.roi"
    path.write_bytes(data)
    rois = _only_ours(R.read_rois, path)
    if rois:
        mask = _only_ours(R.rois_to_scribbles, rois, SHAPE, source=str(path),
                          skip_unclassified=True)
        assert mask is None or (mask.shape == SHAPE and mask.dtype == np.uint8)


def _good_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, data in enumerate(SEEDS):
            zf.writestr(f"roi-{i}.roi", data)
    return buf.getvalue()


GOOD_ZIP = _good_zip()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(GOOD_ZIP) - 1), st.integers(0, 255)),
                min_size=1, max_size=8),
       st.integers(0, len(GOOD_ZIP)))
def test_fuzzed_roiset_zips(tmp_path_factory, edits, cut):
    """Damaged RoiSet.zip files (zlib errors, bad headers, odd versions, lost names)."""
    data = bytearray(GOOD_ZIP)
    for pos, value in edits:
        data[pos] = value
    path = tmp_path_factory.mktemp("zip") / "RoiSet.zip"
    path.write_bytes(bytes(data[:max(cut, 22)]))
    rois = _only_ours(R.read_rois, path)
    if rois:
        _only_ours(R.rois_to_scribbles, rois, SHAPE, source=str(path), skip_unclassified=True)


coordinate = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                       st.floats(-100, 200))


@FUZZ
@given(st.sampled_from([ROI_TYPE.POLYGON, ROI_TYPE.FREEHAND, ROI_TYPE.POLYLINE,
                        ROI_TYPE.FREELINE, ROI_TYPE.POINT, ROI_TYPE.LINE, ROI_TYPE.OVAL,
                        ROI_TYPE.RECT]),
       st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=6),
       st.floats(0, 50))
def test_fuzzed_roi_geometry(roitype, points, stroke):
    """Any coordinates, sub-pixel, huge, NaN: our error or a mask, time and memory bounded by
    the image (the deadline)."""
    pts = np.asarray(points, dtype=np.float64)
    roi = ImagejRoi(roitype=roitype, version=228, name="fg-f", group=1)
    roi.options |= ROI_OPTIONS.SUB_PIXEL_RESOLUTION
    roi.float_stroke_width = stroke
    if roitype == ROI_TYPE.LINE:
        roi.x1, roi.y1 = pts[0]
        roi.x2, roi.y2 = pts[-1]
    elif roitype in (ROI_TYPE.OVAL, ROI_TYPE.RECT):
        roi.xd, roi.yd = pts[0]
        with np.errstate(all="ignore"):
            roi.widthd, roi.heightd = np.abs(pts[-1] - pts[0])
    else:
        roi.subpixel_coordinates = pts
        roi.n_coordinates = len(pts)
        roi.integer_coordinates = np.zeros_like(pts, dtype=np.int32)
    mask = _only_ours(R.rois_to_scribbles, [roi], SHAPE, source="f.zip")
    assert mask is None or mask.shape == SHAPE


@st.composite
def images(draw):
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64]))
    h, w = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    extra = draw(st.sampled_from([(), (3,), (5,), (2, 1)]))
    shape = (*extra, h, w) if len(extra) != 1 or extra[0] != 3 else (h, w, 3)
    if np.issubdtype(dtype, np.floating):
        values = st.floats(allow_nan=True, allow_infinity=True, width=32)
    else:
        info = np.iinfo(dtype)
        values = st.integers(int(info.min), int(info.max))
    flat = draw(st.lists(values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return np.asarray(flat, dtype=dtype).reshape(shape)


@FUZZ_IMAGES
@given(images(), st.sampled_from(["tif", "png"]))
def test_fuzzed_images(tmp_path_factory, array, suffix):
    """Odd images (0 x 0, NaN/Inf, stacks, many channels) read as ours or refused in one line."""
    import imageio.v3 as iio
    import tifffile

    path = tmp_path_factory.mktemp("img") / f"x.{suffix}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if suffix == "tif":
                tifffile.imwrite(path, array)
            else:
                iio.imwrite(path, array)
    except Exception:  # noqa: BLE001 - the writer refuses it: nothing to read
        return
    raw = _only_ours(read_raw, path)
    if raw is not None:
        assert raw.ndim == 3 and raw.shape[0] in (1, 2, 3) and raw.size > 0
        assert raw.dtype.kind not in "fc" or np.isfinite(raw).all()
    _only_ours(read_labels, path)


@FUZZ_IMAGES
@given(st.binary(min_size=0, max_size=300), st.sampled_from(["tif", "png", "jpg"]))
def test_fuzzed_image_bytes(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("bytes") / f"x.{suffix}"
    header = {"tif": b"II*\x00", "png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff"}[suffix]
    path.write_bytes(header + data)
    _only_ours(read_raw, path)
    _only_ours(read_labels, path)

"""ImageJ ROIs <-> masks, pixel for pixel as ImageJ 1 (1.53t) makes them.

Reading and writing the ROI file format is left to :mod:`roifile`; this module
validates the files, decides which class an ROI belongs to and rasterises ROIs
exactly as ImageJ does, so that a scribble drawn in Fiji covers the same pixels
here.

What "the mask ImageJ makes" means, per ROI type (checked against real ImageJ
1.53t by ``tests/test_roi.py``):

=========================  ===================================================
ROI                        mask
=========================  ===================================================
polygon, freehand, traced  filled (``ImageProcessor.fill(roi)``, Edit > Fill);
rectangle, oval,           vertices lie on pixel corners, a pixel is inside when
composite                  its centre is (composite: even-odd over all pieces)
straight line, width <= 1  drawn: a DDA between the rounded end points (pixel
                           centres), ``roi.drawPixels`` (Edit > Draw)
straight line, width > 1   the filled rotated rectangle ImageJ uses for wide
                           lines (``ip.fillPolygon(roi.getPolygon())``, which
                           is what Edit > Fill does with a wide line)
polyline, freeline         drawn with ``roi.drawPixels`` at the stroke width:
                           width 1 one pixel per step, width 2 a 2x2 square,
                           width >= 3 a round dot (ImageJ's ``drawDot``)
point, multi-point         one pixel per point (ImageJ's ``PointRoi.drawPixels``
                           ignores the marker size and the stroke width)
=========================  ===================================================

Text, arrow and image ROIs, angles, spline-fitted and rounded-rectangle ROIs
are refused (:class:`~s2l_tools.errors.S2LError`) rather than guessed.
"""

from __future__ import annotations

import math
import os
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import roifile
from roifile import ROI_OPTIONS, ROI_SUBTYPE, ROI_TYPE, ImagejRoi
from skimage.draw import ellipse as _sk_ellipse

from s2l_tools.io.atomic import atomic_path
from s2l_tools.errors import S2LError, S2LWarning
from s2l_tools.labels import BACKGROUND_CLASS, FOREGROUND_CLASS, class_to_code

__all__ = [
    "DEFAULT_GROUPS",
    "DEFAULT_NAMES",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "labels_to_roiset",
    "rasterize_roi",
    "read_rois",
    "roi_class",
    "rois_to_scribbles",
    "scribbles_to_roiset",
]

#: A RoiSet.zip with more members than this is refused (zip bomb guard).
MAX_ZIP_MEMBERS = 100_000
#: A RoiSet.zip whose members add up to more than this (uncompressed) is refused.
MAX_ZIP_BYTES = 1 << 30
#: Largest single .roi file or zip member read.
MAX_ROI_BYTES = 256 << 20

#: ROI group -> class (ImageJ's Edit > Selection > Properties > Group).
DEFAULT_GROUPS: dict[int, int] = {1: FOREGROUND_CLASS, 2: BACKGROUND_CLASS}
#: Name regex (matched at the start, case-insensitive) -> class.
DEFAULT_NAMES: dict[str, int] = {
    r"(fg|cell|fore|nuc)": FOREGROUND_CLASS,
    r"(bg|back)": BACKGROUND_CLASS,
}

_MAGIC = b"Iout"
_AREA_TYPES = (ROI_TYPE.POLYGON, ROI_TYPE.FREEHAND, ROI_TYPE.TRACED)
_MAX_INT_COORD = 32767  # integer ROI coordinates are 16 bit


# --------------------------------------------------------------------------- reading


def read_rois(path: str | os.PathLike) -> list[ImagejRoi]:
    """Read ImageJ ROIs from a RoiSet.zip, a single .roi file or an ImageJ TIFF.

    Parameters
    ----------
    path : path-like
        ``RoiSet.zip`` (as saved by the ROI Manager), a ``.roi`` file, or a
        ``.tif``/``.tiff`` whose ImageJ overlay (and selection) holds the ROIs.

    Returns
    -------
    rois : list of roifile.ImagejRoi
        In file order (the ROI Manager's order). A TIFF without an overlay
        gives an empty list; the caller decides whether that is an error.

    Raises
    ------
    S2LError
        Missing or unreadable file; a zip member that is not a ROI; a zip with
        unsafe member names ('..', absolute paths) or implausibly large (more
        than :data:`MAX_ZIP_MEMBERS` members or :data:`MAX_ZIP_BYTES` bytes);
        a RoiSet.zip without ROIs.
    """
    path = Path(path)
    if not path.is_file():
        raise S2LError(f"{path}: no such file; give a RoiSet.zip, a .roi file or an ImageJ TIFF")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _read_tiff_overlay(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as fh:
        data = fh.read(MAX_ROI_BYTES + 1)
    if len(data) > MAX_ROI_BYTES:
        raise S2LError(f"{path}: larger than {MAX_ROI_BYTES} bytes, not an ImageJ .roi file")
    if data[:4] != _MAGIC:
        raise S2LError(
            f"{path}: not a RoiSet.zip, .roi file or ImageJ TIFF; "
            "save ROIs from the ROI Manager with More > Save..."
        )
    return [_decode(data, f"{path}")]


def _decode(data: bytes, where: str) -> ImagejRoi:
    if data[:4] != _MAGIC:
        raise S2LError(f"{where}: not an ImageJ ROI (no 'Iout' header); remove it or re-save the ROIs from ImageJ")
    try:
        return ImagejRoi.frombytes(data)
    except Exception as exc:  # roifile raises ValueError/struct.error on damage
        raise S2LError(f"{where}: damaged ImageJ ROI ({exc}); re-save the ROIs from ImageJ") from None


def _unsafe_member_name(name: str) -> bool:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return ".." in parts


def _read_zip(path: Path) -> list[ImagejRoi]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise S2LError(f"{path}: unreadable zip file ({exc}); re-save the RoiSet.zip from the ROI Manager") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise S2LError(
                f"{path}: {len(infos)} zip members, more than the {MAX_ZIP_MEMBERS} a RoiSet.zip may hold; "
                "this is not a RoiSet.zip (or a zip bomb)"
            )
        total = sum(info.file_size for info in infos)
        if total > MAX_ZIP_BYTES:
            raise S2LError(
                f"{path}: {total} bytes uncompressed, more than {MAX_ZIP_BYTES}; "
                "this is not a RoiSet.zip (or a zip bomb)"
            )
        rois = []
        for info in infos:
            name = info.filename
            if _unsafe_member_name(name):
                raise S2LError(
                    f"{path}: member {name!r} has an unsafe path (absolute or '..'); "
                    "refusing this zip, re-save the ROIs from the ROI Manager"
                )
            if info.is_dir():
                continue
            where = f"{path}: member {name!r}"
            if not name.lower().endswith(".roi"):
                raise S2LError(f"{where}: not an ImageJ .roi file; remove it from the zip")
            if info.file_size > MAX_ROI_BYTES:
                raise S2LError(f"{where}: larger than {MAX_ROI_BYTES} bytes, not an ImageJ ROI")
            try:
                with zf.open(info) as fh:
                    data = fh.read(MAX_ROI_BYTES + 1)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                raise S2LError(f"{where}: unreadable ({exc}); re-save the RoiSet.zip") from None
            rois.append(_decode(data, where))
    if not rois:
        raise S2LError(f"{path}: the RoiSet.zip holds no ROIs; add ROIs to the ROI Manager and save again")
    return rois


def _read_tiff_overlay(path: Path) -> list[ImagejRoi]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            meta = tif.imagej_metadata
    except Exception as exc:  # tifffile raises many kinds
        raise S2LError(f"{path}: unreadable TIFF ({exc}); check the file") from None
    if not meta:
        return []
    blobs: list[bytes] = []
    for key in ("Overlays", "ROI"):
        value = meta.get(key)
        if value is None:
            continue
        blobs.extend(value if isinstance(value, (list, tuple)) else [value])
    return [_decode(bytes(b), f"{path}: overlay ROI #{i}") for i, b in enumerate(blobs)]


# --------------------------------------------------------------------------- classes


def _roi_label(roi: ImagejRoi, index: int | None = None) -> str:
    name = f"ROI {roi.name!r}" if roi.name else "unnamed ROI"
    return f"{name} (#{index})" if index is not None else name


def _normalize_color(color: str) -> str:
    c = color.strip().lower()
    if not c.startswith("#"):
        c = "#" + c
    if len(c) == 9:  # #aarrggbb
        c = "#" + c[3:]
    if not re.fullmatch(r"#[0-9a-f]{6}", c):
        raise ValueError(f"colour {color!r} is not '#rrggbb'")
    return c


def roi_class(
    roi: ImagejRoi,
    *,
    groups: Mapping[int, int] | None = None,
    names: Mapping[str, int] | None = None,
    colors: Mapping[str, int] | None = None,
) -> int | None:
    """Class index of an ROI (0 background, 1 foreground), or None.

    The first rule that matches decides:

    1. its ROI group (Edit > Selection > Properties), looked up in ``groups``
       (default :data:`DEFAULT_GROUPS`: group 1 foreground, group 2 background);
    2. its name, against the regexes in ``names`` (matched at the start of the
       name, case-insensitive; default :data:`DEFAULT_NAMES`: ``fg``, ``cell``,
       ``fore...``, ``nuc...`` foreground; ``bg``, ``back...`` background).
       ImageJ's automatic names (``0012-0034``) match nothing;
    3. its stroke colour, looked up in ``colors`` (``{'#ff0000': 1}``; alpha is
       ignored; default: no colour rule).

    Parameters
    ----------
    roi : roifile.ImagejRoi
    groups : mapping int -> int, optional
    names : mapping str -> int, optional
        Regex -> class, tried in order.
    colors : mapping str -> int, optional
        ``'#rrggbb'`` -> class.

    Returns
    -------
    k : int or None
    """
    groups = DEFAULT_GROUPS if groups is None else groups
    names = DEFAULT_NAMES if names is None else names
    if roi.group and roi.group in groups:
        return int(groups[roi.group])
    if roi.name:
        for pattern, k in names.items():
            if re.match(pattern, roi.name, flags=re.IGNORECASE):
                return int(k)
    if colors:
        hexcolor = roi.hexcolor(roi.stroke_color)
        if hexcolor is not None:
            table = {_normalize_color(c): k for c, k in colors.items()}
            if hexcolor.lower() in table:
                return int(table[hexcolor.lower()])
    return None


# --------------------------------------------------------------------------- rasterising


class _Canvas:
    """A boolean pixel grid with an origin, plus the clip rectangle ImageJ uses.

    ``clip`` is the (H, W) of the image ImageJ draws into (its drawDot edge
    rule depends on it); None means an unbounded image.
    """

    def __init__(self, shape, origin=(0, 0), clip=None):
        self.mask = np.zeros(shape, dtype=bool)
        self.oy, self.ox = origin
        self.clip = clip

    # ImageJ's clip rectangle (inclusive)
    def clip_box(self):
        if self.clip is None:
            return (-(2**30), -(2**30), 2**30, 2**30)
        h, w = self.clip
        return (0, 0, w - 1, h - 1)

    def put(self, xs, ys):
        xs = np.asarray(xs, dtype=np.int64) - self.ox
        ys = np.asarray(ys, dtype=np.int64) - self.oy
        h, w = self.mask.shape
        ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        self.mask[ys[ok], xs[ok]] = True

    def put_local(self, local: np.ndarray, x0: int, y0: int):
        """OR a boolean array whose [0, 0] is pixel (x0, y0)."""
        ys, xs = np.nonzero(local)
        self.put(xs + x0, ys + y0)


def _jround(v):
    """Java's Math.round for doubles (round half up)."""
    return np.floor(np.asarray(v, dtype=np.float64) + 0.5).astype(np.int64)


def _scanline_fill(loops) -> tuple[np.ndarray, int, int] | None:
    """ImageJ's PolygonFiller (1.53t) over closed loops, even-odd: (mask, x0, y0).

    Vertices lie on pixel corners. Row ``y`` is sampled at ``y + 0.5``; the
    edge crossings ``ex`` of a row are sorted and paired, and pixels
    ``floor(ex_a + 0.5) <= x < floor(ex_b + 0.5)`` are filled (``ex`` carries
    ImageJ's ``+1e-8``): a pixel centre exactly on a left edge is outside, on
    a right edge inside; an edge covers rows ``round(y1) .. round(y2) - 1``
    and its x advances by repeated ``+= slope``, as in Java.
    """
    rows_l, ex_l = [], []
    for lp in loops:
        lp = np.asarray(lp, dtype=np.float64)
        if len(lp) < 2:
            continue
        x1s, y1s = lp[:, 0], lp[:, 1]
        x2s, y2s = np.roll(x1s, -1), np.roll(y1s, -1)
        for x1, y1, x2, y2 in zip(x1s.tolist(), y1s.tolist(), x2s.tolist(), y2s.tolist()):
            r1 = math.floor(y1 + 0.5)  # Java Math.round
            r2 = math.floor(y2 + 0.5)
            if r1 == r2:
                continue
            if r1 > r2:
                r1, r2, x1, y1, x2, y2 = r2, r1, x2, y2, x1, y1
            slope = (x2 - x1) / (y2 - y1)
            ex0 = x1 + (r1 - y1 + 0.5) * slope + 1e-8
            k = r2 - r1
            if slope == 0.0:
                ex = np.full(k, ex0)
            else:
                steps = np.full(k, slope)
                steps[0] = ex0
                ex = np.cumsum(steps)
            rows_l.append(np.arange(r1, r2, dtype=np.int64))
            ex_l.append(ex)
    if not rows_l:
        return None
    rows = np.concatenate(rows_l)
    exs = np.concatenate(ex_l)
    order = np.lexsort((exs, rows))
    rows, exs = rows[order], exs[order]
    xs = np.floor(exs + 0.5).astype(np.int64)
    starts, ends, srow = xs[0::2], xs[1::2], rows[0::2]
    keep = ends > starts
    starts, ends, srow = starts[keep], ends[keep], srow[keep]
    if not len(srow):
        return None
    x0, y0 = int(starts.min()), int(srow.min())
    mask = np.zeros((int(srow.max()) - y0 + 1, int(ends.max()) - x0), dtype=bool)
    for r, a, b in zip((srow - y0).tolist(), (starts - x0).tolist(), (ends - x0).tolist()):
        mask[r, a:b] = True
    return mask, x0, y0


def _imagej_local_float(loops):
    """Vertices as ImageJ holds a sub-pixel area ROI: float32 offsets.

    ImageJ keeps float32 coordinates relative to the ROI's (double) base,
    the minimum coordinate. This rounding decides exact ties (a pixel centre
    on an edge), so it is reproduced: returns loops in absolute coordinates
    after the same float32 round trip.
    """
    allp = np.concatenate(loops)
    base = allp.min(axis=0)
    return [(lp - base).astype(np.float32).astype(np.float64) + base for lp in loops]


def _fill_polygon(canvas: _Canvas, xs, ys):
    _fill_evenodd(canvas, [np.stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)], 1)])


def _fill_evenodd(canvas: _Canvas, loops):
    res = _scanline_fill(loops)
    if res is not None:
        canvas.put_local(*res)


def _oval_local(x, y, w, h):
    """Oval inscribed in the rectangle (x, y, w, h): (local mask, x0, y0)."""
    x0 = int(math.floor(x)) - 1
    y0 = int(math.floor(y)) - 1
    lw = int(math.ceil(x + w)) - x0 + 2
    lh = int(math.ceil(y + h)) - y0 + 2
    local = np.zeros((lh, lw), dtype=bool)
    if w > 0 and h > 0:
        rr, cc = _sk_ellipse(y + h / 2 - 0.5 - y0, x + w / 2 - 0.5 - x0, h / 2, w / 2, shape=(lh, lw))
        local[rr, cc] = True
    return local, x0, y0


_DOT_MASKS: dict[int, np.ndarray] = {}


def _dot_mask(width: int) -> np.ndarray:
    """ImageJ's ``new OvalRoi(0, 0, w, w).getMask()``."""
    if width not in _DOT_MASKS:
        local, x0, y0 = _oval_local(0, 0, width, width)
        _DOT_MASKS[width] = local[-y0 : -y0 + width, -x0 : -x0 + width].copy()
    return _DOT_MASKS[width]


class _Pen:
    """ImageJ's ImageProcessor moveTo/lineTo/drawDot (1.53t) on a canvas."""

    def __init__(self, canvas: _Canvas, line_width: int):
        self.c = canvas
        self.lw = max(1, int(line_width))
        self.cx = 0
        self.cy = 0
        self.xs: list[np.ndarray] = []
        self.ys: list[np.ndarray] = []

    def move_to(self, x, y):
        self.cx, self.cy = int(x), int(y)

    def line_to(self, x2, y2):
        x2, y2 = int(x2), int(y2)
        cxmin, cymin, cxmax, cymax = self.c.clip_box()
        half = self.lw // 2
        xmin, xmax = cxmin - half - 1, cxmax + half + 1
        ymin, ymax = cymin - half - 1, cymax + half + 1
        dx, dy = x2 - self.cx, y2 - self.cy
        n = max(abs(dx), abs(dy))
        xinc = dx / n if dx != 0 else 0.0
        yinc = dy / n if dy != 0 else 0.0
        x, y = float(self.cx), float(self.cy)
        self.cx, self.cy = x2, y2
        i1 = 0
        if dx > 0:
            i1 = max(i1, int((xmin - x) / xinc))
        elif dx < 0:
            i1 = max(i1, int((xmax - x) / xinc))
        elif x < xmin or x > xmax:
            return
        if dy > 0:
            i1 = max(i1, int((ymin - y) / yinc))
        elif dy < 0:
            i1 = max(i1, int((ymax - y) / yinc))
        elif y < ymin or y > ymax:
            return
        i2 = n
        if dx > 0:
            i2 = min(i2, int((xmax - x) / xinc))
        elif dx < 0:
            i2 = min(i2, int((xmin - x) / xinc))
        if dy > 0:
            i2 = min(i2, int((ymax - y) / yinc))
        elif dy < 0:
            i2 = min(i2, int((ymin - y) / yinc))
        if i2 < i1:
            return
        k = i2 - i1 + 1
        x = x + i1 * xinc
        y = y + i1 * yinc
        sx = np.full(k, xinc)
        sy = np.full(k, yinc)
        sx[0], sy[0] = x, y
        px = _jround(np.cumsum(sx))  # sequential adds, as Java's x += xinc
        py = _jround(np.cumsum(sy))
        self._dots(px, py)

    def _dots(self, px, py):
        lw = self.lw
        if lw == 1:
            self.c.put(px, py)
        elif lw == 2:
            for ddx, ddy in ((0, 0), (-1, 0), (0, -1), (-1, -1)):
                self.c.put(px + ddx, py + ddy)
        else:
            cxmin, cymin, cxmax, cymax = self.c.clip_box()
            r = lw / 2.0
            xmins = np.trunc(px - r + 0.5).astype(np.int64)  # Java (int) truncates
            ymins = np.trunc(py - r + 0.5).astype(np.int64)
            dot = _dot_mask(lw)
            dys, dxs = np.nonzero(dot)
            r2 = r * r
            rr = r - 0.5
            gy, gx = np.mgrid[0:lw, 0:lw]
            edge_dot = (gx - rr) ** 2 + (gy - rr) ** 2 <= r2
            eys, exs = np.nonzero(edge_dot)
            for xm, ym in set(zip(xmins.tolist(), ymins.tolist())):
                if xm < cxmin or ym < cymin or xm + lw > cxmax or ym + lw > cymax:
                    self.c.put(exs + xm, eys + ym)
                else:
                    self.c.put(dxs + xm, dys + ym)


def _refuse(roi: ImagejRoi, what: str, fix: str, where: str | None):
    prefix = f"{where}: " if where else ""
    raise S2LError(f"{prefix}{_roi_label(roi)} is {what}; {fix}")


def _check_supported(roi: ImagejRoi, where: str | None = None) -> None:
    if roi.subtype == ROI_SUBTYPE.TEXT:
        _refuse(roi, "a text ROI", "delete it from the ROI Manager (text is not a scribble)", where)
    if roi.subtype == ROI_SUBTYPE.ARROW:
        _refuse(roi, "an arrow", "delete it, or redraw it with the straight/segmented line tool", where)
    if roi.subtype == ROI_SUBTYPE.IMAGE:
        _refuse(roi, "an image ROI", "delete it from the ROI Manager", where)
    if roi.roitype in (ROI_TYPE.ANGLE, ROI_TYPE.NOROI, ROI_TYPE.UNKNOWN):
        _refuse(roi, f"of unsupported type {roi.roitype.name.lower()}", "delete it or redraw it as a line or polygon", where)
    if roi.options & ROI_OPTIONS.SPLINE_FIT:
        _refuse(
            roi,
            "spline-fitted",
            "convert it with Edit > Selection > Interpolate (or undo Fit Spline) and save again",
            where,
        )
    if roi.roitype == ROI_TYPE.RECT and roi.rounded_rect_arc_size > 0 and not roi.composite:
        _refuse(roi, "a rounded rectangle", "set its corner diameter to 0 or convert it to a polygon", where)


def _float_coords(roi: ImagejRoi) -> np.ndarray:
    """Absolute (x, y) vertices as ImageJ holds them (float32 if sub-pixel)."""
    if roi.subpixel_coordinates is not None:
        return roi.subpixel_coordinates.astype(np.float64)
    if roi.integer_coordinates is None:
        return np.zeros((0, 2))
    return (roi.integer_coordinates + [roi.left, roi.top]).astype(np.float64)


def _imagej_float_points(roi: ImagejRoi, p: np.ndarray) -> np.ndarray:
    """Integer pixel of each vertex as ImageJ's drawPixels computes it.

    Sub-pixel PolygonRoi/PointRoi keep float32 offsets from their base (the
    minimum coordinate) and round ``base + offset``; the float32 step makes
    some exact .5 values round down, which is reproduced here.
    """
    if roi.subpixel_coordinates is None:
        return p.astype(np.int64)
    base = p.min(axis=0)
    rel = (p - base).astype(np.float32).astype(np.float64)
    return _jround(base + rel)


def _stroke(roi: ImagejRoi) -> float:
    w = roi.float_stroke_width if roi.float_stroke_width > 0 else float(roi.stroke_width)
    return w


def _draw(roi: ImagejRoi, canvas: _Canvas) -> None:
    t = roi.roitype
    if roi.composite:
        loops = [lp.astype(np.float64) for lp in roifile.ImagejRoi.path2coords(roi.multi_coordinates)]
        loops = [lp for lp in loops if len(lp)]
        if loops:
            _fill_evenodd(canvas, _imagej_local_float(loops))
    elif t == ROI_TYPE.RECT:
        if roi.subpixelrect:
            # ImageJ fills the integer bounds of a sub-pixel rectangle
            x0, y0 = math.floor(roi.xd), math.floor(roi.yd)
            x1, y1 = math.ceil(roi.xd + roi.widthd), math.ceil(roi.yd + roi.heightd)
        else:
            x0, y0, x1, y1 = roi.left, roi.top, roi.right, roi.bottom
        _fill_polygon(canvas, [x0, x1, x1, x0], [y0, y0, y1, y1])
    elif t == ROI_TYPE.OVAL:
        if roi.subpixelrect:
            x, y, w, h = roi.xd, roi.yd, roi.widthd, roi.heightd
        else:
            x, y, w, h = roi.left, roi.top, roi.right - roi.left, roi.bottom - roi.top
        local, x0, y0 = _oval_local(float(x), float(y), float(w), float(h))
        canvas.put_local(local, x0, y0)
    elif t in _AREA_TYPES:
        p = _float_coords(roi)
        if len(p) and roi.subpixel_coordinates is not None:
            p = _imagej_local_float([p])[0]
        _fill_polygon(canvas, p[:, 0], p[:, 1])
    elif t == ROI_TYPE.LINE:
        x1, y1, x2, y2 = (float(v) for v in (roi.x1, roi.y1, roi.x2, roi.y2))
        sw = _stroke(roi)
        if sw <= 1:
            pen = _Pen(canvas, 1)
            pen.move_to(_jround(x1), _jround(y1))
            pen.line_to(_jround(x2), _jround(y2))
        else:
            # Line.getFloatPolygon(strokeWidth), rounded like getPolygon()
            dx, dy = x2 - x1, y2 - y1
            length = math.hypot(dx, dy)
            if length == 0:
                return
            dx *= 0.5 / length
            dy *= 0.5 / length
            px = [x1 + 0.5 - dx + dy * sw, x1 + 0.5 - dx - dy * sw, x2 + 0.5 + dx - dy * sw, x2 + 0.5 + dx + dy * sw]
            py = [y1 + 0.5 - dy - dx * sw, y1 + 0.5 - dy + dx * sw, y2 + 0.5 + dy + dx * sw, y2 + 0.5 + dy - dx * sw]
            px = _jround(np.asarray(px, dtype=np.float32))
            py = _jround(np.asarray(py, dtype=np.float32))
            _fill_polygon(canvas, px, py)
    elif t in (ROI_TYPE.POLYLINE, ROI_TYPE.FREELINE):
        p = _float_coords(roi)
        if len(p) == 0:
            return
        pts = _imagej_float_points(roi, p)
        sw = _stroke(roi)
        pen = _Pen(canvas, int(math.floor(sw + 0.5)) if sw > 1 else 1)
        pen.move_to(*pts[0])
        for q in pts[1:]:
            pen.line_to(*q)
    elif t == ROI_TYPE.POINT:
        p = _float_coords(roi)
        if len(p):
            pts = _imagej_float_points(roi, p)
            canvas.put(pts[:, 0], pts[:, 1])
    else:  # pragma: no cover - _check_supported refuses the rest
        _refuse(roi, f"of unsupported type {t!r}", "delete it", None)


def _extent(roi: ImagejRoi) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): a box surely holding every pixel the ROI can set."""
    if roi.composite:
        pts = np.concatenate(roifile.ImagejRoi.path2coords(roi.multi_coordinates))
    elif roi.roitype == ROI_TYPE.LINE:
        pts = np.array([[roi.x1, roi.y1], [roi.x2, roi.y2]], dtype=np.float64)
    elif roi.roitype in (ROI_TYPE.RECT, ROI_TYPE.OVAL):
        if roi.subpixelrect:
            pts = np.array([[roi.xd, roi.yd], [roi.xd + roi.widthd, roi.yd + roi.heightd]])
        else:
            pts = np.array([[roi.left, roi.top], [roi.right, roi.bottom]], dtype=np.float64)
    else:
        pts = _float_coords(roi)
    if len(pts) == 0:
        return (0, 0, 0, 0)
    pad = int(math.ceil(max(_stroke(roi), 1.0))) + 2
    return (
        int(math.floor(pts[:, 0].min())) - pad,
        int(math.floor(pts[:, 1].min())) - pad,
        int(math.ceil(pts[:, 0].max())) + pad,
        int(math.ceil(pts[:, 1].max())) + pad,
    )


def rasterize_roi(roi: ImagejRoi, shape: tuple[int, int]) -> np.ndarray:
    """The pixels ImageJ 1 marks for an ROI, clipped to an image.

    Area ROIs are filled, line ROIs drawn at their stroke width, points mark
    one pixel each; see the module docstring for the exact rules.

    Parameters
    ----------
    roi : roifile.ImagejRoi
    shape : (H, W) tuple of int
        The image size.

    Returns
    -------
    mask : (H, W) bool ndarray

    Raises
    ------
    S2LError
        Text, arrow or image ROIs, angles, spline-fitted ROIs and rounded
        rectangles (delete or convert them in ImageJ).
    """
    _check_supported(roi)
    h, w = (int(s) for s in shape[:2])
    canvas = _Canvas((h, w), (0, 0), clip=(h, w))
    _draw(roi, canvas)
    return canvas.mask


def _outside_pixels(roi: ImagejRoi, shape: tuple[int, int]) -> tuple[int, int]:
    """(pixels inside the image, pixels outside) of an ROI drawn unclipped."""
    x0, y0, x1, y1 = _extent(roi)
    canvas = _Canvas((y1 - y0 + 1, x1 - x0 + 1), (y0, x0), clip=None)
    _draw(roi, canvas)
    ys, xs = np.nonzero(canvas.mask)
    xs = xs + x0
    ys = ys + y0
    inside = (xs >= 0) & (xs < shape[1]) & (ys >= 0) & (ys < shape[0])
    return int(inside.sum()), int((~inside).sum())


# --------------------------------------------------------------------------- ROIs -> scribbles


def rois_to_scribbles(
    rois: Sequence[ImagejRoi],
    shape: tuple[int, int],
    *,
    groups: Mapping[int, int] | None = None,
    names: Mapping[str, int] | None = None,
    colors: Mapping[str, int] | None = None,
    skip_unclassified: bool = False,
    source: str | os.PathLike | None = None,
) -> np.ndarray:
    """Rasterise classified ROIs into a scribble mask.

    Each ROI gets its class from :func:`roi_class` and marks the pixels of
    :func:`rasterize_roi` with the code ``class + 1`` (1 background,
    2 foreground).

    **Overlap rule: the later ROI wins**, in list order (the ROI Manager's
    order), as if each ROI were painted with Edit > Fill in turn. Where ROIs of
    different classes overlap, an :class:`S2LWarning` says how many pixels and
    which ROIs, since a pixel that is both background and foreground is
    probably a slip of the brush.

    Parameters
    ----------
    rois : sequence of roifile.ImagejRoi
    shape : (H, W) tuple of int
    groups, names, colors : mapping, optional
        Passed to :func:`roi_class`.
    skip_unclassified : bool
        Skip (with a warning) ROIs without a class instead of refusing them.
    source : str or path-like, optional
        File name used in messages.

    Returns
    -------
    mask : (H, W) uint8 ndarray
        0 unlabeled, 1 background, 2 foreground.

    Raises
    ------
    S2LError
        An ROI without a class (unless ``skip_unclassified``), or an ROI type
        that cannot be a scribble (text, arrow, ...).

    Warns
    -----
    S2LWarning
        An ROI partly outside the image (clipped), entirely outside (skipped),
        skipped unclassified ROIs, and overlaps between classes.
    """
    where = os.fspath(source) if source is not None else "ROIs"
    h, w = (int(s) for s in shape[:2])
    out = np.zeros((h, w), dtype=np.uint8)
    owner = np.full((h, w), -1, dtype=np.int64)
    conflicts: dict[tuple[int, int], int] = {}
    for i, roi in enumerate(rois):
        label = _roi_label(roi, i)
        k = roi_class(roi, groups=groups, names=names, colors=colors)
        if k is None:
            msg = (
                f"{where}: {label} has no class; set its group (Edit > Selection > Properties: "
                "group 1 foreground, group 2 background) or name it 'fg...'/'bg...'"
            )
            if skip_unclassified:
                warnings.warn(msg.split(";")[0] + "; skipped", S2LWarning, stacklevel=2)
                continue
            raise S2LError(msg)
        code = class_to_code(k)
        _check_supported(roi, where)
        inside, outside = _outside_pixels(roi, (h, w))
        if inside == 0:
            warnings.warn(f"{where}: {label} lies entirely outside the {w}x{h} image; skipped", S2LWarning, stacklevel=2)
            continue
        if outside:
            warnings.warn(
                f"{where}: {label} lies partly outside the {w}x{h} image ({outside} pixels); clipped",
                S2LWarning,
                stacklevel=2,
            )
        m = rasterize_roi(roi, (h, w))
        prev = out[m]
        clash = (prev != 0) & (prev != code)
        if clash.any():
            others = owner[m][clash]
            for j in np.unique(others).tolist():
                conflicts[(int(j), i)] = int((others == j).sum())
        out[m] = code
        owner[m] = i
    if conflicts:
        parts = ", ".join(
            f"{_roi_label(rois[j], j)} and {_roi_label(rois[i], i)}: {n} px" for (j, i), n in conflicts.items()
        )
        warnings.warn(
            f"{where}: ROIs of different classes overlap ({parts}); the later ROI wins there",
            S2LWarning,
            stacklevel=2,
        )
    return out


# --------------------------------------------------------------------------- masks -> ROIs


def _trace_loops(mask: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops of a pixel set, on the pixel-corner grid.

    Every crack between a set pixel and an unset one is a directed edge
    (set pixels on the same side of every edge); edges are linked into loops,
    turning so that pixels touching only at a corner stay apart. Collinear
    vertices are dropped. Filling all loops with the even-odd (or non-zero)
    rule gives back exactly ``mask``.

    Returns
    -------
    loops : list of (N, 2) int64 ndarray
        (x, y) corner coordinates, not repeating the first vertex.
    """
    m = np.pad(mask.astype(bool), 1)
    # edges as (x0, y0, x1, y1) in the padded frame; pixel (r, c) has corners c..c+1, r..r+1
    edges = []
    r, c = np.nonzero(m[1:-1, 1:-1] & ~m[:-2, 1:-1])  # top edge: right -> left
    r, c = r + 1, c + 1
    edges.append(np.stack([c + 1, r, c, r], 1))
    r, c = np.nonzero(m[1:-1, 1:-1] & ~m[2:, 1:-1])  # bottom edge: left -> right
    r, c = r + 1, c + 1
    edges.append(np.stack([c, r + 1, c + 1, r + 1], 1))
    r, c = np.nonzero(m[1:-1, 1:-1] & ~m[1:-1, :-2])  # left edge: top -> bottom
    r, c = r + 1, c + 1
    edges.append(np.stack([c, r, c, r + 1], 1))
    r, c = np.nonzero(m[1:-1, 1:-1] & ~m[1:-1, 2:])  # right edge: bottom -> top
    r, c = r + 1, c + 1
    edges.append(np.stack([c + 1, r + 1, c + 1, r], 1))
    e = np.concatenate(edges).tolist()
    out_edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for x0, y0, x1, y1 in e:
        out_edges.setdefault((x0, y0), []).append((x1, y1))
    loops = []
    while out_edges:
        start = next(iter(out_edges))
        cur, prev_dir, pts = start, None, []
        while True:
            pts.append(cur)
            cands = out_edges[cur]
            nxt = cands[0]
            if prev_dir is not None and len(cands) > 1:
                # prefer a left turn (dx, dy) -> (dy, -dx): keeps corner-touching pixels apart
                left = (cur[0] + prev_dir[1], cur[1] - prev_dir[0])
                if left in cands:
                    nxt = left
            cands.remove(nxt)
            if not cands:
                del out_edges[cur]
            prev_dir = (nxt[0] - cur[0], nxt[1] - cur[1])
            cur = nxt
            if cur == start:
                break
        loop = np.asarray(pts, dtype=np.int64) - 1  # undo padding
        loops.append(_drop_collinear(loop))
    return loops


def _drop_collinear(loop: np.ndarray) -> np.ndarray:
    prev = np.roll(loop, 1, axis=0)
    nxt = np.roll(loop, -1, axis=0)
    d1 = loop - prev
    d2 = nxt - loop
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    return loop[cross != 0]


def _roi_from_loops(loops: list[np.ndarray], name: str, group: int = 0) -> ImagejRoi:
    allp = np.concatenate(loops)
    if allp.min() < -5000 or allp.max() > _MAX_INT_COORD:
        raise S2LError(f"{name}: coordinates beyond ImageJ's 16-bit ROI range; crop the image")
    x0, y0 = (int(v) for v in allp.min(axis=0))
    x1, y1 = (int(v) for v in allp.max(axis=0))
    roi = ImagejRoi()
    roi.version = 228
    roi.name = name
    roi.group = int(group)
    roi.position = 0
    roi.left, roi.top, roi.right, roi.bottom = x0, y0, x1, y1
    if len(loops) == 1:
        roi.roitype = ROI_TYPE.TRACED
        coords = (loops[0] - [x0, y0]).astype(np.int32)
        roi.integer_coordinates = coords
        roi.n_coordinates = len(coords)
    else:
        roi.roitype = ROI_TYPE.RECT
        path = []
        for lp in loops:
            path += [0.0, float(lp[0, 0]), float(lp[0, 1])]
            for x, y in lp[1:].tolist():
                path += [1.0, float(x), float(y)]
            path.append(4.0)
        roi.multi_coordinates = np.asarray(path, dtype=np.float32)
        roi.shape_roi_size = len(path)
    return roi


def _write_roiset(rois: Iterable[ImagejRoi], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for roi in rois:
                zf.writestr(roi.name + ".roi", roi.tobytes())


def labels_to_roiset(labels: np.ndarray, path: str | os.PathLike, *, name_prefix: str = "cell") -> int:
    """Write an instance label image as an ImageJ RoiSet.zip, one ROI per object.

    Each object's outline is traced on the pixel-corner grid: one simply
    connected piece becomes a traced polygon ROI, an object with holes or
    several pieces a composite ROI. ImageJ fills every ROI back to exactly the
    object's pixels.

    Parameters
    ----------
    labels : (H, W) int ndarray
        0 background, 1.. objects (numbers need not be consecutive).
    path : path-like
        Output ``.zip``, written atomically.
    name_prefix : str
        ROIs are named ``<prefix>-<label>`` (label zero-padded to 4 digits).

    Returns
    -------
    n : int
        Number of ROIs written.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise S2LError(f"{path}: labels must be a 2-D integer image, got {labels.dtype} {labels.shape}")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise S2LError(f"{path}: negative labels; use 0 for background and 1.. for objects")
    from scipy import ndimage

    rois = []
    objects = ndimage.find_objects(labels.astype(np.int64)) if labels.size else []
    for lab, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        sub = labels[sl] == lab
        loops = _trace_loops(sub)
        loops = [lp + [sl[1].start, sl[0].start] for lp in loops]
        rois.append(_roi_from_loops(loops, f"{name_prefix}-{lab:04d}"))
    _write_roiset(rois, path)
    return len(rois)


def scribbles_to_roiset(mask: np.ndarray, path: str | os.PathLike, *, line_as: str = "polygon") -> int:
    """Write a scribble mask as an ImageJ RoiSet.zip, grouped by class.

    Every 4-connected piece of background (value 1) becomes an ROI named
    ``bg-0001``... in group 2, every piece of foreground (value 2) one named
    ``fg-0001``... in group 1 (the groups :func:`roi_class` reads by default).
    Pieces are traced polygons (composite ROIs when they have holes), so
    ``rois_to_scribbles(read_rois(path), mask.shape)`` and ImageJ's own Fill
    give back exactly ``mask``.

    Parameters
    ----------
    mask : (H, W) uint8 ndarray
        0 unlabeled, 1 background, 2 foreground.
    path : path-like
        Output ``.zip``, written atomically.
    line_as : {'polygon'}
        How strokes are written; only ``'polygon'`` (exact outlines) so far.

    Returns
    -------
    n : int
        Number of ROIs written.
    """
    if line_as != "polygon":
        raise ValueError(f"line_as={line_as!r}: only 'polygon' is supported")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise S2LError(f"{path}: a scribble mask must be 2-D (H, W), got shape {mask.shape}")
    bad = np.setdiff1d(np.unique(mask), [0, 1, 2])
    if bad.size:
        raise S2LError(
            f"{path}: scribble mask has values {bad.tolist()[:5]}; use 0 unlabeled, 1 background, 2 foreground"
        )
    from skimage.measure import label as cc_label

    rois = []
    for code, prefix, group in ((1, "bg", 2), (2, "fg", 1)):
        comp = cc_label(mask == code, connectivity=1)
        from scipy import ndimage

        for n, sl in enumerate(ndimage.find_objects(comp), start=1):
            if sl is None:
                continue
            sub = comp[sl] == n
            loops = [lp + [sl[1].start, sl[0].start] for lp in _trace_loops(sub)]
            rois.append(_roi_from_loops(loops, f"{prefix}-{n:04d}", group=group))
    _write_roiset(rois, path)
    return len(rois)

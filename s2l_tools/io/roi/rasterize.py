"""Rasterising one ImageJ ROI pixel for pixel as ImageJ 1 (1.53t) does.

So that a scribble drawn in Fiji covers the same pixels here. What "the mask
ImageJ makes" means, per ROI type (checked against real ImageJ 1.53t by
``tests/test_roi.py``):

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

A sub-pixel oval is filled as ImageJ fills it: the oval of its integer bounds
(``(int) x``, ``(int) y``, ``ceil(w)``, ``ceil(h)``, ``OvalRoi.getMask``), not
the sub-pixel ellipse. Work and memory are bounded by the image: an ROI with
huge coordinates is clipped before it is drawn.

Text, arrow and image ROIs, angles, spline-fitted and rounded-rectangle ROIs
are refused (:class:`~s2l_tools.errors.S2LError`) rather than guessed.
"""

from __future__ import annotations

import math

import numpy as np
import roifile
from roifile import ROI_OPTIONS, ROI_SUBTYPE, ROI_TYPE, ImagejRoi
from skimage.draw import ellipse as _sk_ellipse

from s2l_tools.errors import S2LError
from s2l_tools.io.roi.files import roi_label

__all__ = ["check_supported", "count_inside_outside", "rasterize_roi"]

_AREA_TYPES = (ROI_TYPE.POLYGON, ROI_TYPE.FREEHAND, ROI_TYPE.TRACED)
#: coordinates beyond this are a damaged file (ImageJ's images have int sizes)
MAX_COORDINATE = 2**31
#: the widest polyline/freeline stroke drawn (each point stamps a width x width dot)
MAX_STROKE_WIDTH = 1000
#: how far outside the image :func:`count_inside_outside` counts pixels exactly
OUTSIDE_MARGIN = 256


class _Canvas:
    """A boolean pixel grid with an origin, plus the clip rectangle ImageJ uses.

    ``clip`` is the (H, W) of the image ImageJ draws into (its drawDot edge
    rule depends on it); None means an unbounded image.
    """

    def __init__(self, shape, origin=(0, 0), clip=None):
        self.mask = np.zeros(shape, dtype=bool)
        self.oy, self.ox = origin
        self.clip = clip

    def window(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the pixels this canvas holds (inclusive); work stops there."""
        h, w = self.mask.shape
        return (self.ox, self.oy, self.ox + w - 1, self.oy + h - 1)

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


#: rows of an edge skipped by exact sequential adds (beyond: one multiply-add)
_MAX_SKIP = 1 << 20


def _scanline_fill(loops, window=None) -> tuple[np.ndarray, int, int] | None:
    """ImageJ's PolygonFiller (1.53t) over closed loops, even-odd: (mask, x0, y0).

    Vertices lie on pixel corners. Row ``y`` is sampled at ``y + 0.5``; the
    edge crossings ``ex`` of a row are sorted and paired, and pixels
    ``floor(ex_a + 0.5) <= x < floor(ex_b + 0.5)`` are filled (``ex`` carries
    ImageJ's ``+1e-8``): a pixel centre exactly on a left edge is outside, on
    a right edge inside; an edge covers rows ``round(y1) .. round(y2) - 1``
    and its x advances by repeated ``+= slope``, as in Java.

    ``window`` ``(x0, y0, x1, y1)`` (inclusive pixels) bounds the work and the
    result: rows and spans outside it are never made, so time and memory
    follow the window, not the polygon's extent.
    """
    wy0, wy1 = (window[1], window[3]) if window is not None else (-(1 << 62), 1 << 62)
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
            lo, hi = max(r1, wy0), min(r2, wy1 + 1)  # the rows inside the window
            if hi <= lo:
                continue
            skip, k = lo - r1, hi - lo
            if slope == 0.0:
                ex = np.full(k, ex0)
            elif skip <= _MAX_SKIP:
                steps = np.full(skip + k, slope)
                steps[0] = ex0
                ex = np.cumsum(steps)[skip:]
            else:  # far outside the window: Java's sum, up to rounding
                steps = np.full(k, slope)
                steps[0] = ex0 + skip * slope
                ex = np.cumsum(steps)
            rows_l.append(np.arange(lo, hi, dtype=np.int64))
            ex_l.append(ex)
    if not rows_l:
        return None
    rows = np.concatenate(rows_l)
    exs = np.concatenate(ex_l)
    order = np.lexsort((exs, rows))
    rows, exs = rows[order], exs[order]
    xs = np.floor(exs + 0.5)
    if window is not None:  # spans clipped to the window (one pixel beyond, for the ends)
        xs = np.clip(xs, window[0], window[2] + 1)
    xs = xs.astype(np.int64)
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
    res = _scanline_fill(loops, canvas.window())
    if res is not None:
        canvas.put_local(*res)


def _oval_local(x, y, w, h, window=None):
    """Oval inscribed in the rectangle (x, y, w, h): (local mask, x0, y0).

    ``window`` ``(x0, y0, x1, y1)`` (inclusive pixels) bounds the local mask.
    """
    x0 = int(math.floor(x)) - 1
    y0 = int(math.floor(y)) - 1
    lw = int(math.ceil(x + w)) - x0 + 2
    lh = int(math.ceil(y + h)) - y0 + 2
    if window is not None and (x0 < window[0] or y0 < window[1] or x0 + lw - 1 > window[2]
                               or y0 + lh - 1 > window[3]):
        cx0, cy0 = max(x0, window[0]), max(y0, window[1])
        lw = max(0, min(x0 + lw - 1, window[2]) - cx0 + 1)
        lh = max(0, min(y0 + lh - 1, window[3]) - cy0 + 1)
        x0, y0 = cx0, cy0
    local = np.zeros((lh, lw), dtype=bool)
    if w > 0 and h > 0 and lw > 0 and lh > 0:
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
        # no further than the canvas holds (the same as ImageJ's clip when drawing an image)
        wx0, wy0, wx1, wy1 = self.c.window()
        cxmin, cymin, cxmax, cymax = (max(cxmin, wx0), max(cymin, wy0), min(cxmax, wx1),
                                      min(cymax, wy1))
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
    raise S2LError(f"{prefix}{roi_label(roi)} is {what}; {fix}")


def check_supported(roi: ImagejRoi, where: str | None = None) -> None:
    """Refuse an ROI that cannot be a scribble.

    Parameters
    ----------
    roi : roifile.ImagejRoi
    where : str, optional
        File name that starts the message.

    Raises
    ------
    S2LError
        Text, arrow or image ROIs, angles, spline-fitted ROIs and rounded
        rectangles, saying how to fix them in ImageJ.
    """
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
    damaged = "delete it and draw it again (the ROI file is damaged)"
    sw = _stroke(roi)
    if not math.isfinite(sw) or sw < 0:
        _refuse(roi, f"drawn with a line width of {sw:g}", damaged, where)
    if roi.roitype in (ROI_TYPE.POLYLINE, ROI_TYPE.FREELINE) and sw > MAX_STROKE_WIDTH:
        _refuse(roi, f"drawn with a line width of {sw:g} pixels (at most {MAX_STROKE_WIDTH})",
                "set a smaller width (Edit > Selection > Properties) or convert it to an area",
                where)
    try:
        pts = _points(roi)
    except (ValueError, TypeError, IndexError) as exc:  # roifile on a damaged composite
        _refuse(roi, f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})",
                damaged, where)
    if not np.isfinite(pts).all():
        _refuse(roi, "at coordinates that are not numbers (NaN or infinite)", damaged, where)
    if len(pts) and np.abs(pts).max() > MAX_COORDINATE:
        _refuse(roi, f"at coordinates beyond +-{MAX_COORDINATE} pixels", damaged, where)


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
            # ImageJ 1.53t fills a sub-pixel oval by its integer mask (OvalRoi.getMask): the
            # oval of the bounds Roi(double...) keeps, (int) x, (int) y, ceil(w), ceil(h)
            x, y = math.trunc(float(roi.xd)), math.trunc(float(roi.yd))
            w, h = math.ceil(float(roi.widthd)), math.ceil(float(roi.heightd))
        else:
            x, y, w, h = roi.left, roi.top, roi.right - roi.left, roi.bottom - roi.top
        local, x0, y0 = _oval_local(float(x), float(y), float(w), float(h), canvas.window())
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
    else:  # pragma: no cover - check_supported refuses the rest
        _refuse(roi, f"of unsupported type {t!r}", "delete it", None)


def _points(roi: ImagejRoi) -> np.ndarray:
    """(N, 2) float64: the coordinates that bound an ROI (NaN/inf as they are)."""
    with np.errstate(all="ignore"):
        return _points_unchecked(roi)


def _points_unchecked(roi: ImagejRoi) -> np.ndarray:
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
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _extent(roi: ImagejRoi) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): a box surely holding every pixel the ROI can set."""
    pts = _points(roi)
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
    check_supported(roi)
    h, w = (int(s) for s in shape[:2])
    canvas = _Canvas((h, w), (0, 0), clip=(h, w))
    _draw(roi, canvas)
    return canvas.mask


def count_inside_outside(roi: ImagejRoi, shape: tuple[int, int]) -> tuple[int, int]:
    """Pixels of an ROI (drawn unclipped) inside and outside an image.

    Parameters
    ----------
    roi : roifile.ImagejRoi
    shape : (H, W) tuple of int

    Returns
    -------
    (inside, outside) : tuple of int
        ``outside`` counts the pixels up to :data:`OUTSIDE_MARGIN` beyond the
        image's edges (time and memory follow the image, not the ROI).
    """
    x0, y0, x1, y1 = _extent(roi)
    m = OUTSIDE_MARGIN
    x0, y0 = max(x0, -m), max(y0, -m)
    x1, y1 = min(x1, int(shape[1]) - 1 + m), min(y1, int(shape[0]) - 1 + m)
    if x1 < x0 or y1 < y0:
        return 0, 1  # entirely outside, beyond the margin
    canvas = _Canvas((y1 - y0 + 1, x1 - x0 + 1), (y0, x0), clip=None)
    _draw(roi, canvas)
    ys, xs = np.nonzero(canvas.mask)
    xs = xs + x0
    ys = ys + y0
    inside = (xs >= 0) & (xs < shape[1]) & (ys >= 0) & (ys < shape[0])
    return int(inside.sum()), int((~inside).sum())


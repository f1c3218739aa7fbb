"""Synthetic fluorescence-nuclei images and Fiji-style scribbles for the demo.

Everything ``make demo`` needs is generated here, deterministically from a
seed, without downloads:

* :func:`make_nuclei_image` -- a 16-bit camera image of nuclei (ellipses with
  irregular outlines, touching clusters, texture, blur, uneven illumination,
  Poisson + Gaussian noise, camera offset) and its exact instance labels.
* :func:`scribble_rois` -- the ROIs a biologist would draw in Fiji on such an
  image: short freehand/segmented-line strokes inside some cells (group 1,
  ``fg-NNN``) and across the background (group 2, ``bg-NNN``), plus one
  background polygon and one traced cell.
* :func:`make_demo_dataset` -- a ``train/`` + ``val/`` dataset in the
  project's layout (images, RoiSet.zip files, label masks for scoring).

Coordinates follow ImageJ: line ROIs have their vertices on pixel centres
(integer ``x, y`` = column, row), area ROIs on pixel corners.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import roifile
from scipy import ndimage as ndi

from s2l_tools.errors import S2LError
from s2l_tools.io.images import write_tiff
from s2l_tools.io.roi import write_roiset
from s2l_tools.labels import GROUP_BACKGROUND, GROUP_FOREGROUND

__all__ = ["make_nuclei_image", "scribble_rois", "make_demo_dataset"]

#: ARGB stroke colours (roifile stores big-endian ARGB bytes)
FOREGROUND_COLOR = b"\xff\xff\xff\x00"  # yellow
BACKGROUND_COLOR = b"\xff\x00\xff\xff"  # cyan
#: RoiEncoder version written by ImageJ 1.53t
_ROI_VERSION = 228


# --------------------------------------------------------------------------
# image
# --------------------------------------------------------------------------


def _cell_params(rng: np.random.Generator) -> dict:
    """Random shape of one nucleus: semi-axes, angle, outline harmonics."""
    a = rng.uniform(6.5, 17.0)
    ecc = rng.uniform(0.0, 0.8)
    b = max(5.5, a * np.sqrt(1.0 - ecc**2))
    k = np.arange(2, 6)
    return {
        "a": a,
        "b": b,
        "phi": rng.uniform(0, np.pi),
        "k": k,
        "amp": rng.uniform(0.0, 0.06, size=k.size) / np.sqrt(k - 1),
        "phase": rng.uniform(0, 2 * np.pi, size=k.size),
        "brightness": float(np.clip(rng.lognormal(0.0, 0.3), 0.35, 2.5)),
    }


def _rho(p: dict, cy: float, cx: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Normalised radius of the grid points in cell ``p`` centred at (cy, cx): <= 1 inside."""
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(p["phi"]), np.sin(p["phi"])
    u = dx * c + dy * s
    v = -dx * s + dy * c
    theta = np.arctan2(v, u)
    a, b = p["a"], p["b"]
    radius = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    wobble = 1.0 + np.sum(
        p["amp"][:, None] * np.cos(p["k"][:, None] * theta.ravel() + p["phase"][:, None]), axis=0
    ).reshape(theta.shape)
    return np.hypot(u, v) / (radius * wobble)


def _radius_along(p: dict, angle: float) -> float:
    """Ellipse radius of cell ``p`` in image direction ``angle`` (no wobble)."""
    t = angle - p["phi"]
    a, b = p["a"], p["b"]
    return float(a * b / np.hypot(b * np.cos(t), a * np.sin(t)))


def _render_cluster(members, centres, shape):
    """Rasterise a cluster: (y0, x0, labels_local, rho_local) or None if it leaves the image.

    Overlapping cells are split by a power diagram (straight boundaries placed
    according to cell size), so every cell keeps a distinct, connected label.
    """
    H, W = shape
    reach = max(p["a"] for p in members) * 1.3 + 1
    ys = [c[0] for c in centres]
    xs = [c[1] for c in centres]
    y0, y1 = int(np.floor(min(ys) - reach)), int(np.ceil(max(ys) + reach)) + 1
    x0, x1 = int(np.floor(min(xs) - reach)), int(np.ceil(max(xs) + reach)) + 1
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    best = np.full(yy.shape, np.inf)
    lab = np.zeros(yy.shape, np.int32)
    rho = np.ones(yy.shape)
    for j, (p, (cy, cx)) in enumerate(zip(members, centres), start=1):
        r = _rho(p, cy, cx, yy, xx)
        power = (yy - cy) ** 2 + (xx - cx) ** 2 - (0.5 * (p["a"] + p["b"])) ** 2
        take = (r <= 1.0) & (power < best)
        best[take] = power[take]
        lab[take] = j
        rho[take] = r[take]
    # keep each cell's largest piece (irregular outlines can leave slivers)
    for j in range(1, len(members) + 1):
        pieces, n = ndi.label(lab == j)
        if n > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            lab[(pieces > 0) & (pieces != 1 + int(np.argmax(sizes)))] = 0
    full = [(lab == j).sum() for j in range(1, len(members) + 1)]
    # crop to the image; reject clusters mostly outside it or with a lost cell
    cy0, cx0 = max(y0, 0), max(x0, 0)
    cy1, cx1 = min(y1, H), min(x1, W)
    if cy1 <= cy0 or cx1 <= cx0:
        return None
    crop = np.s_[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    lab, rho = lab[crop], rho[crop]
    for j, (p, n_full) in enumerate(zip(members, full), start=1):
        # no cell may be squeezed to a sliver by its neighbours or the image edge
        if n_full < 0.55 * np.pi * p["a"] * p["b"] or (lab == j).sum() < 0.6 * n_full:
            return None
    return cy0, cx0, lab, rho


def make_nuclei_image(
    *,
    shape: tuple[int, int] = (256, 256),
    n_cells: tuple[int, int] = (15, 40),
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic widefield image of fluorescent nuclei and its instance labels.

    Parameters
    ----------
    shape : (H, W) tuple of int
        Image size; at least 32 x 32.
    n_cells : (low, high) tuple of int
        Range (inclusive) of the number of nuclei to place. Fewer are placed
        when the image runs out of room.
    rng : numpy.random.Generator
        Source of all randomness (the result is a function of its state).

    Returns
    -------
    image : (H, W) uint16 ndarray
        Camera image: blurred, textured nuclei of varied brightness on an
        unevenly lit background, Poisson + read noise, offset ~100 ADU.
    labels : (H, W) int32 ndarray
        Exact instance masks, 0 = background, 1..N = nuclei. About a third of
        the nuclei sit in touching clusters of 2-3 (4-adjacent distinct labels).

    Notes
    -----
    Each nucleus is an ellipse (semi-axes ~5.5-17 px, eccentricity 0-0.8,
    random angle) whose radius is modulated by harmonics 2-5 of a few per cent.
    Clusters overlap their ellipses and split them by a power diagram. The
    signal is ``brightness * (1 - 0.25 rho^2) * (1 + texture)``, darker along
    shared borders, blurred by a Gaussian PSF (sigma 1-1.5), multiplied by a
    smooth illumination field (linear gradient + vignetting) and added to an
    autofluorescence background before photon and read noise.
    """
    H, W = (int(s) for s in shape)
    if H < 32 or W < 32:
        raise S2LError(f"make_nuclei_image: shape {shape} is too small; use at least (32, 32)")
    lo, hi = (int(n) for n in n_cells)
    if not 1 <= lo <= hi:
        raise S2LError(f"make_nuclei_image: n_cells {n_cells} must satisfy 1 <= low <= high")
    target = int(rng.integers(lo, hi + 1))

    labels = np.zeros((H, W), np.int32)
    rho = np.ones((H, W))
    brightness = [0.0]
    n_clusters = 0
    failures = 0
    while len(brightness) - 1 < target and failures < 60:
        left = target - (len(brightness) - 1)
        if n_clusters < 3 and left >= 2:
            size = 3 if (n_clusters == 1 and left >= 3) else 2
        else:
            size = int(rng.choice([1, 2, 3], p=[0.7, 0.22, 0.08]))
        size = min(size, left)
        members = [_cell_params(rng) for _ in range(size)]
        centres = [(rng.uniform(0, H), rng.uniform(0, W))]
        for j in range(1, size):
            # next to a random earlier member, overlapping it by 15-35 %
            i = int(rng.integers(j))
            angle = rng.uniform(0, 2 * np.pi)
            gap = (_radius_along(members[i], angle) + _radius_along(members[j], angle + np.pi)) * (
                rng.uniform(0.65, 0.85)
            )
            centres.append((centres[i][0] + gap * np.sin(angle), centres[i][1] + gap * np.cos(angle)))
        out = _render_cluster(members, centres, (H, W))
        if out is None:
            failures += 1
            continue
        y0, x0, lab, r = out
        win = np.s_[y0 : y0 + lab.shape[0], x0 : x0 + lab.shape[1]]
        # isolated clusters keep >= 3 px of background between them
        busy = ndi.binary_dilation(labels[win] > 0, iterations=3)
        if np.any(busy & (lab > 0)):
            failures += 1
            continue
        base = len(brightness) - 1
        sel = lab > 0
        labels[win][sel] = lab[sel] + base
        rho[win][sel] = r[sel]
        # cells of a cluster have related but distinct brightness
        for p in members:
            brightness.append(p["brightness"])
        if size > 1:
            n_clusters += 1

    # ---- signal ------------------------------------------------------------
    bright = np.asarray(brightness)[labels]
    texture = ndi.gaussian_filter(rng.standard_normal((H, W)), rng.uniform(1.0, 1.6))
    texture /= texture.std() + 1e-12
    blobs = ndi.gaussian_filter(rng.standard_normal((H, W)), 3.0)
    blobs /= blobs.std() + 1e-12
    signal = bright * (1.0 - 0.25 * np.minimum(rho, 1.0) ** 2)
    signal *= np.clip(1.0 + 0.12 * texture + 0.08 * blobs, 0.3, None)
    # dimmer seams where two nuclei press on each other
    seam = np.zeros((H, W), bool)
    for a, b in ((labels[1:, :], labels[:-1, :]), (labels[:, 1:], labels[:, :-1])):
        touch = (a != b) & (a > 0) & (b > 0)
        if a.shape[0] < H:
            seam[1:, :] |= touch
            seam[:-1, :] |= touch
        else:
            seam[:, 1:] |= touch
            seam[:, :-1] |= touch
    signal[seam] *= rng.uniform(0.6, 0.8)
    signal[labels == 0] = 0.0
    signal = ndi.gaussian_filter(signal, rng.uniform(1.0, 1.5))

    # ---- optics and camera ---------------------------------------------------
    yy, xx = np.mgrid[0:H, 0:W]
    yy = yy / (H - 1) * 2 - 1
    xx = xx / (W - 1) * 2 - 1
    angle = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(0.2, 0.35)
    vy, vx = rng.uniform(-0.4, 0.4, size=2)
    illum = (
        1.0
        + slope * (np.cos(angle) * xx + np.sin(angle) * yy)
        - rng.uniform(0.1, 0.25) * ((xx - vx) ** 2 + (yy - vy) ** 2) / 2
    )
    illum = np.clip(illum, 0.25, None)
    peak = rng.uniform(500, 1500)  # photo-electrons at a nucleus of brightness 1
    haze = ndi.gaussian_filter(rng.standard_normal((H, W)), 16.0)
    autofluor = rng.uniform(40, 100) * (1.0 + 0.08 * haze / (haze.std() + 1e-12))
    electrons = rng.poisson(np.clip(illum * (peak * signal + autofluor), 0, None))
    gain = rng.uniform(0.8, 1.5)  # ADU per electron
    adu = 100.0 + gain * electrons + rng.normal(0.0, rng.uniform(2.0, 5.0), size=(H, W))
    image = np.clip(np.rint(adu), 0, 65535).astype(np.uint16)
    return image, labels


# --------------------------------------------------------------------------
# scribbles
# --------------------------------------------------------------------------


def _line_pixels(points: np.ndarray) -> np.ndarray:
    """(N, 2) int (x, y) pixels ImageJ draws for the polyline ``points`` (pixel centres).

    A DDA with ``max(|dx|, |dy|)`` steps and Java rounding ``floor(v + 0.5)``.
    """
    pts = np.asarray(points, np.float64)
    out = [np.floor(pts[:1] + 0.5)]
    for p, q in zip(pts[:-1], pts[1:]):
        n = int(max(abs(q[0] - p[0]), abs(q[1] - p[1])))
        if n == 0:
            continue
        t = np.arange(1, n + 1)[:, None] / n
        out.append(np.floor(p + t * (q - p) + 0.5))
    return np.concatenate(out).astype(np.int64)


def _dedupe(points: np.ndarray) -> np.ndarray:
    """Drop consecutive repeated vertices."""
    keep = np.ones(len(points), bool)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    return points[keep]


def _all_at_least(dist: np.ndarray, pix: np.ndarray, need: float) -> bool:
    """Whether every (x, y) pixel lies in ``dist`` with value >= need."""
    H, W = dist.shape
    x, y = pix[:, 0], pix[:, 1]
    if np.any((x < 0) | (y < 0) | (x >= W) | (y >= H)):
        return False
    return bool(np.all(dist[y, x] >= need))


def _make_roi(points, *, roitype, name, group, width, color) -> roifile.ImagejRoi:
    roi = roifile.ImagejRoi.frompoints(np.asarray(points, np.int32), name=name)
    roi.roitype = roitype
    roi.options = roifile.ROI_OPTIONS(0)  # as RoiManager saves a plain ROI
    roi.version = _ROI_VERSION
    roi.group = group
    roi.stroke_width = width
    roi.stroke_color = color
    return roi


def _cell_stroke(dist_full, mask, rng, width):
    """(N, 2) float (x, y) points along a stroke inside one cell (crop coordinates), or None.

    ``dist_full`` is the cell's inside distance (1 = border pixel) on the
    crop where ``mask`` is the cell; the stroke follows the major axis with a slight wobble and
    keeps every drawn pixel >= 3 px deep (4 for a 3-px-wide stroke).
    """
    need = 3 + (width - 1) // 2
    if dist_full.max() < need:
        return None
    ys, xs = np.nonzero(mask)
    cov = np.cov(np.vstack([xs, ys])) if xs.size > 2 else np.eye(2)
    evals, evecs = np.linalg.eigh(cov)
    u = evecs[:, 1]
    jitter = rng.uniform(-0.25, 0.25)
    c, s = np.cos(jitter), np.sin(jitter)
    u = np.array([c * u[0] - s * u[1], s * u[0] + c * u[1]])
    n = np.array([-u[1], u[0]])
    centre = np.array([xs.mean(), ys.mean()])
    ci = np.floor(centre + 0.5).astype(int)
    if not (0 <= ci[1] < mask.shape[0] and 0 <= ci[0] < mask.shape[1]) or dist_full[ci[1], ci[0]] < need:
        iy, ix = np.unravel_index(np.argmax(dist_full), dist_full.shape)
        centre = np.array([ix, iy], float)
    half = float(np.sqrt(evals[1]) * 2.5 + 2)
    period = rng.uniform(8, 20)
    phase = rng.uniform(0, 2 * np.pi)
    for amp in (rng.uniform(0.5, 1.5), 0.0):
        t = np.arange(-half, half + 0.5, 0.5)
        path = centre + t[:, None] * u + (amp * np.sin(2 * np.pi * t / period + phase))[:, None] * n
        pix = np.floor(path + 0.5).astype(int)
        inside = (pix[:, 0] >= 0) & (pix[:, 1] >= 0) & (pix[:, 0] < mask.shape[1]) & (pix[:, 1] < mask.shape[0])
        ok = np.zeros(len(t), bool)
        ok[inside] = dist_full[pix[inside, 1], pix[inside, 0]] >= need
        mid = int(np.argmin(np.abs(t)))
        if not ok[mid]:
            continue
        lo = mid
        while lo > 0 and ok[lo - 1]:
            lo -= 1
        hi = mid
        while hi < len(t) - 1 and ok[hi + 1]:
            hi += 1
        # a user rarely draws the full length: keep 60-95 % of it
        span = hi - lo
        keep = max(2, int(round(span * rng.uniform(0.6, 0.95))))
        start = lo + int(rng.integers(0, max(1, span - keep + 1)))
        seg = path[start : start + keep + 1]
        if len(seg) < 2:
            continue
        return seg
    return None


def _bg_walk(allowed: np.ndarray, weights: np.ndarray, rng, *, freeline: bool):
    """(N, 2) int (x, y) vertices of a random-walk stroke on ``allowed`` pixels, or None."""
    allowed_u8 = allowed.astype(np.uint8)
    flat = np.flatnonzero(allowed)
    if flat.size == 0:
        return None
    w = weights.ravel()[flat]
    for _attempt in range(20):
        start = flat[rng.choice(flat.size, p=w / w.sum())]
        y, x = divmod(int(start), allowed.shape[1])
        pts = [np.array([x, y])]
        heading = rng.uniform(0, 2 * np.pi)
        target = rng.uniform(15, 50)
        length = 0.0
        while length < target:
            moved = False
            for k in range(10):
                turn = rng.normal(0, 0.35 + 0.35 * k)
                h = heading + turn
                step = rng.uniform(2.0, 3.0) if freeline else rng.uniform(4.0, 9.0)
                q = np.floor(pts[-1] + step * np.array([np.cos(h), np.sin(h)]) + 0.5).astype(int)
                if np.all(q == pts[-1]):
                    continue
                if _all_at_least(allowed_u8, _line_pixels(np.array([pts[-1], q])), 1):
                    pts.append(q)
                    length += float(np.hypot(*(q - pts[-2])))
                    heading = h
                    moved = True
                    break
            if not moved:
                break
        if length >= 8 and len(pts) >= 2:
            return _dedupe(np.array(pts))
    return None


def _bg_polygon(bg_dist: np.ndarray, rng):
    """(N, 2) int (x, y) pixel-corner vertices of a small polygon in open background, or None."""
    from skimage.draw import polygon as draw_polygon

    H, W = bg_dist.shape
    cand = np.flatnonzero(bg_dist.ravel() >= 12)
    if cand.size == 0:
        return None
    for _attempt in range(20):
        y, x = divmod(int(cand[rng.integers(cand.size)]), W)
        n = int(rng.integers(4, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(3.5, 8.0, n)
        verts = np.floor(np.c_[x + 0.5 + rad * np.cos(ang), y + 0.5 + rad * np.sin(ang)] + 0.5).astype(int)
        verts = _dedupe(verts)
        if len(verts) < 3 or np.any(verts < 1) or np.any(verts[:, 0] > W - 1) or np.any(verts[:, 1] > H - 1):
            continue
        rr, cc = draw_polygon(verts[:, 1] - 0.5, verts[:, 0] - 0.5, shape=(H, W))
        if rr.size < 12:
            continue
        m = np.zeros((H, W), bool)
        m[rr, cc] = True
        m = ndi.binary_dilation(m)
        if np.all(bg_dist[m] >= 4):
            return verts
    return None


def _cell_outline(dist_full: np.ndarray, label_crop: np.ndarray, k: int):
    """(N, 2) int (x, y) pixel-corner vertices of a freehand outline 3 px inside cell ``k``."""
    from skimage.draw import polygon as draw_polygon
    from skimage.measure import approximate_polygon, find_contours

    core = dist_full >= 4
    if core.sum() < 15:
        return None
    pieces, n = ndi.label(core)
    if n > 1:
        core = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
    contours = find_contours(np.pad(core, 1).astype(float), 0.5)
    if not contours:
        return None
    rc = max(contours, key=len) - 1.0  # (row, col) pixel-centre coordinates
    rc = approximate_polygon(rc, tolerance=0.6)
    verts = _dedupe(np.floor(rc[:, ::-1] + 0.5 + 0.5).astype(int))  # corners = centres + 0.5
    if len(verts) > 3 and np.all(verts[0] == verts[-1]):
        verts = verts[:-1]
    if len(verts) < 3:
        return None
    rr, cc = draw_polygon(verts[:, 1] - 0.5, verts[:, 0] - 0.5, shape=label_crop.shape)
    if rr.size == 0 or np.any(label_crop[rr, cc] != k):
        return None
    return verts


def scribble_rois(
    labels: np.ndarray,
    *,
    rng: np.random.Generator,
    fraction: float = 0.5,
    n_background: int | None = None,
    areas: bool = True,
) -> list[roifile.ImagejRoi]:
    """Fiji-style scribbles for an instance label image, as a user would draw them.

    Parameters
    ----------
    labels : (H, W) integer ndarray
        Instance labels, 0 = background.
    rng : numpy.random.Generator
        Source of all randomness.
    fraction : float
        Share of the cells that get a stroke (at least 3 cells, or all when
        there are fewer).
    n_background : int, optional
        Number of background strokes; default ``max(4, n_foreground // 2)``.
        Fewer are returned when the background has no room for them.
    areas : bool
        Also add one background polygon (an area ROI) and one freehand outline
        traced 3 px inside an otherwise unscribbled cell.

    Returns
    -------
    rois : list of roifile.ImagejRoi
        Foreground ROIs first (group 1, names ``fg-001``..., yellow), then
        background ROIs (group 2, ``bg-001``..., cyan). Strokes are POLYLINE
        (segmented line, few vertices) or FREELINE (freehand line, a vertex
        every 1-2 px) with stroke width 1 or 3 and integer pixel-centre
        vertices. Every drawn pixel of a foreground stroke lies >= 3 px deep
        inside one cell (4 px for width 3); every background stroke pixel lies
        >= 4 px from any cell (5 px for width 3) and inside the image.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise S2LError(
            f"scribble_rois: labels must be a 2-D integer array, got {labels.dtype} {labels.shape}"
        )
    if not 0 < fraction <= 1:
        raise S2LError(f"scribble_rois: fraction {fraction} must be in (0, 1]")
    H, W = labels.shape
    boxes = ndi.find_objects(labels)
    ids = [k for k, b in enumerate(boxes, start=1) if b is not None]
    order = list(rng.permutation(ids)) if ids else []
    n_fg = min(len(ids), max(3, int(round(fraction * len(ids)))))

    fg: list[roifile.ImagejRoi] = []
    used: set[int] = set()
    cache = {}

    def inside_distance(k):
        if k not in cache:
            sl = boxes[k - 1]
            y0, x0 = max(sl[0].start - 1, 0), max(sl[1].start - 1, 0)
            y1, x1 = min(sl[0].stop + 1, H), min(sl[1].stop + 1, W)
            crop = labels[y0:y1, x0:x1]
            # pad with 0 so the image edge counts as the cell's border too
            d = ndi.distance_transform_edt(np.pad(crop == k, 1))[1:-1, 1:-1]
            cache[k] = (y0, x0, crop, d)
        return cache[k]

    for k in order:
        if len(fg) >= n_fg:
            break
        k = int(k)
        y0, x0, crop, d = inside_distance(k)
        width = int(rng.choice([1, 3]))
        path = _cell_stroke(d, crop == k, rng, width)
        if path is None and width == 3:
            width = 1
            path = _cell_stroke(d, crop == k, rng, width)
        if path is None:
            continue
        freeline = bool(rng.random() < 0.5)
        if freeline:
            pts = path[:: int(rng.integers(2, 5))]  # a vertex every 1-2 px
            pts = np.vstack([pts, path[-1:]])
        else:
            idx = np.unique(np.linspace(0, len(path) - 1, int(rng.integers(3, 7))).round().astype(int))
            pts = path[idx]
        pts = _dedupe(np.floor(pts + 0.5).astype(int))
        need = 3 + (width - 1) // 2
        if len(pts) < 2 or not _all_at_least(d, _line_pixels(pts), need):
            continue
        pts = pts + [x0, y0]
        fg.append(
            _make_roi(
                pts,
                roitype=roifile.ROI_TYPE.FREELINE if freeline else roifile.ROI_TYPE.POLYLINE,
                name=f"fg-{len(fg) + 1:03d}",
                group=GROUP_FOREGROUND,
                width=width,
                color=FOREGROUND_COLOR,
            )
        )
        used.add(k)

    if areas:
        for k in order:
            k = int(k)
            if k in used:
                continue
            y0, x0, crop, d = inside_distance(k)
            verts = _cell_outline(d, crop, k)
            if verts is None:
                continue
            fg.append(
                _make_roi(
                    verts + [x0, y0],
                    roitype=roifile.ROI_TYPE.FREEHAND,
                    name=f"fg-{len(fg) + 1:03d}",
                    group=GROUP_FOREGROUND,
                    width=1,
                    color=FOREGROUND_COLOR,
                )
            )
            break

    # ---- background ------------------------------------------------------
    bg: list[roifile.ImagejRoi] = []
    if n_background is None:
        n_background = max(4, len(fg) // 2)
    bg_dist = ndi.distance_transform_edt(labels == 0) if ids else np.full((H, W), np.inf)
    ys, xs = np.arange(H), np.arange(W)
    edge = np.minimum.outer(np.minimum(ys, H - 1 - ys), np.minimum(xs, W - 1 - xs))
    open_space = np.clip(np.nan_to_num(bg_dist, posinf=max(H, W)), 0, 20)
    for i in range(int(n_background)):
        width = int(rng.choice([1, 3]))
        margin = (width - 1) // 2
        allowed = (bg_dist >= 4 + margin) & (edge >= margin)
        freeline = bool(rng.random() < 0.5)
        pts = _bg_walk(allowed, open_space + 1e-3, rng, freeline=freeline)
        if pts is None:
            continue
        bg.append(
            _make_roi(
                pts,
                roitype=roifile.ROI_TYPE.FREELINE if freeline else roifile.ROI_TYPE.POLYLINE,
                name=f"bg-{len(bg) + 1:03d}",
                group=GROUP_BACKGROUND,
                width=width,
                color=BACKGROUND_COLOR,
            )
        )
    if areas:
        verts = _bg_polygon(np.nan_to_num(bg_dist, posinf=max(H, W)), rng)
        if verts is not None:
            bg.append(
                _make_roi(
                    verts,
                    roitype=roifile.ROI_TYPE.POLYGON,
                    name=f"bg-{len(bg) + 1:03d}",
                    group=GROUP_BACKGROUND,
                    width=1,
                    color=BACKGROUND_COLOR,
                )
            )
    return fg + bg


# --------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------


def make_demo_dataset(
    root: str | os.PathLike,
    *,
    n_train: int = 6,
    n_val: int = 4,
    shape: tuple[int, int] = (256, 256),
    seed: int = 0,
) -> dict:
    """Write a synthetic nuclei dataset in the project's layout.

    Layout::

        root/train/images/nuclei_000.tif   uint16 (H, W) image
        root/train/rois/nuclei_000.zip     Fiji RoiSet.zip of scribbles
        root/train/masks/nuclei_000.tif    uint16 (H, W) instance labels (scoring only)
        root/val/images/nuclei_006.tif     (stems continue after the training ones)
        root/val/masks/nuclei_006.tif

    Parameters
    ----------
    root : path
        Output folder (created). Existing files of the same names are replaced.
    n_train, n_val : int
        Number of training images (>= 1, with scribbles) and validation
        images (>= 0, without).
    shape : (H, W) tuple of int
        Image size.
    seed : int
        The dataset is a function of ``seed`` (and the other arguments); image
        ``i`` uses ``np.random.default_rng([seed, i])``.

    Returns
    -------
    summary : dict
        ``root`` (Path), ``seed``, ``shape``, ``train`` and ``val``: lists of
        dicts with ``stem``, ``image``, ``mask`` (Paths), ``n_cells``; train
        entries also ``rois`` (Path), ``n_fg_rois`` and ``n_bg_rois``.
    """
    if int(n_train) < 1 or int(n_val) < 0:
        raise S2LError(f"make_demo_dataset: need n_train >= 1 and n_val >= 0, got {n_train} and {n_val}")
    root = Path(root)
    shape = (int(shape[0]), int(shape[1]))
    # generate everything first, then write
    items = []
    for i in range(int(n_train) + int(n_val)):
        rng = np.random.default_rng([int(seed), i])
        image, labels = make_nuclei_image(shape=shape, rng=rng)
        split = "train" if i < n_train else "val"
        rois = scribble_rois(labels, rng=rng) if split == "train" else None
        items.append((split, f"nuclei_{i:03d}", image, labels, rois))

    summary: dict = {"root": root, "seed": int(seed), "shape": shape, "train": [], "val": []}
    for split, stem, image, labels, rois in items:
        entry = {
            "stem": stem,
            "image": root / split / "images" / f"{stem}.tif",
            "mask": root / split / "masks" / f"{stem}.tif",
            "n_cells": int(labels.max()),
        }
        # ImageJ TIFFs, uncompressed, as Fiji saves them
        write_tiff(entry["image"], image, imagej=True, compression=None)
        write_tiff(entry["mask"], labels.astype(np.uint16), imagej=True, compression=None)
        if rois is not None:
            entry["rois"] = root / split / "rois" / f"{stem}.zip"
            write_roiset(rois, entry["rois"])
            entry["n_fg_rois"] = sum(r.group == GROUP_FOREGROUND for r in rois)
            entry["n_bg_rois"] = sum(r.group == GROUP_BACKGROUND for r in rois)
        summary[split].append(entry)
    return summary

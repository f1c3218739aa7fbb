"""Outlines of label images and scribble masks as ImageJ ROIs (RoiSet.zip).

Each object (or each connected piece of a scribble class) is traced along
its pixel edges, so that ImageJ's Fill, and
:func:`s2l_tools.io.roi.rasterize.rasterize_roi`, give back exactly its pixels.
"""

from __future__ import annotations

import os

import numpy as np
from roifile import ROI_TYPE, ImagejRoi
from scipy import ndimage

from s2l_tools.errors import S2LError
from s2l_tools.io.roi.files import write_roiset
from s2l_tools.labels import (
    BACKGROUND,
    FOREGROUND,
    GROUP_BACKGROUND,
    GROUP_FOREGROUND,
    UNLABELED,
)

__all__ = ["labels_to_roiset", "scribbles_to_roiset", "trace_outlines"]

_MAX_INT_COORD = 32767  # integer ROI coordinates are 16 bit


def trace_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Closed boundary loops of a pixel set, on the pixel-corner grid.

    Every crack between a set pixel and an unset one is a directed edge
    (set pixels on the same side of every edge); edges are linked into loops,
    turning so that pixels touching only at a corner stay apart. Collinear
    vertices are dropped. Filling all loops with the even-odd (or non-zero)
    rule gives back exactly ``mask``.

    Parameters
    ----------
    mask : (H, W) bool ndarray
        The pixel set (any number of pieces, with or without holes).

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
    rois = []
    objects = ndimage.find_objects(labels.astype(np.int64)) if labels.size else []
    for lab, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        sub = labels[sl] == lab
        loops = trace_outlines(sub)
        loops = [lp + [sl[1].start, sl[0].start] for lp in loops]
        rois.append(_roi_from_loops(loops, f"{name_prefix}-{lab:04d}"))
    write_roiset(rois, path)
    return len(rois)


def scribbles_to_roiset(mask: np.ndarray, path: str | os.PathLike, *, line_as: str = "polygon") -> int:
    """Write a scribble mask as an ImageJ RoiSet.zip, grouped by class.

    Every 4-connected piece of background (value 1) becomes an ROI named
    ``bg-0001``... in group 2, every piece of foreground (value 2) one named
    ``fg-0001``... in group 1 (the groups :func:`~s2l_tools.io.roi.scribbles.roi_class` reads by
    default).
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
    bad = np.setdiff1d(np.unique(mask), [UNLABELED, BACKGROUND, FOREGROUND])
    if bad.size:
        raise S2LError(
            f"{path}: scribble mask has values {bad.tolist()[:5]}; use 0 unlabeled, 1 background, 2 foreground"
        )
    from skimage.measure import label as cc_label

    rois = []
    for code, prefix, group in ((BACKGROUND, "bg", GROUP_BACKGROUND), (FOREGROUND, "fg", GROUP_FOREGROUND)):
        comp = cc_label(mask == code, connectivity=1)
        for n, sl in enumerate(ndimage.find_objects(comp), start=1):
            if sl is None:
                continue
            sub = comp[sl] == n
            loops = [lp + [sl[1].start, sl[0].start] for lp in trace_outlines(sub)]
            rois.append(_roi_from_loops(loops, f"{prefix}-{n:04d}", group=group))
    write_roiset(rois, path)
    return len(rois)

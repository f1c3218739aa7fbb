"""From a foreground probability map to an instance label image.

threshold -> connected components -> fill holes per object -> (optional)
distance-transform watershed to split touching cells -> remove small
objects -> relabel 1..N. And the object scale of a model trained with
``s2l-train --diameter``: the median object diameter estimated from a first
pass, the image resized so its objects have the model's diameter
(:func:`at_diameter`).

This module is also loaded by the CellProfiler plugin inside CellProfiler
4.2.8's own Python 3.9 (numpy 1.23, scipy 1.9, scikit-image 0.18/0.19, no
torch). It therefore imports only numpy, scipy and scikit-image, avoids
Python 3.10-only runtime syntax, uses only scikit-image functions present in
0.18, and raises :class:`ValueError` (not ``S2LError``) for bad arguments.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Optional

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max
from skimage.measure import label as cc_label
from skimage.morphology import remove_small_objects as _sk_remove_small_objects
from skimage.segmentation import relabel_sequential as _sk_relabel_sequential
from skimage.segmentation import watershed

__all__ = [
    "DEFAULT_DECLUMP",
    "MIN_SCALE",
    "MAX_SCALE",
    "MAX_PIXELS",
    "at_diameter",
    "estimate_diameter",
    "instances_from_probability",
    "median_diameter",
    "resize_image",
    "scale_for",
    "scaled_shape",
    "fill_holes_per_object",
    "relabel_sequential",
    "remove_small_objects",
    "seen_not_called",
    "under_called",
    "under_called_share",
]

_DECLUMP = ("none", "watershed")
#: the default declumping of every prediction path (s2l-predict, the ONNX reader and so the
#: CellProfiler module, make demo): measured on the DSB val splits (docs/benchmarks.md,
#: "Touching nuclei"): F1@0.5 +0.07 to +0.13 on fluo, +0.08 histo, +0.02 brightfield
DEFAULT_DECLUMP = "watershed"
#: scikit-image >= 0.26 names the size limit ``max_size`` (inclusive); before, ``min_size``
_SK_MAX_SIZE = "max_size" in inspect.signature(_sk_remove_small_objects).parameters


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber the objects of ``labels`` as 1..N, keeping their order.

    ``skimage.segmentation.relabel_sequential``, with an int32 result.

    Parameters
    ----------
    labels : (H, W) non-negative integer ndarray
        0 is background.

    Returns
    -------
    out : (H, W) int32 ndarray
        Same objects, ids 1..N in increasing order of the old ids.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return np.zeros(labels.shape, dtype=np.int32)
    if labels.min() < 0:
        raise ValueError("labels must be non-negative")
    out, _, _ = _sk_relabel_sequential(labels)
    return out.astype(np.int32, copy=False)


def remove_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set objects of fewer than ``min_size`` pixels to 0 (a copy).

    ``skimage.morphology.remove_small_objects`` on a label image, called the
    way the installed scikit-image wants it (``max_size = min_size - 1`` from
    0.26 on, ``min_size`` before) and without its warning about an image of
    one object.

    Parameters
    ----------
    labels : (H, W) non-negative integer ndarray
    min_size : int
        Smallest object kept, in pixels.

    Returns
    -------
    out : (H, W) ndarray
        Same dtype; the other objects keep their ids.
    """
    labels = np.asarray(labels)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Only one label was provided")
        if _SK_MAX_SIZE:
            return _sk_remove_small_objects(labels, max_size=int(min_size) - 1)
        return _sk_remove_small_objects(labels, min_size=int(min_size))


def fill_holes_per_object(labels: np.ndarray) -> np.ndarray:
    """Fill the holes of each object separately.

    A hole of object ``i`` is a background region enclosed by ``i`` alone
    (4-connected background, consistent with 8-connected objects). Only
    background pixels are filled: another object lying inside the hole keeps
    its label, and background enclosed jointly by two neighbouring objects is
    left alone (filling it would glue the neighbours).

    Parameters
    ----------
    labels : (H, W) integer ndarray

    Returns
    -------
    out : (H, W) ndarray
        A filled copy, same dtype.
    """
    labels = np.asarray(labels)
    out, _ = _fill_holes(labels, lambda: ndi.find_objects(labels))
    return out.copy() if out is labels else out


def _fill_holes(labels: np.ndarray, objects) -> tuple[np.ndarray, bool]:
    """:func:`fill_holes_per_object` (``labels`` itself when nothing is filled),
    and whether a filled pixel now touches another object (8-neighbours).

    ``objects()`` returns ``ndi.find_objects(labels)`` (called only when needed).
    """
    H, W = labels.shape
    # a hole of any object is also a hole of the whole foreground: a 4-connected
    # background region off the image border. Only objects next to one of those
    # can have a hole (on noisy maps, few of thousands)
    background, n = ndi.label(labels == 0)
    enclosed = np.ones(n + 1, dtype=bool)
    enclosed[0] = False
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        enclosed[edge] = False
    if not enclosed.any():
        return labels, False
    hy, hx = np.nonzero(enclosed[background])
    near = np.concatenate([
        labels[np.clip(hy + dy, 0, H - 1), np.clip(hx + dx, 0, W - 1)]
        for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    ])
    out = labels.copy()
    objs = objects()
    fy, fx = [], []
    for i in np.unique(near[near > 0]).tolist():
        sl = objs[i - 1]
        obj = labels[sl] == i
        new = ndi.binary_fill_holes(obj) & ~obj & (out[sl] == 0)
        if new.any():
            out[sl][new] = i
            yy, xx = np.nonzero(new)
            fy.append(yy + sl[0].start)
            fx.append(xx + sl[1].start)
    touching = False
    if fy:
        # only a filled pixel can touch another object (an object in the hole)
        fy, fx = np.concatenate(fy), np.concatenate(fx)
        own = out[fy, fx]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                nb = out[np.clip(fy + dy, 0, H - 1), np.clip(fx + dx, 0, W - 1)]
                touching = touching or bool(np.any((nb != 0) & (nb != own)))
    return out, touching


def _auto_min_distance(areas: np.ndarray, min_size: int) -> int:
    """Half the equivalent radius of the median object (at least 1 px).

    ``areas[i]`` is the number of pixels of id ``i`` (``np.bincount(labels.ravel())``).
    """
    areas = np.asarray(areas)[1:]
    areas = areas[areas > 0]
    big = areas[areas >= max(min_size, 1)]
    if big.size:
        areas = big
    if areas.size == 0:
        return 1
    radius = math.sqrt(float(np.median(areas)) / math.pi)
    return max(1, int(round(0.5 * radius)))


def _declump_watershed(labels: np.ndarray, min_distance: int) -> np.ndarray:
    """Split touching objects with a watershed of the smoothed distance map.

    The definition, run on the whole image: markers are the connected groups
    of ``peak_local_max(smooth, min_distance=min_distance, labels=labels,
    exclude_border=False)`` and ``watershed(-smooth, markers, mask=labels > 0,
    connectivity=2)`` floods them; an object without a marker keeps its extent
    with the id ``label + number of markers``. :func:`_split_objects` gives
    the same result faster; this is its fallback where objects touch or there
    is no background.
    """
    mask = labels > 0
    distance = ndi.distance_transform_edt(mask)
    smooth = ndi.gaussian_filter(distance, sigma=1.0) * mask
    coords = peak_local_max(
        smooth,
        min_distance=int(min_distance),
        labels=labels,
        exclude_border=False,
    )
    coords = np.asarray(coords, dtype=np.intp).reshape(-1, 2)
    peaks = np.zeros(labels.shape, dtype=bool)
    peaks[coords[:, 0], coords[:, 1]] = True
    # neighbouring peak pixels (a plateau) form one marker
    markers = cc_label(peaks, connectivity=2)
    out = watershed(-smooth, markers, mask=mask, connectivity=2)
    # an object that got no marker keeps its original extent
    missing = mask & (out == 0)
    if missing.any():
        out = out.astype(np.int64)
        out[missing] = labels[missing].astype(np.int64) + int(out.max())
    return out


def _object_distances(labels: np.ndarray, objs: list) -> np.ndarray:
    """``ndi.distance_transform_edt(labels > 0)``, one object's box at a time.

    For objects that do not touch, with background somewhere: the background
    pixel nearest to a pixel of object ``i`` lies in ``i``'s bounding box grown
    by 1 (one step from any farther pixel towards it stays outside ``i`` and
    gets closer; another object's pixel never is the nearest, as the step
    from it is not in ``i`` either), so that box with ``i`` alone in it gives
    the same distance. Objects 1 or 2 pixels thin, off the image border, are
    all at distance 1.
    """
    H, W = labels.shape
    dist = (labels > 0).astype(np.float64)
    for i, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        if (y1 - y0 <= 2 and 0 < y0 and y1 < H) or (x1 - x0 <= 2 and 0 < x0 and x1 < W):
            continue
        y0, x0, y1, x1 = max(y0 - 1, 0), max(x0 - 1, 0), min(y1 + 1, H), min(x1 + 1, W)
        obj = labels[y0:y1, x0:x1] == i
        dist[y0:y1, x0:x1][obj] = ndi.distance_transform_edt(obj)[obj]
    return dist


def _side_by_side(boxes: list, width: int, *, gap: int) -> tuple[list, tuple[int, int]]:
    """Places for ``boxes`` (2-D slices) in rows at most ``width`` wide (or the widest box),
    ``gap`` pixels apart: their slices in the sheet and its shape."""
    width = max(width, max(sl[1].stop - sl[1].start for sl in boxes))
    at, y, x, row_h = [], 0, 0, 0
    for sl in boxes:
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if x + w > width:
            y, x, row_h = y + row_h + gap, 0, 0
        at.append((slice(y, y + h), slice(x, x + w)))
        x, row_h = x + w + gap, max(row_h, h)
    return at, (y + row_h, width)


def _smooth_at(dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``ndi.gaussian_filter(dist, 1.0)`` at the raveled pixels ``idx`` (0 elsewhere).

    :func:`_gaussian_at` where it gives scipy's bits on this machine (checked
    once: a compiler may fuse scipy's multiply-adds), else the whole image.
    """
    global _GATHER_EXACT
    if _GATHER_EXACT is None:
        rng = np.random.default_rng(0)
        test = rng.random((23, 17)) * (rng.random((23, 17)) > 0.3) * 20
        every = np.arange(test.size)
        _GATHER_EXACT = bool(np.array_equal(
            _gaussian_at(test, every), ndi.gaussian_filter(test, 1.0)))
    if _GATHER_EXACT and min(dist.shape) >= 4:
        return _gaussian_at(dist, idx)
    out = np.zeros(dist.size)
    out[idx] = ndi.gaussian_filter(dist, 1.0).ravel()[idx]
    return out.reshape(dist.shape)


def _gaussian_at(dist: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The sigma-1 Gaussian of ``dist`` (``mode='reflect'``) at the raveled pixels ``idx``.

    The two 1-D passes of ``ndi.gaussian_filter`` (rows, then columns) with the
    arithmetic of scipy's loop for a symmetric kernel, in its order (centre,
    then the pairs from the outermost in), done only where needed, on the
    image mirrored 4 pixels out (the kernel's reach). Needs ``min(dist.shape) >= 4``.
    """
    H, W = dist.shape
    impulse = np.zeros(17)
    impulse[8] = 1.0
    w = ndi.gaussian_filter1d(impulse, 1.0)[8:13]  # centre, then 1..4 away
    Wp = W + 8
    flat = np.pad(dist, 4, mode="symmetric").ravel()
    ys, xs = np.divmod(idx, W)
    q = (ys + 4) * Wp + (xs + 4)  # idx in the padded image
    # the row pass, where the column pass reads it
    need = np.zeros(flat.size, dtype=bool)
    for dx in range(-4, 5):
        need[q + dx] = True
    n1 = np.flatnonzero(need)
    t = flat[n1] * w[0]
    for j in (4, 3, 2, 1):
        t += (flat[n1 - j * Wp] + flat[n1 + j * Wp]) * w[j]
    rows = np.zeros(flat.size)
    rows[n1] = t
    s = rows[q] * w[0]
    for j in (4, 3, 2, 1):
        s += (rows[q - j] + rows[q + j]) * w[j]
    out = np.zeros(H * W)
    out[idx] = s
    return out.reshape(H, W)


_GATHER_EXACT: Optional[bool] = None


def _object_peaks(
    smooth: np.ndarray, labels: np.ndarray, idx: np.ndarray, areas: np.ndarray,
    min_distance: int, objs: list,
) -> np.ndarray:
    """Raveled indices (increasing) of the peaks of ``smooth`` in each object.

    The peaks of ``peak_local_max(smooth, min_distance, labels=labels,
    exclude_border=False)`` (scikit-image 0.26; 0.18 writes into its image and
    breaks ties in an arbitrary order) for objects that are 8-connected and do
    not touch each other, ``idx`` their pixels (raveled, increasing), and a
    ``smooth`` that is > 0 exactly there, with background somewhere. Per
    object, a peak is a pixel that equals the object's maximum within
    ``2 * min_distance + 1`` pixels (an object whose pixels are all equal has
    instead the pixels that an opening removes), and, from the highest down
    (ties in raster order), a peak closer than ``min_distance`` (Chebyshev) to
    one kept is dropped.

    A peak is a maximum of its 3 x 3 window, which holds one object (and
    background, lower): those few pixels are then checked window by window.
    """
    H, W = smooth.shape
    md = int(min_distance)
    flat_s = smooth.ravel()
    flat_l = labels.ravel()
    ys, xs = np.divmod(idx, W)
    v = flat_s[idx]
    top = np.ones(idx.size, dtype=bool)
    for dy in (-1, 0, 1):
        ny = np.clip(ys + dy, 0, H - 1) * W
        for dx in (-1, 0, 1):
            if dy or dx:  # 'nearest' edges: a clipped window
                top &= v >= flat_s[ny + np.clip(xs + dx, 0, W - 1)]
    idx = idx[top]
    if md > 1 and idx.size:
        step = max(1, 2_000_000 // (2 * md + 1) ** 2)
        offs = np.arange(-md, md + 1)
        dy = np.repeat(offs, offs.size)
        dx = np.tile(offs, offs.size)
        ok = []
        for a in range(0, idx.size, step):
            u = idx[a : a + step]
            uy, ux = np.divmod(u, W)
            win = np.clip(uy[:, None] + dy, 0, H - 1) * W + np.clip(ux[:, None] + dx, 0, W - 1)
            own = np.where(flat_l[win] == flat_l[u][:, None], flat_s[win], -np.inf)
            ok.append(u[flat_s[u] >= own.max(axis=1)])
        idx = np.concatenate(ok)
    lab = flat_l[idx]
    # an object whose pixels all equal their windows' maxima has equal pixels:
    # peak_local_max then takes the pixels an opening removes (all, below 5 px)
    count = np.bincount(lab, minlength=areas.size)
    flat = np.flatnonzero((count == areas) & (areas >= 5))
    flat = flat[flat > 0]
    if flat.size:
        keep = [idx[~np.isin(lab, flat)]]
        for i in flat.tolist():
            sl = objs[i - 1]
            obj = labels[sl] == i
            yy, xx = np.nonzero(obj & ~ndi.binary_opening(obj))
            keep.append((yy + sl[0].start) * W + (xx + sl[1].start))
        idx = np.sort(np.concatenate(keep))
        lab = flat_l[idx]
    # every pixel is above the threshold (the image minimum, 0 here)
    if md > 1 and idx.size > 1:
        pts = np.column_stack(np.divmod(idx, W))
        pairs = cKDTree(pts).query_pairs(md - 1, p=np.inf, output_type="ndarray")
        pairs = pairs[lab[pairs[:, 0]] == lab[pairs[:, 1]]]
        if pairs.size:
            # peaks this close are equal, so the order is the raster order
            pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
            gone = np.zeros(idx.size, dtype=bool)
            starts = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])
            ends = np.r_[starts[1:], len(pairs)]
            for a, b in zip(starts.tolist(), ends.tolist()):
                if not gone[pairs[a, 0]]:
                    gone[pairs[a:b, 1]] = True
            idx = idx[~gone]
    return idx


def _flood_side_by_side(smooth, boxes, masks, ys, xs, owner, marker, split):
    """The watershed of each object in ``boxes`` (``masks`` its pixels there), all in one
    image where the boxes lie side by side, 1 pixel apart, in rows at most as wide as the
    image. Exact only where no object has two marker pixels of equal height (the heap
    then orders each object's pixels the same, whatever else it holds).

    Returns the flooded image and where each box lies in it.
    """
    at, shape = _side_by_side(boxes, smooth.shape[1], gap=1)
    height = np.zeros(shape)
    inside = np.zeros(shape, dtype=bool)
    seeds = np.zeros(shape, dtype=np.int32)
    for sl, to, obj, i in zip(boxes, at, masks, split.tolist()):
        height[to] = -smooth[sl]
        inside[to] = obj
        mine = owner == i
        seeds[ys[mine] - sl[0].start + to[0].start, xs[mine] - sl[1].start + to[1].start] = (
            marker[mine])
    return watershed(height, seeds, mask=inside, connectivity=2), at


def _split_objects(
    labels: np.ndarray, objs: list, areas: np.ndarray, min_distance: int, touching: bool
) -> tuple[np.ndarray, Optional[list], np.ndarray]:
    """:func:`_declump_watershed` without the work it does for nothing.

    ``objs`` is ``ndi.find_objects(labels)``, ``areas`` the pixels per id,
    ``touching`` whether two objects touch (only around an object in
    another's filled hole). Returns ``(ids, parts, sizes)``: the result is
    ``ids[labels]`` with, for each ``(slice, object_mask, flood)`` of
    ``parts``, ``flood`` written on ``object_mask`` in ``slice``; ``sizes``
    counts the pixels of each id. Where objects touch or there is no
    background the definition runs instead: ``ids`` is then its result and
    ``parts`` None.

    Distances, smoothing and peaks are computed on the objects' pixels only.
    An object with one marker becomes that marker's region whole, one with
    none keeps its extent: only objects with two or more markers are flooded,
    their boxes side by side in one small image. The flood of one object does
    not depend on the others (the heap orders pixels by height, then by when
    they were pushed), except for the order in which the heap pops marker
    pixels of equal height, which depends on everything in it: where an
    object has two equal marker pixels (mirror-symmetric objects, plateaus),
    the whole image is flooded, as in the definition.
    """
    if touching or areas[0] == 0:
        out = _declump_watershed(labels, min_distance)
        return out, None, np.bincount(out.ravel())
    W = labels.shape[1]
    fg = np.flatnonzero(labels)
    smooth = _smooth_at(_object_distances(labels, objs), fg)
    idx = _object_peaks(smooth, labels, fg, areas, min_distance, objs)
    n_peaks = idx.size
    # markers: 8-connected groups of peaks, numbered in raster order
    group = np.arange(n_peaks)
    if n_peaks > 1:
        pairs = cKDTree(np.column_stack(np.divmod(idx, W))).query_pairs(
            1, p=np.inf, output_type="ndarray"
        )
        if pairs.size:
            graph = csr_matrix(
                (np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n_peaks, n_peaks)
            )
            group = connected_components(graph, directed=False)[1]
    marker = group + 1
    n_markers = int(marker.max()) if n_peaks else 0
    owner = labels.ravel()[idx]
    # distinct markers per object
    links = np.unique(owner.astype(np.int64) * (n_markers + 1) + marker)
    per_object = np.bincount(links // (n_markers + 1), minlength=areas.size)
    split = np.flatnonzero(per_object >= 2)
    ids = np.arange(areas.size, dtype=np.int64) + n_markers
    ids[0] = 0
    ids[owner] = marker
    ids[split] = 0
    sizes = np.bincount(ids, weights=areas, minlength=areas.size + n_markers).astype(np.int64)
    parts = []
    if split.size:
        ys, xs = np.divmod(idx, W)
        # equal marker pixels of one object leave their order to the heap, which
        # holds every object's pixels: flood the whole image then, as defined
        whole = None
        ours = np.isin(owner, split)
        o, v = owner[ours], smooth.ravel()[idx[ours]]
        order = np.lexsort((v, o))
        o, v = o[order], v[order]
        if np.any((o[1:] == o[:-1]) & (v[1:] == v[:-1])):
            seeds = np.zeros(labels.shape, dtype=np.int32)
            seeds.ravel()[idx] = marker
            whole = watershed(-smooth, seeds, mask=labels > 0, connectivity=2)
        boxes = [objs[i - 1] for i in split.tolist()]
        masks = [labels[sl] == i for sl, i in zip(boxes, split.tolist())]
        if whole is None:
            whole, boxes_at = _flood_side_by_side(
                smooth, boxes, masks, ys, xs, owner, marker, split)
        else:
            boxes_at = boxes
        for sl, at, obj in zip(boxes, boxes_at, masks):
            flood = whole[at][obj]
            sizes[: n_markers + 1] += np.bincount(flood, minlength=n_markers + 1)
            parts.append((sl, obj, flood))
    sizes[0] = 0
    return ids, parts, sizes


def instances_from_probability(
    prob: np.ndarray,
    *,
    threshold: float = 0.5,
    min_size: int = 32,  # = training.checkpoint.DEFAULT_MIN_SIZE
    fill_holes: bool = True,
    declump: str = DEFAULT_DECLUMP,
    min_distance: Optional[int] = None,
) -> np.ndarray:
    """Instance labels from a foreground probability map.

    Parameters
    ----------
    prob : (H, W) float ndarray
        Foreground probability (e.g. channel 1 of the softmax output).
    threshold : float, optional
        A pixel is foreground when ``prob > threshold`` (strictly; with two
        classes and ``threshold=0.5`` this is the argmax, ties going to
        background).
    min_size : int, optional
        Objects with fewer than ``min_size`` pixels are removed (after holes
        are filled and clumps split). 0 or 1 keeps everything. The default is that of
        new models (``s2l-train --min-size``).
    fill_holes : bool, optional
        Fill each object's holes (see :func:`fill_holes_per_object`).
    declump : {'watershed', 'none'}, optional
        ``'watershed'`` (the default, :data:`DEFAULT_DECLUMP`) splits touching cells: markers are the peaks
        (``skimage.feature.peak_local_max``) of the Gaussian-smoothed
        (sigma 1) Euclidean distance transform, flooded on its negative
        within the foreground.
    min_distance : int, optional
        Minimum distance between two watershed markers in pixels. By
        default half the equivalent radius ``sqrt(area / pi)`` of the median
        object (objects of at least ``min_size`` pixels), at least 1.

    Returns
    -------
    labels : (H, W) int32 ndarray
        0 background, objects numbered 1..N.

    Notes
    -----
    Connected components use 8-connectivity (``skimage.measure.label``'s
    default in 2-D): pixels touching by a corner belong to the same object.
    Non-finite probabilities are rejected.

    Examples
    --------
    >>> p = np.zeros((20, 20)); p[2:12, 2:12] = 0.9
    >>> lab = instances_from_probability(p, min_size=10, declump="none")
    >>> int(lab.max()), int((lab == 1).sum())
    (1, 100)
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"prob must be a 2-D (H, W) array, got shape {prob.shape}")
    if declump not in _DECLUMP:
        raise ValueError(f"declump must be one of {_DECLUMP}, got {declump!r}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if min_distance is not None and int(min_distance) < 1:
        raise ValueError(f"min_distance must be >= 1, got {min_distance}")
    if prob.size == 0:
        return np.zeros(prob.shape, dtype=np.int32)
    if not np.all(np.isfinite(prob)):
        raise ValueError("prob contains NaN or infinite values")

    labels = cc_label(prob > threshold, connectivity=2)
    objs = ndi.find_objects(labels)
    if not objs:
        return np.zeros(prob.shape, dtype=np.int32)
    touching = False
    if fill_holes:
        # a hole is inside its object's box: the boxes stay
        labels, touching = _fill_holes(labels, lambda: objs)
    areas = np.bincount(labels.ravel())
    if declump == "watershed":
        md = _auto_min_distance(areas, min_size) if min_distance is None else int(min_distance)
        ids, parts, sizes = _split_objects(labels, objs, areas, md, touching)
    else:
        ids, parts, sizes = np.arange(areas.size), [], areas
    # remove_small_objects then relabel_sequential, as one look-up table
    keep = sizes >= max(int(min_size), 1)
    keep[0] = False
    new = (np.cumsum(keep) * keep).astype(np.int32)
    if parts is None:  # ids is the label image already
        return new[ids]
    out = new[ids][labels]
    for sl, obj, flood in parts:
        out[sl][obj] = new[flood]
    return out


# --------------------------------------------------------------------------- under-calls
#: :func:`under_called_share`: a network that misses a cell often still outlines it faintly
#: (``p`` 0.1-0.3 on a ring, near 0 inside); where it finds one the faint part is a thin halo
#: joined to the called part. Parts of the filled ``p > UNDER_LOW`` of at least
#: UNDER_MIN_PART pixels whose called share is under UNDER_CALLED are "seen, not called"; an
#: image is named (:func:`under_called`) when they hold at least UNDER_LIMIT of all parts'
#: pixels and UNDER_FLOOR of the image. Set on 21 preset models' val masks, checked on 47
#: other fluo val images (docs/benchmarks.md, "Images called far less cell than they show")
UNDER_LOW, UNDER_CALLED, UNDER_MIN_PART = 0.1, 0.3, 30
UNDER_LIMIT, UNDER_FLOOR = 0.3, 0.01


def under_called_share(prob: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """How much of what the network saw as cells it did not call cell.

    The holes of ``prob > UNDER_LOW`` (with the mask ``prob > threshold``) are filled
    and its connected parts of at least :data:`UNDER_MIN_PART` pixels taken; a part whose
    filled mask covers under :data:`UNDER_CALLED` of it is *seen, not called*.

    Parameters
    ----------
    prob : (H, W) ndarray
        Foreground probability.
    threshold : float, optional
        The mask's threshold (``prob > threshold`` is cell).

    Returns
    -------
    share_of_seen : float
        The uncalled pixels of the seen-not-called parts over all parts' pixels (0 when
        there is no part).
    share_of_image : float
        The same pixels over the image's pixels.

    Examples
    --------
    A faint ring the network did not call, beside a called cell:

    >>> yy, xx = np.mgrid[:64, :64]
    >>> prob = np.zeros((64, 64), np.float32)
    >>> prob[(yy - 16) ** 2 + (xx - 16) ** 2 < 64] = 0.9              # called
    >>> r2 = (yy - 40) ** 2 + (xx - 40) ** 2
    >>> prob[(r2 >= 64) & (r2 < 100)] = 0.2                          # seen, not called
    >>> [round(v, 3) for v in under_called_share(prob)]
    [0.612, 0.074]
    """
    parts, area, missed, in_mask, _ = _seen_parts(prob, threshold)
    uncalled = float((area - in_mask)[missed].sum())
    total = float(area[area >= UNDER_MIN_PART].sum())
    return (uncalled / total if total else 0.0), uncalled / max(1, parts.size)


def seen_not_called(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The pixels the network saw as cells and did not call: the uncalled pixels of the
    *seen, not called* parts of :func:`under_called_share` (where strokes would help).

    >>> prob = np.zeros((40, 40), np.float32); prob[5:15, 5:15] = 0.2; prob[25:35, 25:35] = 0.9
    >>> int(seen_not_called(prob).sum())
    100
    """
    parts, _, missed, _, called = _seen_parts(prob, threshold)
    return np.concatenate(([False], missed))[parts] & ~called


def _seen_parts(prob, threshold):
    """(parts label image, each part's pixels, which parts are seen-not-called, each part's
    called pixels, the filled mask) of :func:`under_called_share`."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"prob must be (H, W), got shape {prob.shape}")
    called = ndi.binary_fill_holes(prob > threshold)
    seen = ndi.binary_fill_holes((prob > UNDER_LOW) | called)
    parts, n = ndi.label(seen)
    area = np.bincount(parts.ravel(), minlength=n + 1)[1:].astype(np.float64)
    in_mask = np.bincount(parts.ravel(), weights=called.ravel(),
                          minlength=n + 1)[1:].astype(np.float64)
    missed = (area >= UNDER_MIN_PART) & (in_mask < UNDER_CALLED * area)
    return parts, area, missed, in_mask, called


def under_called(prob: np.ndarray, threshold: float = 0.5) -> bool:
    """Whether the network saw far more cells in an image than it called
    (:func:`under_called_share` at least :data:`UNDER_LIMIT` of what it saw and
    :data:`UNDER_FLOOR` of the image): its mask may miss cells there.

    >>> under_called(np.zeros((8, 8)))
    False
    """
    of_seen, of_image = under_called_share(prob, threshold)
    return of_seen >= UNDER_LIMIT and of_image >= UNDER_FLOOR


# --------------------------------------------------------------------------- object scale
#: the scale factors a model's ``diameter`` may apply to an image: objects are enlarged up
#: to 3x, never shrunk. Shrinking DSB's big fluorescent nuclei to half their size lost IoU on
#: every seed (-0.007 to -0.065 on those images); with MIN_SCALE 1 they stay at their own
#: size and the run gained on all five seeds (docs/benchmarks.md, "Never shrunk")
MIN_SCALE, MAX_SCALE = 1.0, 3.0
#: no image is enlarged past this many pixels (1024 x 1024); one that has them already stays
#: at its own size. A 2048 x 2048 screen image at 3x would be 38 megapixels, 9x the time and
#: memory of a pass; and DSB's 1024 x 1024 brightfield images lost IoU when enlarged, at the
#: forest's size estimate (-0.062, 3 of 3 seeds) and nearer the true size (-0.061 / -0.027)
#: (docs/benchmarks.md, "Never shrunk" and "Not past a megapixel")
MAX_PIXELS = 1024 * 1024
#: objects under this many pixels are left out of a diameter estimate
ESTIMATE_MIN_SIZE = 16


def median_diameter(labels: np.ndarray) -> float:
    """The median equivalent diameter ``sqrt(4 area / pi)`` of the objects of ``labels``.

    NaN when there is no object.

    Examples
    --------
    >>> lab = np.zeros((40, 40), int); lab[:10, :10] = 1; lab[20:, 20:] = 2
    >>> round(median_diameter(lab), 2)
    16.93
    """
    sizes = np.bincount(np.asarray(labels).ravel())[1:]
    sizes = sizes[sizes > 0]
    return float(np.median(np.sqrt(4.0 * sizes / np.pi))) if sizes.size else float("nan")


def estimate_diameter(prob: np.ndarray, threshold: float = 0.5) -> float:
    """The median object diameter (pixels) of a foreground probability map.

    The objects are those of :func:`instances_from_probability` (touching ones split
    by the watershed), without those under :data:`ESTIMATE_MIN_SIZE` pixels. NaN when
    there is none.
    """
    labels = instances_from_probability(prob, threshold=threshold,
                                        min_size=ESTIMATE_MIN_SIZE, declump="watershed")
    return median_diameter(labels)


def scale_for(diameter: float, target: float, shape=None) -> float:
    """The factor that brings objects of ``diameter`` to ``target`` pixels, clipped to
    [:data:`MIN_SCALE`, :data:`MAX_SCALE`]; 1 when either is unknown (NaN) or 0.

    With the image's ``shape`` (``(..., H, W)``) the factor also keeps it within
    :data:`MAX_PIXELS` (never below 1: a bigger image stays at its own size).

    Examples
    --------
    >>> scale_for(12.0, 24.0), scale_for(100.0, 24.0), scale_for(float("nan"), 24.0)
    (2.0, 1.0, 1.0)
    >>> scale_for(12.0, 24.0, shape=(1024, 1024)), scale_for(12.0, 24.0, shape=(256, 1024))
    (1.0, 2.0)
    """
    if not (np.isfinite(diameter) and diameter > 0 and np.isfinite(target) and target > 0):
        return 1.0
    top = MAX_SCALE
    if shape is not None:
        h, w = (int(n) for n in tuple(shape)[-2:])
        top = min(top, max(MIN_SCALE, float(np.sqrt(MAX_PIXELS / max(h * w, 1)))))
    return float(np.clip(target / diameter, MIN_SCALE, top))


def scaled_shape(shape, scale: float) -> tuple:
    """``(H, W)`` times ``scale``, rounded, at least 1 x 1."""
    return tuple(max(1, int(round(n * scale))) for n in shape[-2:])


def resize_image(image: np.ndarray, shape, *, order: int = 1) -> np.ndarray:
    """A ``(C, H, W)`` or ``(H, W)`` array resized to ``shape`` (bilinear with ``order`` 1,
    nearest with 0, which keeps label values), its dtype kept."""
    from skimage.transform import resize

    image = np.asarray(image)
    shape = tuple(int(n) for n in shape)
    if image.shape[-2:] == shape:
        return image
    full = image.shape[:-2] + shape
    out = resize(image, full, order=order, mode="edge", preserve_range=True,
                 anti_aliasing=False)
    return out.astype(image.dtype, copy=False)


def at_diameter(prob_fn, image: np.ndarray, target: float,
                scale: Optional[float] = None) -> tuple:
    """The foreground probability of ``image`` with its objects seen at ``target`` pixels.

    A first pass at the image's own scale estimates the median object diameter
    (:func:`estimate_diameter`); the image is resized by :func:`scale_for` of it, passed
    again, and the probability resized back (bilinear). A model trained with
    ``s2l-train --diameter`` saw its images so (docs/benchmarks.md). A known ``scale``
    skips the first pass.

    Parameters
    ----------
    prob_fn : callable
        ``prob_fn(image)``: the ``(H, W)`` foreground probability of a ``(C, H, W)`` image.
    image : (C, H, W) float ndarray
    target : float
        The diameter the model saw its objects at (pixels).
    scale : float, optional
        The factor to resize by instead of the first pass's estimate (an image a run
        trained on: the factor it trained it at). Positive and finite.

    Returns
    -------
    prob : (H, W) float32 ndarray
    scale : float
        The factor used (1: the first pass is the answer).
    """
    from skimage.transform import resize

    if scale is None:
        first = prob_fn(image)
        scale = scale_for(estimate_diameter(first), target, image.shape)
        if scale == 1.0:
            return first, scale
    elif not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    scale = float(scale)
    if scale == 1.0:
        return np.asarray(prob_fn(image), dtype=np.float32), scale
    h, w = image.shape[-2:]
    prob = prob_fn(resize_image(image, scaled_shape((h, w), scale)))
    prob = resize(prob, (h, w), order=1, mode="edge", preserve_range=True,
                  anti_aliasing=scale > 1)
    return np.clip(prob, 0.0, 1.0).astype(np.float32), scale

"""From a foreground probability map to an instance label image.

threshold -> connected components -> fill holes per object -> (optional)
distance-transform watershed to split touching cells -> remove small
objects -> relabel 1..N.

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
from skimage.feature import peak_local_max
from skimage.measure import label as cc_label
from skimage.morphology import remove_small_objects as _sk_remove_small_objects
from skimage.segmentation import relabel_sequential as _sk_relabel_sequential
from skimage.segmentation import watershed

__all__ = [
    "DEFAULT_DECLUMP",
    "instances_from_probability",
    "fill_holes_per_object",
    "relabel_sequential",
    "remove_small_objects",
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
    out = labels.copy()
    # a hole of any object is also a hole of the whole foreground: only objects
    # next to one of those can have a hole (on noisy maps, few of thousands)
    holes = ndi.binary_fill_holes(labels > 0) & (labels == 0)
    if not holes.any():
        return out
    near = labels[ndi.binary_dilation(holes, structure=np.ones((3, 3), bool))]
    candidates = set(np.unique(near[near > 0]).tolist())
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None or i not in candidates:
            continue
        obj = labels[sl] == i
        filled = ndi.binary_fill_holes(obj)
        new = filled & ~obj & (out[sl] == 0)
        if new.any():
            out[sl][new] = i
    return out


def _auto_min_distance(labels: np.ndarray, min_size: int) -> int:
    """Half the equivalent radius of the median object (at least 1 px)."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    big = areas[areas >= max(min_size, 1)]
    if big.size:
        areas = big
    if areas.size == 0:
        return 1
    radius = math.sqrt(float(np.median(areas)) / math.pi)
    return max(1, int(round(0.5 * radius)))


def _declump_watershed(labels: np.ndarray, min_distance: int) -> np.ndarray:
    """Split touching objects with a watershed of the smoothed distance map."""
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


def instances_from_probability(
    prob: np.ndarray,
    *,
    threshold: float = 0.5,
    min_size: int = 64,
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
        are filled and clumps split). 0 or 1 keeps everything.
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
    if labels.max() == 0:
        return np.zeros(prob.shape, dtype=np.int32)
    if fill_holes:
        labels = fill_holes_per_object(labels)
    if declump == "watershed":
        md = _auto_min_distance(labels, min_size) if min_distance is None else int(min_distance)
        labels = _declump_watershed(labels, md)
    if min_size > 1:
        labels = remove_small_objects(labels, min_size)
    return relabel_sequential(labels)

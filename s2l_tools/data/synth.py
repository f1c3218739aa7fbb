"""Synthetic scribbles from full instance annotations (paper Table 2).

Scribble2Label's robustness study trains on scribbles made from the full
annotations of a data set, at ratios of 10, 30, 50 and 100 % (Wu et al.'s
recipe): the foreground scribbles are skeletons of the cells, the background
scribbles segments of the background's skeleton. Two protocols:

- ``skeleton`` (the paper's): :func:`synthesize_scribbles` makes one
  scribble mask, 1-px skeletons;
- ``hand``: :func:`handdrawn_rois` imitates what a person draws in Fiji,
  short wobbly line ROIs 1-3 px wide inside some cells, across the open
  background and just beside cells. They become a scribble mask through
  :func:`s2l_tools.io.roi.rois_to_scribbles`, as ``s2l-scribbles`` converts a
  user's RoiSet.zip.

:func:`synthesize_folder` (the command ``s2l-synth``, :mod:`s2l_tools.cli.synth`)
makes scribbles for every label image of a data folder::

    DATA/masks/<stem>.tif      instance labels (0 = background, 1..N = cells)
    DATA/scribbles/<stem>.tif  written: uint8 scribble mask (s2l_tools.labels)
    DATA/rois/<stem>.zip       written with --rois or --protocol hand: Fiji ROIs
                               (hand: the strokes the mask is converted from)
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential

from s2l_tools.errors import S2LError, S2LWarning
from s2l_tools.io.images import write_tiff
from s2l_tools.labels import (
    BACKGROUND,
    BACKGROUND_CLASS,
    FOREGROUND,
    FOREGROUND_CLASS,
    GROUP_BACKGROUND,
    GROUP_FOREGROUND,
)

#: background scribbles keep this many pixels between themselves and any cell
BACKGROUND_MARGIN = 2
#: a background branch is cut where it deviates more than this from a straight line (px)
CORNER_TOLERANCE = 2.0
#: background segments shorter than this (pixels) are dropped, unless none is longer
MIN_SEGMENT_LENGTH = 5
#: ``background="near"``: the background scribbles run this many pixels outside the cells
NEAR_DISTANCE = 3
#: where background scribbles go (see :func:`synthesize_scribbles`)
BACKGROUND_STYLES = ("skeleton", "near", "mixed")
#: ``s2l-synth --protocol``: :func:`synthesize_scribbles` or :func:`handdrawn_rois`
PROTOCOLS = ("skeleton", "hand")

_EIGHT = np.ones((3, 3), dtype=bool)


def _warn_no_background() -> None:
    """The warning of both protocols for a label image that is all cells."""
    warnings.warn(
        "the label image has no background pixel: foreground scribbles only; "
        "Scribble2Label needs background scribbles too",
        S2LWarning,
        stacklevel=3,
    )


def _warn_no_cells() -> None:
    """The warning of both protocols for a label image without cells."""
    warnings.warn(
        "the label image has no cell: background scribbles only; "
        "Scribble2Label needs foreground scribbles too",
        S2LWarning,
        stacklevel=3,
    )


def synthesize_scribbles(
    labels: np.ndarray,
    *,
    ratio: float,
    rng: np.random.Generator | None = None,
    seed=None,
    background: str = "skeleton",
) -> np.ndarray:
    """Synthetic scribbles from a full instance label image.

    Parameters
    ----------
    labels : (H, W) integer ndarray
        Instance labels: 0 = background, 1..N = cells (ids need not be
        consecutive; a cell may be several pieces).
    ratio : float
        Fraction of the cells to scribble, in (0, 1] (the paper's 10/30/50/100 %
        are 0.1, 0.3, 0.5 and 1.0).
    rng : numpy.random.Generator, optional
        Random generator for the choice of cells and background segments.
    seed : int or sequence of int, optional
        Seed for a new generator (``np.random.default_rng(seed)``), when ``rng``
        is not given. Neither: a fresh, unseeded generator.
    background : {'skeleton', 'near', 'mixed'}
        Where the background scribbles go: ``'skeleton'`` (the paper's) on the
        background's skeleton, midway between cells; ``'near'`` on the
        outline of the cells grown by :data:`NEAR_DISTANCE` pixels, just
        outside the cells; ``'mixed'``: half of them near the cells, half on
        the skeleton, the way a biologist scribbles both the open background
        and the gaps beside cells.

    Returns
    -------
    scribbles : (H, W) uint8 ndarray
        0 = unlabeled, 1 = background, 2 = foreground (:mod:`s2l_tools.labels`);
        every scribble is 1 pixel wide.

    Raises
    ------
    ValueError
        ``ratio`` outside (0, 1], ``labels`` not a non-empty 2-D integer array
        or with negative values, both ``rng`` and ``seed`` given, or an
        unknown ``background``.

    Warns
    -----
    S2LWarning
        The image has no cell (background scribbles only) or no background
        (foreground scribbles only): Scribble2Label needs both classes.

    Notes
    -----
    *Foreground.* A foreground "piece" is the whole skeleton of one cell
    (``skimage.morphology.skeletonize`` of its mask; a cell too small to have
    one gives the pixel nearest its centroid). ``k = max(1, round(ratio * N))``
    of the ``N`` cells are drawn at random and scribbled entirely; the others
    get no scribble at all. So 10 % really means "one cell in ten is
    scribbled", the way an annotator would work, and the scribbled area grows
    in proportion to the ratio. (Counting the branches of the skeletons as the
    pieces instead would give nearly the same numbers for round cells, whose
    skeleton is one branch, but would scatter short spurs over many cells of
    irregular shape.)

    *Background.* The background minus a margin of
    :data:`BACKGROUND_MARGIN` pixels around every cell is skeletonized (the
    image border counts as a boundary). The skeleton is cut at its junctions
    and at its corners: each branch is traced, approximated by a polygon
    (``skimage.measure.approximate_polygon``, tolerance
    :data:`CORNER_TOLERANCE` px) and split at the polygon's vertices.
    Segments shorter than :data:`MIN_SEGMENT_LENGTH` pixels are dropped
    (unless there is no other). ``k`` segments are drawn at random, as many as
    foreground pieces (all of them if there are fewer). So background
    scribbles never touch a cell. Without any cell, ``max(1, round(ratio * S))``
    of the ``S`` segments are kept.

    *Background near the cells* (``background="near"``, not the paper's). The
    segments are cut the same way from the outline of the cells dilated by
    :data:`NEAR_DISTANCE` pixels, so each runs that far from a cell (where
    two cells are closer than twice that, the outline between them is left
    out). Skeleton background scribbles label only pixels far from every
    cell, which leaves the cell boundary to the network's guess; these pin it,
    but leave the open background unlabeled. ``'mixed'`` takes ``k // 2``
    segments near the cells and the other ``k - k // 2`` from the skeleton
    (a single segment is a skeleton one), each set drawn from its own
    permutation. docs/benchmarks.md measures the three. If the outline has
    no segment, the skeleton's are used.

    At least one pixel of each class present in ``labels`` is scribbled (if
    the background is too thin for a skeleton, its pixel farthest from the
    cells). The random choices are the first ``k`` elements of one
    permutation, so with the same seed a larger ratio scribbles a superset of
    a smaller one.

    Examples
    --------
    >>> from skimage.draw import disk
    >>> labels = np.zeros((64, 64), np.uint16)
    >>> for i, (r, c) in enumerate([(16, 16), (16, 48), (48, 16), (48, 48)]):
    ...     labels[disk((r, c), 9)] = i + 1
    >>> s = synthesize_scribbles(labels, ratio=0.5, seed=0)
    >>> s.dtype, sorted(np.unique(s).tolist())
    (dtype('uint8'), [0, 1, 2])
    >>> bool(np.all(labels[s == 2] > 0) and np.all(labels[s == 1] == 0))
    True
    """
    labels, rng = _checked(labels, ratio, rng, seed)
    if background not in BACKGROUND_STYLES:
        raise ValueError(
            f"background={background!r}: must be one of {', '.join(BACKGROUND_STYLES)}"
        )

    out = np.zeros(labels.shape, dtype=np.uint8)
    objects = ndi.find_objects(labels)
    n_cells = len(objects)
    k = max(1, math.floor(ratio * n_cells + 0.5)) if n_cells else 0
    # one permutation, prefixes nest: a larger ratio scribbles a superset
    for index in rng.permutation(n_cells)[:k]:
        _skeletonize_cell(labels, int(index) + 1, objects[index], out)

    cells = labels > 0
    if cells.all():
        _warn_no_background()
        return out
    skeleton = _background_segments(cells)
    near = _near_segments(cells) if background != "skeleton" and n_cells else []
    if n_cells == 0:
        _warn_no_cells()
        k = max(1, math.floor(ratio * len(skeleton) + 0.5))
    if background == "mixed" and near and skeleton:  # k // 2 beside cells, the rest midway
        picks = [(skeleton, k - k // 2), (near, k // 2)]
    elif background != "skeleton" and near:
        picks = [(near, k)]
    else:
        picks = [(skeleton, k)]
    if picks[0][0]:
        for pool, count in picks:
            for index in rng.permutation(len(pool))[:count]:
                rows, cols = pool[index]
                out[rows, cols] = BACKGROUND
    else:  # background too thin for a skeleton: its pixel farthest from the cells
        distance = ndi.distance_transform_edt(~cells)
        out[np.unravel_index(np.argmax(distance), distance.shape)] = BACKGROUND
    return out


def _checked(labels, ratio, rng, seed) -> tuple[np.ndarray, np.random.Generator]:
    """Validate the common arguments: (labels with ids 1..N, generator)."""
    if not (isinstance(ratio, (int, float, np.integer, np.floating)) and 0 < ratio <= 1):
        raise ValueError(
            f"ratio={ratio!r}: must be a number in (0, 1], the fraction of cells to "
            "scribble (e.g. 0.1 for 10 %)"
        )
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"labels: expected a non-empty 2-D (H, W) array, got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels: expected integer instance labels, got {labels.dtype}; "
            "use skimage.measure.label to label a binary mask"
        )
    if rng is not None and seed is not None:
        raise ValueError("give either rng or seed, not both")
    if rng is None:
        rng = np.random.default_rng(seed)
    if labels.min() < 0:
        raise ValueError("labels: negative label values; instance labels are 0 (background), 1..N")
    # ids 1..N: find_objects lists every id up to the largest
    return relabel_sequential(labels)[0], rng


def _skeletonize_cell(labels, label, bbox, out) -> None:
    """Write the skeleton of cell ``label`` (bounding box ``bbox``) into ``out``."""
    from skimage.morphology import skeletonize

    mask = labels[bbox] == label
    skeleton = skeletonize(mask)
    if not skeleton.any():  # tiny cell: the cell pixel nearest its centroid
        rows, cols = np.nonzero(mask)
        nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
        skeleton = np.zeros_like(mask)
        skeleton[rows[nearest], cols[nearest]] = True
    out[bbox][skeleton] = FOREGROUND


def _background_segments(cells: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Background skeleton cut at junctions and corners: a list of ``(rows, cols)``."""
    from skimage.morphology import disk, skeletonize

    near = ndi.binary_dilation(cells, structure=disk(BACKGROUND_MARGIN))
    skeleton = skeletonize(~near)
    segments = [s for s in _cut(skeleton) if len(s[0]) >= MIN_SEGMENT_LENGTH]
    return segments or _cut(skeleton)


def _near_segments(cells: np.ndarray, distance: int = NEAR_DISTANCE,
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outline of ``cells`` grown by ``distance`` px, cut into segments."""
    from skimage.morphology import disk, skeletonize

    grown = ndi.binary_dilation(cells, structure=disk(distance))
    outline = grown & ~ndi.binary_erosion(grown, structure=_EIGHT, border_value=1)
    # off the outline between cells closer than 2 x distance: it would touch them
    outline &= ~ndi.binary_dilation(cells, structure=disk(distance - 1))
    return [s for s in _cut(skeletonize(outline)) if len(s[0]) >= MIN_SEGMENT_LENGTH]


def _cut(skeleton: np.ndarray, *, corners: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut a 1-px skeleton into segments at junctions (and at corners), each in path order."""
    from skimage.measure import approximate_polygon

    n_neighbours = ndi.convolve(skeleton.astype(np.uint8), np.array(
        [[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8), mode="constant")
    branches = skeleton & (n_neighbours < 3)  # junction pixels removed
    points = np.argwhere(branches)
    if len(points) == 0:
        return []
    # neighbours of each branch pixel (at most 2 once junctions are gone)
    height, width = skeleton.shape
    index = np.full((height + 2, width + 2), -1, dtype=np.int64)
    index[points[:, 0] + 1, points[:, 1] + 1] = np.arange(len(points))
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    neighbours = np.stack(
        [index[points[:, 0] + 1 + dr, points[:, 1] + 1 + dc] for dr, dc in offsets], axis=1
    )
    neighbours = -np.sort(-neighbours, axis=1)[:, :2]  # valid (>= 0) first
    degree = (neighbours >= 0).sum(axis=1)
    first, second = neighbours[:, 0].tolist(), neighbours[:, 1].tolist()

    visited = np.zeros(len(points), dtype=bool)
    starts = np.concatenate([np.flatnonzero(degree <= 1), np.arange(len(points))])
    segments = []
    for start in starts.tolist():  # paths from their ends first, then loops
        if visited[start]:
            continue
        path, current = [], start
        while current >= 0:
            visited[current] = True
            path.append(current)
            a, b = first[current], second[current]
            current = (
                a if a >= 0 and not visited[a] else b if b >= 0 and not visited[b] else -1
            )
        coords = points[path]
        if len(coords) < 3 or not corners:
            segments.append((coords[:, 0], coords[:, 1]))
            continue
        vertices = approximate_polygon(coords, tolerance=CORNER_TOLERANCE)
        # the vertices are path points, in order: find their positions
        position = {(r, c): i for i, (r, c) in enumerate(coords.tolist())}
        cuts = sorted({position[(int(r), int(c))] for r, c in vertices} | {0, len(coords)})
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            if hi > lo:
                segments.append((coords[lo:hi, 0], coords[lo:hi, 1]))
    return segments


# --------------------------------------------------------------------------- hand-drawn strokes

#: stroke widths (px) of hand-drawn scribbles; each stroke gets one at random
STROKE_WIDTHS = (1, 2, 3)
#: a vertex of a hand-drawn stroke wobbles at most this far across the stroke (px)
HAND_JITTER = 1.0
#: hand-drawn strokes across the open background follow its ridge where it is at least
#: this far from every cell (px)
FAR_DISTANCE = 8
#: stroke colours shown in Fiji: yellow foreground, cyan background (ARGB bytes)
_COLORS = {FOREGROUND_CLASS: b"\xff\xff\xff\x00", BACKGROUND_CLASS: b"\xff\x00\xff\xff"}
_PREFIXES = {FOREGROUND_CLASS: "fg", BACKGROUND_CLASS: "bg"}
#: lengths (px) of background strokes across the open background and beside a cell
_FAR_LENGTH, _NEAR_LENGTH = (15, 50), (6, 20)
#: shortened versions of a stroke tried before it is drawn thinner (or otherwise)
_MAX_TRIES = 40


def handdrawn_rois(
    labels: np.ndarray,
    *,
    ratio: float,
    seed=None,
    rng: np.random.Generator | None = None,
) -> list:
    """ImageJ line ROIs imitating a person's scribbles on an instance label image.

    Parameters
    ----------
    labels : (H, W) integer ndarray
        Instance labels: 0 = background, 1..N = cells (ids need not be
        consecutive).
    ratio : float
        Fraction of the cells to scribble, in (0, 1].
    seed : int or sequence of int, optional
        Seed for a new generator (``np.random.default_rng(seed)``), when ``rng``
        is not given. Neither: a fresh, unseeded generator.
    rng : numpy.random.Generator, optional
        Random generator for every choice.

    Returns
    -------
    rois : list of roifile.ImagejRoi
        Segmented-line ROIs (``ROI_TYPE.POLYLINE``, integer vertices) with a
        stroke width of 1, 2 or 3 px: first the foreground strokes, in group 1
        and named ``fg-0001``, ``fg-0002``..., then the background strokes, in
        group 2 and named ``bg-0001``... (the classes
        :func:`s2l_tools.io.roi.roi_class` reads; colours yellow and cyan). Write
        them to a RoiSet.zip for Fiji; :func:`s2l_tools.io.roi.rois_to_scribbles`
        turns them into a scribble mask as ``s2l-scribbles`` does.

    Raises
    ------
    ValueError
        ``ratio`` outside (0, 1], ``labels`` not a non-empty 2-D integer array
        or with negative values, or both ``rng`` and ``seed`` given.

    Warns
    -----
    S2LWarning
        The image has no cell (background strokes only) or no background
        (foreground strokes only): Scribble2Label needs both classes.

    See Also
    --------
    synthesize_scribbles : the paper's protocol (whole skeletons, 1 px wide).

    Notes
    -----
    *Foreground.* ``k = max(1, round(ratio * N))`` of the ``N`` cells are
    drawn at random; each gets 1 or 2 short strokes. A stroke is a polyline
    of 2 to 6 vertices, 3 px to 60 % of the cell's length long (the major
    axis of its inertia ellipse), roughly along that axis (angle spread
    0.3 rad) near the centroid; every vertex wobbles across the stroke by up
    to :data:`HAND_JITTER` px. The vertices are moved to the nearest pixel
    where the pen fits inside the cell (the cell eroded by one pixel for
    widths 2 and 3), and the stroke is rasterised exactly as ImageJ draws it
    (:func:`s2l_tools.io.roi.rasterize_roi`): if a pixel falls outside the cell
    (a concave cell), vertices are dropped from the ends until none does,
    else the stroke is redrawn 1 px wide, else it is a dot on the cell's
    innermost pixel. So every foreground pixel lies in its cell.

    *Background.* As many strokes as scribbled cells: the first, third...
    (``k - k // 2`` of them) across the open background, 15 to 50 px along
    its distance ridge (``skimage.morphology.medial_axis``, cut at junctions)
    where that is at least :data:`FAR_DISTANCE` px from every cell; the
    second, fourth... (``k // 2``) beside a cell, 6 to 20 px along the
    outline of the cells grown by :data:`NEAR_DISTANCE` px (one more for
    strokes wider than 1 px), so roughly parallel to it. The vertices
    wobble as above. Every pixel of a background stroke is more than
    :data:`BACKGROUND_MARGIN` px from every cell, checked on the rasterised
    stroke, which is shortened or thinned as above, or else drawn 1 px wide
    through every pixel of its stretch. If there is no place beside a cell,
    the stroke goes across the open background, and the other way round;
    without any cell, ``max(1, round(ratio * S))`` strokes go on the ``S``
    stretches of the ridge (at least :data:`FAR_DISTANCE` px from the image
    border). A background too thin for any of this gets one 1-pixel stroke
    on its pixel farthest from the cells, which may then be closer than the
    margin.

    Each cell's strokes, and the ``j``-th background stroke, come from their
    own generator seeded from ``rng``, so with the same seed a larger ratio
    draws a superset of the strokes of a smaller one.

    Examples
    --------
    >>> from skimage.draw import disk
    >>> from s2l_tools.io.roi import rois_to_scribbles
    >>> labels = np.zeros((96, 96), np.uint16)
    >>> for i, (r, c) in enumerate([(20, 20), (20, 70), (70, 20), (70, 70)]):
    ...     labels[disk((r, c), 10)] = i + 1
    >>> rois = handdrawn_rois(labels, ratio=0.5, seed=0)
    >>> sorted({roi.name[:2] for roi in rois})
    ['bg', 'fg']
    >>> s = rois_to_scribbles(rois, labels.shape)
    >>> bool(np.all(labels[s == 2] > 0) and np.all(labels[s == 1] == 0))
    True
    """
    labels, rng = _checked(labels, ratio, rng, seed)

    objects = ndi.find_objects(labels)
    n_cells = len(objects)
    k = max(1, math.floor(ratio * n_cells + 0.5)) if n_cells else 0
    # the same draws for every ratio: prefixes nest, each stroke has its own generator
    order = rng.permutation(n_cells)
    fg_key, bg_key = (int(v) for v in rng.integers(2**63, size=2))
    strokes = []  # (class, (n, 2) int64 row/col vertices, width)
    for index in order[:k].tolist():
        cell_rng = np.random.default_rng([fg_key, index])
        strokes += [(FOREGROUND_CLASS, points, width) for points, width
                    in _cell_strokes(labels, index + 1, objects[index], cell_rng)]
    cells = labels > 0
    if cells.all():
        _warn_no_background()
    else:
        if n_cells == 0:
            _warn_no_cells()
        strokes += [(BACKGROUND_CLASS, points, width) for points, width
                    in _background_strokes(cells, k, ratio, rng, bg_key)]

    group_of = {FOREGROUND_CLASS: GROUP_FOREGROUND, BACKGROUND_CLASS: GROUP_BACKGROUND}
    counts = dict.fromkeys(_PREFIXES, 0)
    rois = []
    for cls, points, width in strokes:
        counts[cls] += 1
        roi = _polyline(points, width, name=f"{_PREFIXES[cls]}-{counts[cls]:04d}")
        roi.group = group_of[cls]
        roi.stroke_color = _COLORS[cls]
        rois.append(roi)
    return rois


def _polyline(points: np.ndarray, width: int, name: str = "stroke"):
    """An integer segmented-line ROI through ``points`` ((n, 2) rows, cols)."""
    from roifile import ROI_OPTIONS, ROI_TYPE, ImagejRoi

    roi = ImagejRoi.frompoints(np.asarray(points)[:, ::-1].astype(np.int32), name=name)
    roi.roitype = ROI_TYPE.POLYLINE
    roi.options = ROI_OPTIONS(0)
    roi.stroke_width = int(width)
    return roi


def _nearest(allowed: np.ndarray) -> np.ndarray | None:
    """(2, H, W): for every pixel, the row and column of the nearest ``allowed`` one."""
    if not allowed.any():
        return None
    return ndi.distance_transform_edt(~allowed, return_distances=False, return_indices=True)


def _fit(points, width, nearest, origin, inside, shape) -> np.ndarray | None:
    """``points`` moved into the allowed region and shortened until ``inside`` holds.

    ``nearest`` is :func:`_nearest` of the region where the pen may be placed,
    for a crop whose corner is ``origin``; ``inside(mask)`` checks the stroke's
    pixels as ImageJ draws them at ``width``. Returns the vertices, or None.
    """
    from s2l_tools.io.roi import rasterize_roi

    if nearest is None:
        return None
    local = np.clip(points - origin, 0, np.array(nearest.shape[1:]) - 1)
    points = nearest[:, local[:, 0], local[:, 1]].T + origin
    points = points[np.r_[True, np.any(points[1:] != points[:-1], axis=1)]]
    if len(points) == 1:  # collapsed onto one pixel: a dot
        points = np.vstack([points, points])
    tries = 0
    for n in range(len(points), 1, -1):  # drop vertices from the ends until it fits
        for start in range(len(points) - n + 1):
            tries += 1
            if tries > _MAX_TRIES:
                return None
            candidate = points[start:start + n]
            mask = rasterize_roi(_polyline(candidate, width), shape)
            if mask.any() and inside(mask):
                return candidate
    return None


def _wobble(points: np.ndarray, across: np.ndarray, rng) -> np.ndarray:
    """Round ``points`` after moving each by up to HAND_JITTER px along ``across``."""
    shift = np.clip(rng.normal(0.0, HAND_JITTER / 2, len(points)), -HAND_JITTER, HAND_JITTER)
    return np.round(points + shift[:, None] * across).astype(np.int64)


def _cell_strokes(labels, label, bbox, rng) -> list[tuple[np.ndarray, int]]:
    """1 or 2 short strokes inside cell ``label``: a list of (vertices, width)."""
    crop = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in bbox)
    origin = np.array([crop[0].start, crop[1].start])
    mask = labels[crop] == label
    coords = np.argwhere(mask).astype(np.float64)
    centre = coords.mean(axis=0)
    if len(coords) > 1:
        variances, axes = np.linalg.eigh(np.cov(coords.T))
        variances = np.maximum(variances, 0.0)
        length, breadth = 4 * math.sqrt(variances[1]), 4 * math.sqrt(variances[0])
        axis_angle = math.atan2(axes[0, 1], axes[1, 1])  # (row, col) of the major axis
    else:
        length = breadth = axis_angle = 0.0
    nearest = {}

    def inside(stroke):
        return bool(np.all(labels[stroke] == label))

    strokes = []
    for _ in range(int(rng.integers(1, 3))):
        width = int(rng.choice(STROKE_WIDTHS))
        top = 0.6 * length
        stroke_length = rng.uniform(min(3.0, top), top)
        angle = axis_angle + rng.normal(0.0, 0.3)
        along = np.array([math.sin(angle), math.cos(angle)])
        across = np.array([along[1], -along[0]])
        slack = max(0.0, (length - stroke_length) / 2)
        middle = (centre + along * rng.uniform(-0.5, 0.5) * slack
                  + across * rng.uniform(-0.15, 0.15) * breadth)
        n = max(2, min(6, math.ceil(stroke_length / 5) + 1))
        t = np.linspace(-stroke_length / 2, stroke_length / 2, n)
        points = _wobble(middle + t[:, None] * along, across, rng) + origin
        for w in dict.fromkeys((width, 1)):  # as drawn, else 1 px wide
            wide = w > 1
            if wide not in nearest:
                allowed = ndi.binary_erosion(mask, _EIGHT, border_value=0) if wide else mask
                nearest[wide] = _nearest(allowed)
            fitted = _fit(points, w, nearest[wide], origin, inside, labels.shape)
            if fitted is not None:
                strokes.append((fitted, w))
                break
        else:  # no stretch of it fits even 1 px wide: a dot on the cell's innermost pixel
            depth = ndi.distance_transform_edt(mask)
            point = np.array(np.unravel_index(np.argmax(depth), mask.shape)) + origin
            strokes.append((np.vstack([point, point]), 1))
    return strokes


def _far_runs(cells: np.ndarray, distance: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stretches of the background's ridge at least FAR_DISTANCE px from the cells."""
    from skimage.morphology import disk, medial_axis

    free = ~ndi.binary_dilation(cells, structure=disk(BACKGROUND_MARGIN))
    # the image border bounds it too; a fixed rng: its tie-breaking is random
    ridge = medial_axis(np.pad(free, 1), rng=0)[1:-1, 1:-1]
    branches = _cut(ridge, corners=False)
    runs = []
    for rows, cols in branches:
        far = np.r_[0, (distance[rows, cols] >= FAR_DISTANCE).astype(np.int8), 0]
        edges = np.flatnonzero(np.diff(far))
        for lo, hi in zip(edges[::2].tolist(), edges[1::2].tolist()):
            if hi - lo >= MIN_SEGMENT_LENGTH:
                runs.append((rows[lo:hi], cols[lo:hi]))
    long_runs = [r for r in runs if len(r[0]) >= _FAR_LENGTH[0]]
    return (long_runs or runs or [b for b in branches if len(b[0]) >= MIN_SEGMENT_LENGTH]
            or branches)


def _along(path, lo: int, hi: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random stretch of ``lo``..``hi`` px of ``path``: (vertices, across each, its pixels)."""
    coords = np.stack(path, axis=1)
    size = len(coords)
    length = int(rng.integers(min(lo, size), min(hi, size) + 1))
    start = int(rng.integers(0, size - length + 1))
    run = coords[start:start + length]
    n = max(2, min(8, math.ceil((length - 1) / 6) + 1))
    index = np.round(np.linspace(0, length - 1, n)).astype(np.intp)
    tangent = (run[np.minimum(index + 2, length - 1)] - run[np.maximum(index - 2, 0)]).astype(float)
    norm = np.hypot(tangent[:, 0], tangent[:, 1])
    norm[norm == 0] = np.inf  # a single pixel: no wobble
    across = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1) / norm[:, None]
    return run[index].astype(np.float64), across, run


def _background_strokes(cells, k, ratio, rng, key) -> list[tuple[np.ndarray, int]]:
    """``k`` background strokes (any number without cells): a list of (vertices, width)."""
    shape = cells.shape
    if cells.any():
        distance = ndi.distance_transform_edt(~cells)
    else:  # nothing to keep away from but the image border
        distance = ndi.distance_transform_edt(np.pad(~cells, 1))[1:-1, 1:-1]
    pools = {"far": _far_runs(cells, distance)}
    if k:
        for d in (NEAR_DISTANCE, NEAR_DISTANCE + 1):
            pools[d] = _near_segments(cells, d)
    orders = {name: rng.permutation(len(pool)) for name, pool in pools.items()}
    count = k or max(1, math.floor(ratio * len(pools["far"]) + 0.5))
    free = distance > BACKGROUND_MARGIN
    origin = np.zeros(2, np.int64)
    nearest = {False: _nearest(free)}

    def inside(stroke):
        return bool(np.all(free[stroke]))

    strokes = []
    for j in range(count):
        stroke_rng = np.random.default_rng([key, j])
        width = int(stroke_rng.choice(STROKE_WIDTHS))
        beside = j % 2 == 1
        wanted = NEAR_DISTANCE + (width > 1) if beside else "far"
        names = [wanted, "far", NEAR_DISTANCE, NEAR_DISTANCE + 1]
        name = next((n for n in names if pools.get(n)), None)
        if name is None:
            break
        pool = pools[name]
        path = pool[orders[name][(j // 2) % len(pool)]]
        points, across, run = _along(path, *(_FAR_LENGTH if name == "far" else _NEAR_LENGTH),
                                     stroke_rng)
        points = _wobble(points, across, stroke_rng)
        # as drawn; else 1 px wide; else 1 px wide through every pixel of the stretch
        attempts = [(width, points)] + [(1, points)] * (width > 1) + [(1, run)]
        for w, points in attempts:
            wide = w > 1
            if wide not in nearest:
                nearest[wide] = _nearest(ndi.binary_erosion(free, _EIGHT, border_value=0))
            fitted = _fit(points, w, nearest[wide], origin, inside, shape)
            if fitted is not None:
                strokes.append((fitted, w))
                break
    if not strokes:  # background too thin: its pixel farthest from the cells
        point = np.array(np.unravel_index(np.argmax(distance), shape))
        strokes.append((np.vstack([point, point]), 1))
    return strokes


# --------------------------------------------------------------------------- data folders

def image_seed(seed: int, stem: str) -> np.random.SeedSequence:
    """Per-image seed from the run's ``seed`` and the image's ``stem``.

    Depends on nothing else, so adding or removing images leaves the
    scribbles of the others unchanged.
    """
    digest = hashlib.sha256(stem.encode("utf-8")).digest()
    return np.random.SeedSequence([seed, int.from_bytes(digest[:8], "little")])


def _existing(folder: Path, stem: str, suffixes) -> list[Path]:
    """Files in ``folder`` that belong to ``stem`` (any of ``suffixes``)."""
    if not folder.is_dir():
        return []
    return [folder / (stem + s) for s in suffixes if (folder / (stem + s)).exists()]


def _check_outputs(targets: list[Path], stem_files: list[list[Path]], what: str,
                   overwrite: bool) -> None:
    """Refuse to replace (or sit beside) existing files, unless ``overwrite``."""
    clash = [p for files in stem_files for p in files]
    if not overwrite and clash:
        more = f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""
        raise S2LError(
            f"{clash[0]}: {what} already exist{more}; pass --overwrite to replace them "
            "(hand-made ones would be lost) or write to another DATA folder"
        )
    for target, files in zip(targets, stem_files):
        other = [p for p in files if p != target]
        if other:
            raise S2LError(
                f"{other[0]}: existing {what} for the same image, which the new {target.name} "
                "would sit beside; move or delete it first"
            )


@dataclass(frozen=True)
class FolderResult:
    """What :func:`synthesize_folder` wrote.

    Attributes
    ----------
    scribbles : list of Path
        ``DATA/scribbles/<stem>.tif``, one per label image, in file order.
    rois : list of Path
        ``DATA/rois/<stem>.zip`` (empty unless ROI sets were written).
    counts : (3,) int64 ndarray
        Pixels of all masks together that are unlabeled, background and
        foreground (indexed by the mask value).
    """

    scribbles: list[Path]
    rois: list[Path]
    counts: np.ndarray

    @property
    def scribble_dir(self) -> Path:
        """The folder of the scribble masks."""
        return self.scribbles[0].parent


def synthesize_folder(
    data: str | os.PathLike,
    *,
    ratio: float,
    seed: int = 0,
    protocol: str = "skeleton",
    background: str = "skeleton",
    write_rois: bool = False,
    overwrite: bool = False,
    on_image: Callable[[Path], None] | None = None,
) -> FolderResult:
    """Synthetic scribbles for every label image of a data folder (``s2l-synth``).

    Reads ``DATA/masks/<stem>.tif`` (or ``.tiff``/``.png``) and writes
    ``DATA/scribbles/<stem>.tif`` (uint8 scribble mask, written as
    ``s2l-scribbles`` writes its masks); with ``write_rois`` or
    ``protocol='hand'`` also ``DATA/rois/<stem>.zip``. Every label image is
    read and checked, and every output checked, before anything is written.

    Parameters
    ----------
    data : path-like
        The data folder (holding ``masks/``).
    ratio : float
        Fraction of the cells to scribble, in (0, 1].
    seed : int
        Seed of the run; image ``<stem>`` uses :func:`image_seed` ``(seed, stem)``.
    protocol : {'skeleton', 'hand'}
        :func:`synthesize_scribbles` (the paper's) or :func:`handdrawn_rois`
        (written as a RoiSet.zip and converted to the mask by
        :func:`s2l_tools.io.roi.rois_to_scribbles`, as ``s2l-scribbles``
        converts a user's ROIs).
    background : {'skeleton', 'near', 'mixed'}
        ``protocol='skeleton'`` only, see :func:`synthesize_scribbles`.
    write_rois : bool
        Also write the masks as ROI sets (always done for ``'hand'``).
    overwrite : bool
        Replace existing scribbles (and ROI sets); else they are an error.
    on_image : callable, optional
        Called with each label image's path once its outputs are written
        (a progress bar).

    Returns
    -------
    result : FolderResult

    Raises
    ------
    ValueError
        ``ratio``, ``protocol`` or ``background`` out of range.
    S2LError
        No ``masks/`` folder or no label image in it, two label images of
        the same name, an unreadable or negative label image, existing
        outputs (without ``overwrite``), or outputs of another suffix for
        the same image.

    Warns
    -----
    S2LWarning
        A label image without cells or without background (prefixed by its
        path).
    """
    from s2l_tools.data.scribbles import write_mask
    from s2l_tools.io.images import LABEL_SUFFIXES, image_stem, list_images, read_labels

    if not (isinstance(ratio, (int, float, np.integer, np.floating)) and 0 < ratio <= 1):
        raise ValueError(f"ratio={ratio!r}: must be a number in (0, 1], the fraction of cells to scribble")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: must be one of {', '.join(PROTOCOLS)}")
    if background not in BACKGROUND_STYLES:
        raise ValueError(f"background={background!r}: must be one of {', '.join(BACKGROUND_STYLES)}")
    hand = protocol == "hand"
    data = Path(data)
    masks_dir, scribble_dir, roi_dir = data / "masks", data / "scribbles", data / "rois"
    if not masks_dir.is_dir():
        raise S2LError(
            f"{masks_dir}: no such folder; DATA must hold masks/<stem>.tif, one instance "
            "label image (0 = background, 1..N = cells) per image"
        )
    files = list_images(masks_dir, suffixes=LABEL_SUFFIXES)
    if not files:
        raise S2LError(
            f"{masks_dir}: no label images (.tif, .tiff, .png); put one instance label image "
            "(0 = background, 1..N = cells) per image there"
        )
    stems = [image_stem(p) for p in files]
    seen: dict[str, Path] = {}
    for stem, path in zip(stems, files):
        if stem in seen:
            raise S2LError(f"{path}: same image name as {seen[stem].name}; keep one of them")
        seen[stem] = path

    targets = [scribble_dir / f"{stem}.tif" for stem in stems]
    _check_outputs(targets, [_existing(scribble_dir, s, LABEL_SUFFIXES) for s in stems],
                   "scribbles", overwrite)
    roi_module, roi_targets = None, []
    if write_rois or hand:
        roi_targets = [roi_dir / f"{stem}.zip" for stem in stems]
        _check_outputs(roi_targets, [_existing(roi_dir, s, (".zip", ".roi")) for s in stems],
                       "ROI sets", overwrite)
        try:
            from s2l_tools.io import roi as roi_module
        except ImportError as exc:
            option = "--protocol hand" if hand else "--rois"
            raise S2LError(
                f"{option}: cannot import s2l_tools.io.roi ({exc}); run without {option}"
            ) from None

    for path in files:  # validate every input before writing anything
        labels = read_labels(path)
        if labels.min() < 0:
            raise S2LError(
                f"{path}: negative label values; instance labels are 0 (background), "
                "1..N (cells)"
            )
        del labels

    counts = np.zeros(3, dtype=np.int64)
    for i, (stem, path) in enumerate(zip(stems, files)):
        labels = read_labels(path)
        rng = np.random.default_rng(image_seed(seed, stem))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", S2LWarning)
            if hand:
                rois = handdrawn_rois(labels, ratio=ratio, rng=rng)
            else:
                mask = synthesize_scribbles(labels, ratio=ratio, rng=rng, background=background)
        for w in caught:
            warnings.warn(f"{path}: {w.message}", w.category, stacklevel=2)
        if hand:
            # written first, then converted as s2l-scribbles converts DATA/rois/<stem>.zip
            # (default ROI groups and names)
            roi_module.write_roiset(rois, roi_targets[i])  # atomic
            mask = roi_module.rois_to_scribbles(roi_module.read_rois(roi_targets[i]), labels.shape,
                                                source=str(roi_targets[i]))
            write_mask(targets[i], mask)
        else:
            write_tiff(targets[i], mask)
            if roi_module is not None:
                roi_module.scribbles_to_roiset(mask, roi_targets[i])  # atomic
        counts += np.bincount(mask.ravel(), minlength=3)[:3]
        if on_image is not None:
            on_image(path)
    return FolderResult(scribbles=targets, rois=roi_targets, counts=counts)

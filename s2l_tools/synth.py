"""Synthetic scribbles from full instance annotations (paper Table 2).

Scribble2Label's robustness study trains on scribbles made from the full
annotations of a data set, at ratios of 10, 30, 50 and 100 % (Wu et al.'s
recipe): the foreground scribbles are skeletons of the cells, the background
scribbles segments of the background's skeleton.

:func:`synthesize_scribbles` makes one scribble mask; ``s2l-synth`` makes one
for every label image of a data folder::

    DATA/masks/<stem>.tif      instance labels (0 = background, 1..N = cells)
    DATA/scribbles/<stem>.tif  written: uint8 scribble mask (s2l_tools.labels)
    DATA/rois/<stem>.zip       written with --rois: the scribbles as Fiji ROIs
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from . import _cli
from .errors import S2LError, S2LWarning
from .labels import BACKGROUND, FOREGROUND

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

_EIGHT = np.ones((3, 3), dtype=bool)


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
    if background not in BACKGROUND_STYLES:
        raise ValueError(
            f"background={background!r}: must be one of {', '.join(BACKGROUND_STYLES)}"
        )
    if rng is None:
        rng = np.random.default_rng(seed)
    labels = _sequential(labels)

    out = np.zeros(labels.shape, dtype=np.uint8)
    objects = ndi.find_objects(labels)
    n_cells = len(objects)
    k = max(1, math.floor(ratio * n_cells + 0.5)) if n_cells else 0
    # one permutation, prefixes nest: a larger ratio scribbles a superset
    for index in rng.permutation(n_cells)[:k]:
        _skeletonize_cell(labels, int(index) + 1, objects[index], out)

    cells = labels > 0
    if cells.all():
        warnings.warn(
            "the label image has no background pixel: foreground scribbles only; "
            "Scribble2Label needs background scribbles too",
            S2LWarning,
            stacklevel=2,
        )
        return out
    skeleton = _background_segments(cells)
    near = _near_segments(cells) if background != "skeleton" and n_cells else []
    if n_cells == 0:
        warnings.warn(
            "the label image has no cell: background scribbles only; "
            "Scribble2Label needs foreground scribbles too",
            S2LWarning,
            stacklevel=2,
        )
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


def _sequential(labels: np.ndarray) -> np.ndarray:
    """``labels`` with ids 1..N when its ids are sparse (``find_objects`` lists max id)."""
    if labels.min() < 0:
        raise ValueError("labels: negative label values; instance labels are 0 (background), 1..N")
    top = int(labels.max())
    if top <= 4 * 1024 * 1024:
        ids = None
    else:
        ids = np.unique(labels)
    if ids is None:
        present = np.bincount(labels.ravel().astype(np.intp, copy=False), minlength=top + 1) > 0
        present[0] = True
        if present.all():
            return labels
        lut = np.cumsum(present) - 1  # 0 -> 0, the k-th present id -> k
        return lut[labels].astype(np.int32)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
    return np.searchsorted(ids, labels).astype(np.int32)


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


def _near_segments(cells: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outline of ``cells`` grown by :data:`NEAR_DISTANCE` px, cut into segments."""
    from skimage.morphology import disk, skeletonize

    grown = ndi.binary_dilation(cells, structure=disk(NEAR_DISTANCE))
    outline = grown & ~ndi.binary_erosion(grown, structure=_EIGHT, border_value=1)
    # off the outline between cells closer than 2 x NEAR_DISTANCE: it would touch them
    outline &= ~ndi.binary_dilation(cells, structure=disk(NEAR_DISTANCE - 1))
    return [s for s in _cut(skeletonize(outline)) if len(s[0]) >= MIN_SEGMENT_LENGTH]


def _cut(skeleton: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut a 1-px skeleton into segments at junctions and at corners."""
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
        if len(coords) < 3:
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


# --------------------------------------------------------------------------- CLI

_DESCRIPTION = """\
Make synthetic scribbles from full instance annotations, as in the paper's
Table 2: the skeletons of a fraction of the cells (foreground) and as many
segments of the background's skeleton (background).

Reads DATA/masks/<stem>.tif (or .tiff/.png; 0 = background, 1..N = cells) and
writes DATA/scribbles/<stem>.tif (uint8: 0 unlabeled, 1 background,
2 foreground); with --rois also DATA/rois/<stem>.zip for Fiji's ROI Manager.
Existing scribbles are never replaced without --overwrite."""

_EXAMPLE = """\
  s2l-synth data/dsb --ratio 0.1 --seed 0          # 10 % of the cells
  s2l-synth data/dsb --ratio 0.3 --seed 0 --rois --overwrite
  s2l-synth data/dsb --ratio 0.3 --background mixed  # background also beside the cells"""


def get_parser():
    """The ``s2l-synth`` argument parser."""
    parser = _cli.make_parser("s2l-synth", _DESCRIPTION, _EXAMPLE)
    parser.add_argument("data", metavar="DATA",
                        help="data folder holding masks/<stem>.tif instance label images")
    parser.add_argument("--ratio", type=float, required=True, default=argparse.SUPPRESS,
                        help="fraction of the cells to scribble, in (0, 1] (paper: 0.1 0.3 0.5 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed (each image gets its own, derived from it and its name)")
    parser.add_argument("--background", choices=BACKGROUND_STYLES, default="skeleton",
                        help="background scribbles on the background's skeleton, midway between "
                        f"cells (the paper's; default); 'near': {NEAR_DISTANCE} px outside the "
                        "cells; 'mixed': half of each, as a biologist draws them")
    parser.add_argument("--rois", action="store_true",
                        help="also write the scribbles as Fiji ROI sets in DATA/rois/<stem>.zip")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing scribbles (and ROI sets with --rois)")
    return parser


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


def _write_tiff(path: Path, mask: np.ndarray) -> None:
    import tifffile

    from ._fsutil import atomic_path

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, mask, compression="zlib", metadata=None)


def _main(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from .images import LABEL_SUFFIXES, image_stem, list_images, read_labels

    ratio, seed = args.ratio, args.seed
    if not 0 < ratio <= 1:
        raise S2LError(
            f"--ratio {ratio:g}: must be in (0, 1], the fraction of cells to scribble "
            "(e.g. 0.1 for 10 %)"
        )
    if seed < 0:
        raise S2LError(f"--seed {seed}: must be 0 or more")
    data = Path(args.data)
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
                   "scribbles", args.overwrite)
    roi_module, roi_targets = None, []
    if args.rois:
        roi_targets = [roi_dir / f"{stem}.zip" for stem in stems]
        _check_outputs(roi_targets, [_existing(roi_dir, s, (".zip", ".roi")) for s in stems],
                       "ROI sets", args.overwrite)
        try:
            from . import roi as roi_module
        except ImportError as exc:
            raise S2LError(
                f"--rois: cannot import s2l_tools.roi ({exc}); run without --rois"
            ) from None

    for path in files:  # validate every input before writing anything
        labels = read_labels(path)
        if labels.min() < 0:
            raise S2LError(
                f"{path}: negative label values; instance labels are 0 (background), "
                "1..N (cells)"
            )
        del labels

    console = Console(stderr=True)
    counts = np.zeros(3, dtype=np.int64)
    with Progress(console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task("scribbling", total=len(files))
        for i, (stem, path) in enumerate(zip(stems, files)):
            labels = read_labels(path)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", S2LWarning)
                mask = synthesize_scribbles(
                    labels, ratio=ratio, rng=np.random.default_rng(image_seed(seed, stem)),
                    background=args.background,
                )
            for w in caught:
                warnings.warn(f"{path}: {w.message}", w.category, stacklevel=1)
            _write_tiff(targets[i], mask)
            if roi_module is not None:
                roi_module.scribbles_to_roiset(mask, roi_targets[i])  # atomic
            counts += np.bincount(mask.ravel(), minlength=3)[:3]
            progress.advance(task)

    rois = f" and {len(files)} ROI sets to {roi_dir}" if roi_module is not None else ""
    print(
        f"wrote {len(files)} scribble mask{'s' if len(files) > 1 else ''} to {scribble_dir}{rois} (ratio {ratio:g}, "
        f"seed {seed}): {counts[BACKGROUND]} background and {counts[FOREGROUND]} "
        "foreground scribble pixels"
    )
    return 0


def main(argv=None) -> int:
    """``s2l-synth``: synthetic scribbles for every label image of a data folder."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

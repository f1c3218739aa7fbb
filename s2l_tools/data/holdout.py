"""Held-out strokes: a seeded share of the scribbles kept out of training to measure the model.

Without full masks nothing tells how good a trained model is. :func:`split_strokes`
keeps a share of the strokes (connected components of one class in one scribble
mask, 8-connected) out of training; the trained model's accuracy on their pixels
is the run's quality signal (``s2l-train --holdout-strokes``).
:func:`count_strokes` counts the strokes of a list of masks.

Masks follow :mod:`s2l_tools.labels`: uint8, 0 unlabeled, 1 background,
2 foreground (``k + 1`` for class ``k``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from s2l_tools import labels as L

__all__ = ["split_strokes", "count_strokes"]

#: mixed into the seed so the split draws numbers of its own (not the crops')
_SEED_TAG = 0x4F1D


def _strokes(mask: np.ndarray, code: int) -> tuple[np.ndarray, int]:
    """Connected components (8-connectivity) of ``mask == code``: (labels, count)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask == code, structure=np.ones((3, 3), bool))
    return lab, int(n)


def _codes(masks: Sequence[np.ndarray | None]) -> list[int]:
    """Class codes (> 0) present in any mask, ascending."""
    found: set[int] = set()
    for m in masks:
        if m is not None:
            found.update(int(v) for v in np.unique(m) if v != L.UNLABELED)
    return sorted(found)


def count_strokes(masks: Sequence[np.ndarray | None]) -> dict[int, int]:
    """Strokes per class code over a list of scribble masks.

    Parameters
    ----------
    masks : sequence of (H, W) uint8 ndarray or None
        Scribble masks (None: an image without any).

    Returns
    -------
    counts : dict of int to int
        Mask code (1 background, 2 foreground, ...) -> number of strokes (8-connected
        components of that code), summed over the masks; only codes present.

    Examples
    --------
    >>> m = np.array([[1, 0, 2], [0, 0, 0], [1, 0, 2]], np.uint8)
    >>> count_strokes([m, None])
    {1: 2, 2: 2}
    """
    return {code: sum(_strokes(m, code)[1] for m in masks if m is not None)
            for code in _codes(masks)}


def split_strokes(masks: Sequence[np.ndarray], fraction: float, *, seed: int = 0,
                  ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Hold out a seeded share of the strokes of each class, never an image's last one.

    A stroke is a connected component (8-connectivity) of one class in one mask.
    For each class, ``round(fraction * n)`` of its ``n`` strokes over all masks
    are drawn at random, skipping any that would leave its image without a
    stroke of that class: every image keeps at least one stroke of each class it
    had. A class with too few strokes (one per image) has none held out.

    Parameters
    ----------
    masks : sequence of (H, W) uint8 ndarray
        Scribble masks (:mod:`s2l_tools.labels` codes; 0 unlabeled).
    fraction : float
        Share of each class's strokes to hold out, in [0, 1).
    seed : int, optional
        The same seed and masks give the same split; another seed another one.

    Returns
    -------
    train_masks : list of (H, W) uint8 ndarray
        The masks with the held-out strokes made unlabeled (new arrays; the
        inputs are not changed).
    heldout_masks : list of (H, W) uint8 ndarray or None
        The held-out strokes with their class code, 0 elsewhere; None for an
        image with none held out.

    Raises
    ------
    ValueError
        If ``fraction`` is not a finite number in [0, 1).

    Notes
    -----
    Together the two lists partition the labelled pixels: ``train + heldout``
    equals the input wherever it is labelled, and no pixel is in both.

    Examples
    --------
    >>> m = np.zeros((5, 9), np.uint8)
    >>> m[0, ::2] = 2    # five foreground strokes (single pixels)
    >>> m[4, :] = 1      # one background stroke
    >>> train, held = split_strokes([m], 0.4, seed=1)
    >>> int((held[0] == 2).sum()), int((held[0] == 1).sum())
    (2, 0)
    """
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction)
            and 0 <= fraction < 1):
        raise ValueError(f"fraction {fraction!r}: must be a finite number in [0, 1)")
    train = [np.array(m, dtype=np.uint8, copy=True) for m in masks]
    held: list[np.ndarray | None] = [None] * len(train)
    if fraction == 0:
        return train, held
    for code in _codes(train):
        labelled = [_strokes(m, code) for m in train]
        # every stroke of this class as (image, component id)
        strokes = [(i, j) for i, (_, n) in enumerate(labelled) for j in range(1, n + 1)]
        want = round(fraction * len(strokes))
        if want == 0:
            continue
        left = [n for _, n in labelled]  # strokes each image still trains on
        chosen: list[tuple[int, int]] = []
        rng = np.random.default_rng([int(seed), _SEED_TAG, code])
        for k in rng.permutation(len(strokes)):
            i, j = strokes[k]
            if left[i] > 1:
                left[i] -= 1
                chosen.append((i, j))
                if len(chosen) == want:
                    break
        for i, j in chosen:
            where = labelled[i][0] == j
            if held[i] is None:
                held[i] = np.zeros_like(train[i])
            held[i][where] = code
            train[i][where] = L.UNLABELED
    return train, held

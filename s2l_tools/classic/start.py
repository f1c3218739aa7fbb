"""The EMA store's first map from classic segmentation (``s2l-train --fast-start``).

Scribble2Label's EMA store normally starts empty and fills after the warm-up.
A fast start gives it a first map from the scribbles at once:

- ``forest``: the random forest's foreground probability
  (:mod:`s2l_tools.classic.forest`);
- ``grabcut``: the GrabCut proposal as 0 / 1 (:mod:`s2l_tools.classic.grabcut`);
- ``forest+grabcut``: their mean, so a pixel is confident (above tau or below
  1 - tau) only where the two agree. GrabCut fails on some images outright
  (on textured brightfield and H&E images it finds 0.1-0.25 of the nuclei,
  where the forest finds 0.4-0.75), and its mean with the forest then vetoes the
  forest's foreground. So an image keeps GrabCut only where its foreground and
  the forest's (probability > 0.5) overlap by at least ``min_agreement``
  (intersection over union); elsewhere the forest's map is used alone.
"""

from __future__ import annotations

import numpy as np

__all__ = ["foreground_agreement", "first_map", "MIN_AGREEMENT"]

#: Intersection over union of the forest's and GrabCut's foreground below which an
#: image's GrabCut proposal is dropped from the ``forest+grabcut`` start. On DSB
#: training images (fluo, histo, brightfield; ground truth used only to look) an
#: agreement under 0.35 meant GrabCut had failed (its IoU with the truth <= 0.4,
#: the forest's 0.5-0.9), while from 0.45 up either could be the better one.
MIN_AGREEMENT = 0.4


def foreground_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; 1.0 when both are empty.

    Examples
    --------
    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> b = np.zeros((4, 4), bool); b[1:3] = True
    >>> foreground_agreement(a, b)
    0.3333333333333333
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / int(union)


def first_map(image: np.ndarray, scribble: np.ndarray, *, forest=None, grabcut: bool = False,
              seed: int = 0, min_agreement: float = MIN_AGREEMENT) -> tuple[np.ndarray, bool]:
    """One image's first EMA map from the forest, GrabCut or both.

    Parameters
    ----------
    image : (C, H, W) float ndarray
        A normalised image.
    scribble : (H, W) uint8 ndarray
        0 unlabeled, 1 background, 2 foreground (:mod:`s2l_tools.labels`).
    forest : sklearn classifier, optional
        From :func:`s2l_tools.classic.forest.fit_forest`; None: GrabCut alone.
    grabcut : bool
        Use the image's GrabCut proposal (seeded with ``seed``).
    seed : int
        GrabCut's seed (:func:`s2l_tools.classic.grabcut.grabcut_proposal`).
    min_agreement : float
        With both: GrabCut is kept only where its foreground and the forest's
        overlap by at least this (IoU); 0 keeps it always.

    Returns
    -------
    first : (H, W) float32 ndarray
        Foreground probability in [0, 1].
    used_grabcut : bool
        Whether GrabCut's proposal is part of ``first``.
    """
    from s2l_tools.classic.forest import forest_probability
    from s2l_tools.classic.grabcut import grabcut_proposal, to_bgr8

    if forest is None and not grabcut:
        raise ValueError("first_map needs a forest, grabcut=True, or both")
    prob = forest_probability(forest, image) if forest is not None else None
    if not grabcut:
        return prob, False
    proposal = grabcut_proposal(to_bgr8(image), scribble, seed=seed)
    if prob is None:
        return proposal.astype(np.float32), True
    if foreground_agreement(prob > 0.5, proposal) < min_agreement:
        return prob, False
    return ((prob + proposal) / 2).astype(np.float32), True

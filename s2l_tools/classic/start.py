"""The EMA store's first map from classic segmentation (``s2l-train --fast-start``).

Scribble2Label's EMA store normally starts empty and fills after the warm-up.
A fast start gives it a first map from the scribbles at once:

- ``forest``: the random forest's foreground probability
  (:mod:`s2l_tools.classic.forest`);
- ``grabcut``: the GrabCut proposal as 0 / 1 (:mod:`s2l_tools.classic.grabcut`);
- ``forest+grabcut``: their mean, so a pixel is confident (above tau or below
  1 - tau) only where the two agree. GrabCut's colour model fails outright on
  some kinds of images (on DSB brightfield and H&E training images it finds
  0.1-0.25 of the nuclei by IoU, where the forest finds 0.4-0.75), and its mean
  with the forest then vetoes the forest's cells on every image. So GrabCut is
  kept for a dataset only when, on the median image, its foreground and the
  forest's (probability > 0.5) overlap by at least ``min_agreement``
  (intersection over union); otherwise the forest's map is used alone.
  The choice is made for the whole dataset, not per image: on fluorescent
  nuclei, where GrabCut works on most images, dropping it on the few images
  where it fails made the results worse (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_AGREEMENT", "SAMPLE_IMAGES", "classic_maps", "combine", "keep_grabcut",
           "sample_images"]

#: Median intersection over union of the forest's and GrabCut's foreground below which
#: the ``forest+grabcut`` start leaves GrabCut out. On DSB training images (ground truth
#: used only to look) an image's agreement under 0.35 meant GrabCut had failed there (its
#: IoU with the truth <= 0.4, the forest's 0.5-0.9); the medians were 0.67-0.78 on
#: fluorescent nuclei, 0.17 on brightfield and 0.15 on H&E.
MIN_AGREEMENT = 0.4

#: At most this many images (evenly spread) decide whether GrabCut is kept.
SAMPLE_IMAGES = 32


def classic_maps(image: np.ndarray, scribble: np.ndarray, *, forest=None, grabcut: bool = False,
                 seed: int = 0) -> tuple[np.ndarray | None, np.ndarray | None]:
    """One image's forest probability and GrabCut proposal (None for the one not asked for).

    Parameters
    ----------
    image : (C, H, W) float ndarray
        A normalised image.
    scribble : (H, W) uint8 ndarray
        0 unlabeled, 1 background, 2 foreground (:mod:`s2l_tools.labels`).
    forest : sklearn classifier, optional
        From :func:`s2l_tools.classic.forest.fit_forest`.
    grabcut : bool
        Compute the image's GrabCut proposal (seeded with ``seed``).
    seed : int
        GrabCut's seed (:func:`s2l_tools.classic.grabcut.grabcut_proposal`).

    Returns
    -------
    prob : (H, W) float32 ndarray or None
    proposal : (H, W) bool ndarray or None
    """
    from s2l_tools.classic.forest import forest_probability
    from s2l_tools.classic.grabcut import grabcut_proposal, to_bgr8

    prob = forest_probability(forest, image) if forest is not None else None
    proposal = grabcut_proposal(to_bgr8(image), scribble, seed=seed) if grabcut else None
    return prob, proposal


def combine(prob: np.ndarray | None, proposal: np.ndarray | None) -> np.ndarray:
    """The first map: the forest's probability, GrabCut's proposal as 0 / 1, or their mean.

    Examples
    --------
    >>> combine(np.array([0.9, 0.9, 0.1]), np.array([True, False, False])).tolist()
    [0.949999988079071, 0.44999998807907104, 0.05000000074505806]
    """
    if prob is None and proposal is None:
        raise ValueError("combine needs a forest probability, a GrabCut proposal, or both")
    if proposal is None:
        return np.asarray(prob, np.float32)
    proposal = np.asarray(proposal, np.float32)
    return proposal if prob is None else (np.asarray(prob, np.float32) + proposal) / 2


def sample_images(n_images: int, k: int = SAMPLE_IMAGES) -> list[int]:
    """At most ``k`` image indices, evenly spread over ``range(n_images)``.

    Examples
    --------
    >>> sample_images(5, 3), sample_images(2, 3)
    ([0, 2, 4], [0, 1])
    """
    if n_images <= k:
        return list(range(n_images))
    return sorted({int(round(x)) for x in np.linspace(0, n_images - 1, k)})


def keep_grabcut(agreements, min_agreement: float = MIN_AGREEMENT) -> bool:
    """Whether the ``forest+grabcut`` start keeps GrabCut: the median agreement is enough.

    ``agreements``: :func:`s2l_tools.evaluation.metrics.foreground_iou` of the forest's
    foreground (probability > 0.5) and GrabCut's on some images. No image: GrabCut is kept.

    Examples
    --------
    >>> keep_grabcut([0.7, 0.1, 0.6]), keep_grabcut([0.2, 0.1, 0.6])
    (True, False)
    """
    agreements = list(agreements)
    return not agreements or float(np.median(agreements)) >= min_agreement

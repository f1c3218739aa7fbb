"""GrabCut from scribbles: a dense foreground proposal for one image.

``cv2.grabCut`` (Rother et al. 2004: colour Gaussian mixtures + a graph cut)
initialised from a scribble mask: certain foreground on the foreground
scribbles, certain background on the background scribbles, probable foreground
within ``near`` pixels of a foreground scribble, probable background elsewhere.
Used by ``s2l-train --fast-start grabcut`` (the EMA store's first map) and by
the GrabCut-then-train baseline of ``benchmarks/accuracy.py``.

OpenCV is the dependency for it: its GrabCut is the reference implementation.
"""

from __future__ import annotations

import numpy as np

from s2l_tools import labels as L

__all__ = ["grabcut_proposal", "to_bgr8"]


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """A normalised (C, H, W) image as the 8-bit 3-channel image GrabCut takes.

    Values are clipped to [0, 1] (the normalisation's p1..p99.8 range) and scaled
    to 0..255; one channel is repeated, two get a zero third channel, more than
    three keep the first three.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    chans = [image[min(i, image.shape[0] - 1)] if image.shape[0] != 2 or i < 2
             else np.zeros_like(image[0]) for i in range(3)]
    out = np.stack(chans, axis=-1)
    return np.ascontiguousarray(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8))


def grabcut_proposal(image_bgr8: np.ndarray, scribble: np.ndarray, *, near: int = 5,
                     iterations: int = 5, seed: int = 0) -> np.ndarray:
    """Foreground (bool) of ``cv2.grabCut`` initialised from a scribble mask.

    Parameters
    ----------
    image_bgr8 : (H, W, 3) uint8 ndarray
        See :func:`to_bgr8`.
    scribble : (H, W) uint8 ndarray
        0 unlabeled, 1 background, 2 foreground (:mod:`s2l_tools.labels`).
    near : int
        Probable foreground within this many pixels of a foreground scribble (0: none).
    iterations : int
        GrabCut iterations.
    seed : int
        Seeds OpenCV's random generator of the calling thread (GrabCut's k-means
        draws from it), so the same image and scribbles give the same proposal
        whatever ran before in that thread.

    Returns
    -------
    foreground : (H, W) bool ndarray
        All False without a foreground scribble, all True without a background one.
    """
    import cv2

    fg, bg = scribble == L.FOREGROUND, scribble == L.BACKGROUND
    if not fg.any():
        return np.zeros(scribble.shape, bool)
    if not bg.any():
        return np.ones(scribble.shape, bool)
    mask = np.full(scribble.shape, cv2.GC_PR_BGD, np.uint8)
    if near > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * near + 1, 2 * near + 1))
        mask[cv2.dilate(fg.astype(np.uint8), k) > 0] = cv2.GC_PR_FGD
    mask[bg] = cv2.GC_BGD
    mask[fg] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(int(seed))
    cv2.grabCut(image_bgr8, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)

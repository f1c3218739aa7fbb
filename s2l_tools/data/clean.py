"""Foreground strokes that stray onto the background: found from the image, left out.

A line drawn through a nucleus in Fiji often runs a few pixels past its edge.
Every method fitted to the strokes takes those pixels for cell: the random
forest of the fast start, GrabCut's seeds and the network's scribble loss. With
such slips on half the stroke ends of the hand-drawn protocol (12-13 % of the
foreground pixels on the background) the laptop preset lost 0.08 IoU on DSB
fluorescent nuclei (0.02-0.14 by seed), the forest alone 0.21; with this module
(``s2l-train --clean-strokes``) the preset lost nothing (docs/benchmarks.md,
"Careless strokes"). Where strokes stay inside the cells it cost 0.0016 IoU on
the mean of ten seeds, on brightfield 0.011 (five seeds). So the laptop preset
cleans only strokes that look careless (``--clean-strokes auto``): when more than
:data:`AUTO_SHARE` of the foreground pixels would be left out (careless strokes:
12.5-13.3 %; slips at a tenth of the stroke ends: 3.9-5.3 %, where cleaning gained
0.015 IoU over ten seeds; careful hand-drawn, skeleton, H&E and brightfield strokes:
0.2-3.2 %; docs/benchmarks.md, "--clean-strokes and five more hand-drawn stroke
seeds").

:func:`stray_foreground` finds them from the strokes' own colours: on the image
smoothed by a Gaussian of ``sigma`` px, the image's background scribbles give
a median colour (every channel), and so does each foreground stroke (a
connected piece of foreground scribble); a pixel of a stroke nearer the
background's median than its own stroke's is taken for a slip. Each stroke is
its own reference, so a stroke on a dim nucleus is kept whole in an image of
bright ones (one median for all the image's strokes took such strokes away:
-0.012 IoU on exact strokes against this rule's -0.004). Background scribbles are left
as drawn (on brightfield images a rule for them also took the bright halo
beside the cells, a part of the background the strokes must teach).
:func:`drop_stray_foreground` applies it to a training set: the pixels become
unlabeled (the EMA store may still pseudo-label them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from s2l_tools import labels as L

__all__ = ["SIGMA", "MIN_PIXELS", "MIN_STROKE_PIXELS", "AUTO_SHARE", "stray_foreground",
           "drop_stray_foreground"]

#: the Gaussian (px) the image is smoothed with before the colours are compared
SIGMA = 1.0
#: an image with fewer scribbled pixels of a class takes that class's median over all images
MIN_PIXELS = 20
#: a stroke of fewer pixels is compared with the median of all the image's foreground strokes
MIN_STROKE_PIXELS = 5
#: ``--clean-strokes auto`` cleans a training set's strokes when more than this share of
#: its foreground scribble pixels would be left out
AUTO_SHARE = 0.035


def _smoothed(image: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, C) float32: every channel of a (C, H, W) image smoothed by a Gaussian."""
    from scipy import ndimage as ndi

    image = np.asarray(image, dtype=np.float32)
    return np.stack([ndi.gaussian_filter(c, sigma) if sigma > 0 else c for c in image], axis=-1)


def stray_foreground(image: np.ndarray, scribble: np.ndarray, *, sigma: float = SIGMA,
                     medians: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Pixels of foreground strokes whose colour is the background's, not their stroke's.

    Parameters
    ----------
    image : (C, H, W) float ndarray
        A normalised image (:func:`s2l_tools.io.images.read_image`).
    scribble : (H, W) uint8 ndarray
        0 unlabeled, 1 background, 2 foreground (:mod:`s2l_tools.labels`).
    sigma : float, optional
        Gaussian smoothing (px) before the colours are compared; 0: none.
    medians : (background, foreground) pair of (C,) arrays, optional
        The class medians to use where this image has fewer than
        :data:`MIN_PIXELS` scribbled pixels of a class (e.g. over all images).

    Returns
    -------
    stray : (H, W) bool ndarray
        Foreground scribble pixels nearer (Euclidean, over the channels) the
        median of the background scribbles than the median of their own stroke
        (8-connected; a stroke under :data:`MIN_STROKE_PIXELS` pixels takes the
        median of all the image's foreground strokes). None is marked where the
        background's median is missing. At most about half of a stroke can be
        marked in one channel (those beyond its median, on the background's side).

    Examples
    --------
    >>> image = np.full((1, 20, 20), 0.1, np.float32)
    >>> image[0, 5:15, 5:15] = 1.0                # a bright square cell
    >>> image[0, 16:19, 5:15] = 0.4               # and a dim one
    >>> scribble = np.zeros((20, 20), np.uint8)
    >>> scribble[9:11, 3:17] = 2                  # through the bright one, 2 px past each edge
    >>> scribble[17, 6:14] = 2                    # inside the dim one
    >>> scribble[1, :] = 1                        # background along the top
    >>> stray = stray_foreground(image, scribble, sigma=0)
    >>> np.flatnonzero(stray[10]).tolist(), bool(stray[17].any())
    ([3, 4, 15, 16], False)
    """
    scribble = np.asarray(scribble)
    out = np.zeros(scribble.shape, bool)
    fg = scribble == L.FOREGROUND
    if fg.any():
        values = _smoothed(image, sigma)
        out[fg] = _stray(values[scribble == L.BACKGROUND], values[fg], _stroke_ids(fg),
                         medians)
    return out


def _stroke_ids(fg: np.ndarray) -> np.ndarray:
    """The stroke (8-connected piece) of each foreground pixel, in ``fg[fg]``'s order."""
    from scipy import ndimage as ndi

    return ndi.label(fg, structure=np.ones((3, 3), bool))[0][fg]


def _stray(v_bg: np.ndarray, v_fg: np.ndarray, ids: np.ndarray,
           medians: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """:func:`stray_foreground` on one image's smoothed colours: (N, C) of its background
    and foreground scribble pixels and the stroke of each foreground one; bool (N_fg,)."""
    stray = np.zeros(len(v_fg), bool)
    if len(v_bg) >= MIN_PIXELS:
        m_bg = np.median(v_bg, axis=0)
    elif medians is not None:
        m_bg = np.asarray(medians[0], np.float32)
    else:
        return stray
    if len(v_fg) >= MIN_PIXELS:
        m_fg = np.median(v_fg, axis=0)
    else:
        m_fg = None if medians is None else np.asarray(medians[1], np.float32)
    for k in np.unique(ids):
        here = ids == k
        v = v_fg[here]
        own = np.median(v, axis=0) if len(v) >= MIN_STROKE_PIXELS else m_fg
        if own is not None:
            stray[here] = np.linalg.norm(v - m_bg, axis=-1) < np.linalg.norm(v - own, axis=-1)
    return stray


def drop_stray_foreground(images: Sequence[np.ndarray], scribbles: Sequence[np.ndarray], *,
                          sigma: float = SIGMA) -> tuple[list[np.ndarray], int, int]:
    """The scribbles with :func:`stray_foreground`'s pixels made unlabeled.

    An image with too few scribbled pixels of a class uses that class's median
    over every image's scribbles.

    Parameters
    ----------
    images : sequence of (C, H, W) float ndarrays
    scribbles : sequence of (H, W) uint8 ndarrays
    sigma : float, optional

    Returns
    -------
    scribbles : list of (H, W) uint8 ndarrays
        New arrays where a pixel was dropped; the inputs are never changed.
    dropped, total : int
        Foreground scribble pixels left out, and in all.
    """
    # each image smoothed once: only its scribbled pixels' colours are kept
    pixels = []
    for image, scribble in zip(images, scribbles):
        scribble = np.asarray(scribble)
        fg, bg = scribble == L.FOREGROUND, scribble == L.BACKGROUND
        values = _smoothed(image, sigma) if (fg.any() or bg.any()) else None
        pixels.append(None if values is None else (values[bg], values[fg], _stroke_ids(fg)))
    kept = [p for p in pixels if p is not None]
    medians = None
    if any(len(p[0]) for p in kept) and any(len(p[1]) for p in kept):
        medians = tuple(np.median(np.concatenate([p[k] for p in kept]), axis=0) for k in (0, 1))
    out, dropped, total = [], 0, 0
    for scribble, found in zip(scribbles, pixels):
        scribble = np.asarray(scribble)
        fg = scribble == L.FOREGROUND
        total += int(fg.sum())
        stray = _stray(*found, medians) if found is not None and fg.any() else None
        if stray is not None and stray.any():
            dropped += int(stray.sum())
            left_out = np.zeros(fg.shape, bool)
            left_out[fg] = stray
            scribble = scribble.copy()
            scribble[left_out] = L.UNLABELED
        out.append(scribble)
    return out, dropped, total

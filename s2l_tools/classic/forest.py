"""A random-forest pixel classifier on filter features: what ilastik and Labkit do.

Trained on the scribbled pixels in seconds, it labels every pixel from local
intensity, edge and texture features at several scales. s2l-tools uses it two
ways:

- as the **fast start** of Scribble2Label (``s2l-train --fast-start forest``):
  the forest's foreground probability of every training image becomes the EMA
  store's first map ``y_0``, so the consistency-filtered pseudo-labels cover
  the cells and the background from the first epoch instead of after the
  warm-up; the network's own predictions then take over through the EMA;
- as a **baseline** in ``benchmarks/accuracy.py`` (``--methods forest``).

Features: :func:`skimage.feature.multiscale_basic_features` (Gaussian-smoothed
intensity, gradient magnitude and Hessian eigenvalues at sigmas 1, 2, 4, 8,
16, every channel). Classifier: :class:`sklearn.ensemble.RandomForestClassifier`
(100 trees, as ilastik). To bound the time, at most ``max_pixels`` scribbled
pixels per class are drawn (seeded) from all images together.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from s2l_tools import labels as L
from s2l_tools.errors import S2LError

__all__ = ["ForestSettings", "pixel_features", "fit_forest", "forest_probability",
           "map_forest_probability"]


@dataclass(frozen=True)
class ForestSettings:
    """Settings of the pixel classifier (the defaults are ilastik's usual choice)."""

    sigma_min: float = 1.0
    sigma_max: float = 16.0
    n_estimators: int = 100
    max_pixels: int = 50_000  # per class, drawn from all scribbled pixels
    min_samples_leaf: int = 1
    # threads of fit_forest (the images' features, the trees) and of the trees' predictions:
    # None, scikit-learn's default (one); -1, every core
    n_jobs: int | None = None
    band_pixels: int = 1 << 20  # features are made for bands of about this many pixels


def _bands(image: np.ndarray, settings: ForestSettings):
    """``(r0, r1, features of rows r0..r1)`` for horizontal bands of ``image``.

    Each band's features are computed with a margin of rows wide enough for the
    largest filter (Gaussians truncated at 4 sigma, plus the derivatives), so they
    equal those of the whole image while memory stays bounded by the band.
    """
    h, w = image.shape[1:]
    rows = max(1, settings.band_pixels // max(w, 1))
    margin = int(np.ceil(4 * settings.sigma_max)) + 4
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        a, b = max(0, r0 - margin), min(h, r1 + margin)
        if a == 0 and b == h:
            yield r0, r1, pixel_features(image, settings)[r0:r1]
        else:
            yield r0, r1, pixel_features(image[:, a:b], settings)[r0 - a:r1 - a]


def _threads(n_jobs: int | None) -> int:
    """Threads for ``n_jobs`` as scikit-learn counts them (None: 1; -1: every core)."""
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return max(1, n_jobs)


def pixel_features(image: np.ndarray, settings: ForestSettings = ForestSettings()) -> np.ndarray:
    """Filter features of every pixel.

    Parameters
    ----------
    image : (C, H, W) float ndarray
        A normalised image (:func:`s2l_tools.io.images.read_image`).
    settings : ForestSettings

    Returns
    -------
    features : (H, W, F) float32 ndarray
        ``F = C x n_sigmas x 4`` (intensity, edges, two Hessian eigenvalues).
    """
    from skimage.feature import multiscale_basic_features

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    feats = multiscale_basic_features(
        np.moveaxis(image, 0, -1), intensity=True, edges=True, texture=True,
        sigma_min=settings.sigma_min, sigma_max=settings.sigma_max, channel_axis=-1)
    return feats.astype(np.float32, copy=False)


def fit_forest(images: Sequence[np.ndarray], scribbles: Sequence[np.ndarray], *,
               settings: ForestSettings = ForestSettings(), seed: int = 0):
    """Train the pixel classifier on the scribbled pixels of some images.

    Parameters
    ----------
    images : sequence of (C, H, W) float ndarrays
    scribbles : sequence of (H, W) uint8 ndarrays
        0 unlabeled, 1 background, 2 foreground (:mod:`s2l_tools.labels`).
    settings : ForestSettings
    seed : int
        Draws the training pixels and seeds the forest.

    Returns
    -------
    forest : sklearn.ensemble.RandomForestClassifier
        Fitted on classes 0 (background) and 1 (foreground).

    Raises
    ------
    S2LError
        When there is no background or no foreground scribble at all.
    """
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    per_class: dict[int, list[tuple[int, np.ndarray]]] = {L.BACKGROUND: [], L.FOREGROUND: []}
    for i, scr in enumerate(scribbles):
        for code in per_class:
            where = np.flatnonzero(np.asarray(scr).ravel() == code)
            if where.size:
                per_class[code].append((i, where))
    totals = {code: sum(len(w) for _, w in found) for code, found in per_class.items()}
    if not totals[L.BACKGROUND] or not totals[L.FOREGROUND]:
        raise S2LError("the forest needs background and foreground scribbles; draw both")
    # the same share of every image's pixels of a class, at most max_pixels per class
    chosen: dict[int, list[np.ndarray]] = {i: [] for i in range(len(images))}
    for code, found in per_class.items():
        share = min(1.0, settings.max_pixels / totals[code])
        for i, where in found:
            k = max(1, int(round(share * len(where))))
            chosen[i].append(rng.choice(where, size=min(k, len(where)), replace=False))

    def rows(i: int) -> tuple[np.ndarray, np.ndarray]:
        """The features and classes of image ``i``'s chosen pixels."""
        idx = np.concatenate(chosen[i])
        w = images[i].shape[2]
        x = None
        for r0, r1, feats in _bands(images[i], settings):
            if x is None:
                x = np.empty((idx.size, feats.shape[-1]), np.float32)
            here = (idx >= r0 * w) & (idx < r1 * w)
            x[here] = feats.reshape(-1, feats.shape[-1])[idx[here] - r0 * w]
        return x, np.asarray(scribbles[i]).ravel()[idx] == L.FOREGROUND

    todo = [i for i, picks in chosen.items() if picks]
    threads = _threads(settings.n_jobs)
    if threads > 1:  # 2 threads: ~1.4x (docs/benchmarks.md); rows in image order
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            found = list(pool.map(rows, todo))
    else:
        found = [rows(i) for i in todo]
    xs, ys = [x for x, _ in found], [y for _, y in found]
    forest = RandomForestClassifier(
        n_estimators=settings.n_estimators, min_samples_leaf=settings.min_samples_leaf,
        n_jobs=settings.n_jobs, random_state=seed)
    forest.fit(np.concatenate(xs), np.concatenate(ys).astype(np.int64))
    return forest


def forest_probability(forest, image: np.ndarray, *,
                       settings: ForestSettings = ForestSettings()) -> np.ndarray:
    """Foreground probability of every pixel of ``image`` (H, W) float32, in [0, 1].

    Features are made and classified band by band (``settings.band_pixels``), so
    memory stays bounded for large images.
    """
    image = np.asarray(image, dtype=np.float32)
    out = np.zeros(image.shape[1:], np.float32)
    if 1 not in forest.classes_:
        return out
    fg = list(forest.classes_).index(1)
    for r0, r1, feats in _bands(image, settings):
        prob = forest.predict_proba(feats.reshape(-1, feats.shape[-1]))
        out[r0:r1] = prob[:, fg].reshape(r1 - r0, -1)
    return out


def map_forest_probability(fn, images: Sequence[np.ndarray], scribbles: Sequence[np.ndarray],
                           indices, *, threads: int = 1, seed: int = 0) -> list:
    """``fn(p)`` for the foreground probability ``p`` of each of ``images[indices]``.

    The forest is fitted on the strokes of every image (:func:`fit_forest`, seeded) on
    ``threads`` threads; then the images, not the trees, are spread over the threads.
    The results keep the order of ``indices`` and do not depend on ``threads``.
    """
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, int(threads))
    forest = fit_forest(images, scribbles, settings=ForestSettings(n_jobs=threads), seed=seed)
    forest.set_params(n_jobs=1)  # the images are spread over the threads instead
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda i: fn(forest_probability(forest, images[i])), indices))

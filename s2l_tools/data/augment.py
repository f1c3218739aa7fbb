"""Joint augmentation of an image, its scribbles and its EMA prediction map.

Every geometric transform is applied identically to the three arrays; colour
changes touch the image only. The random crop and the shift-scale-rotate are
done as ONE affine warp evaluated at crop size: the source window that the
rotated crop covers is cut out first (padded where it leaves the image), then
warped, so the cost does not depend on the image size. Flips and 90-degree
rotations are exact array operations on the crop.

Interpolation and fill values
-----------------------------
=========  ==============  ========================================
array      interpolation   outside the image
=========  ==============  ========================================
image      bilinear        reflected image (``numpy.pad`` 'reflect')
scribble   nearest         0 (unlabeled)
ema        bilinear        0.5 (float) / 128 (uint8): not confident
=========  ==============  ========================================

A fill of 0.5 is never pseudo-labelled for any threshold >= 0.5 (see
:func:`s2l_tools.training.step.pseudo_labels`).

Arrays: ``image`` ``(C, H, W)`` float32, ``scribble`` ``(H, W)`` uint8,
``ema`` ``(H, W)`` foreground probability, float (returned as float32) or
uint8 (``round(255 p)``, returned as uint8), or None.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["EMA_FILL", "EMA_FILL_UINT8", "augment", "random_crop"]

EMA_FILL = 0.5
EMA_FILL_UINT8 = 128

Triple = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def random_crop(
    image: np.ndarray,
    scribble: np.ndarray,
    ema: np.ndarray | None = None,
    *,
    size: int,
    rng: np.random.Generator,
) -> Triple:
    """Crop the same random ``size`` x ``size`` window from the three arrays.

    Parameters
    ----------
    image : (C, H, W) float32 ndarray
    scribble : (H, W) uint8 ndarray
    ema : (H, W) float or uint8 ndarray, optional
    size : int
        Side of the square crop. A side of the image shorter than ``size`` is
        padded (image: reflect, scribble: 0, ema: 0.5 / 128), the image placed at
        a random offset inside the crop.
    rng : numpy.random.Generator

    Returns
    -------
    image : (C, size, size) float32 ndarray
    scribble : (size, size) uint8 ndarray
    ema : (size, size) ndarray of ``ema``'s kind, or None
    """
    _check(image, scribble, ema, size)
    _, h, w = image.shape
    y0, x0 = _offset(h, size, rng), _offset(w, size, rng)
    return _crop(image, scribble, ema, y0, x0, size)


def augment(
    image: np.ndarray,
    scribble: np.ndarray,
    ema: np.ndarray | None = None,
    *,
    rng: np.random.Generator,
    crop: int = 256,
    p_ssr: float = 0.7,
    shift: float = 0.0625,
    scale: float = 0.1,
    rotate: float = 45.0,
    flips: bool = True,
    brightness: float = 0.2,
    contrast: float = 0.2,
    noise: float = 0.0,
    p_noise: float = 0.15,
    gain: float = 1.0,
    p_gain: float = 0.5,
) -> Triple:
    """Random crop, shift-scale-rotate, flips/rot90, brightness/contrast, noise and gain.

    Parameters
    ----------
    image : (C, H, W) float32 ndarray
        Normalised image.
    scribble : (H, W) uint8 ndarray
        0 unlabeled, 1 background, 2 foreground.
    ema : (H, W) float or uint8 ndarray, optional
        EMA foreground probability (uint8: ``round(255 p)``).
    rng : numpy.random.Generator
        The only source of randomness.
    crop : int
        Side of the output (paper: 256).
    p_ssr : float
        Probability of the shift-scale-rotate (paper: 0.7).
    shift : float
        Shift up to ``shift * crop`` pixels along each axis.
    scale : float
        Zoom factor drawn from ``[1 - scale, 1 + scale]``.
    rotate : float
        Rotation angle drawn from ``[-rotate, rotate]`` degrees.
    flips : bool
        Random horizontal and vertical flips and a random multiple of 90 degrees.
    brightness, contrast : float
        ``image * a + b`` with ``a`` from ``[1 - contrast, 1 + contrast]`` and
        ``b`` from ``[-brightness, brightness]`` (in normalised intensity units;
        for images scaled to [0, 1] this is albumentations'
        RandomBrightnessContrast; for z-scored images ``a`` scales the contrast
        around the mean). Image only.
    noise : float
        With probability ``p_noise``, Gaussian noise of a standard deviation drawn from
        ``[0, noise]`` (normalised intensity units) is added to the image, after the
        brightness/contrast change (0: never; nothing is drawn from ``rng`` then, so the
        other transforms are those of a call without it).
    p_noise : float
        Probability of the noise.
    gain : float
        With probability ``p_gain``, the image is multiplied by a factor drawn
        log-uniformly from ``[1 / gain, gain]``, after the noise: a whole crop made
        dimmer or brighter around 0 (the normalised background). Meant to keep a model
        from learning one intensity as the cut between cell and background; measured,
        it steadies training on a handful of images without fully doing that
        (docs/benchmarks.md, "Dim nuclei called background"). 1: never; nothing is
        drawn from ``rng`` then.
    p_gain : float
        Probability of the gain.

    Returns
    -------
    image : (C, crop, crop) float32 ndarray
    scribble : (crop, crop) uint8 ndarray
    ema : (crop, crop) ndarray (float32, or uint8 if given uint8), or None
        New arrays; the inputs are not modified.
    """
    _check(image, scribble, ema, crop)
    _, h, w = image.shape
    y0, x0 = _offset(h, crop, rng), _offset(w, crop, rng)
    if p_ssr > 0 and rng.random() < p_ssr:
        angle = math.radians(rng.uniform(-rotate, rotate))
        zoom = rng.uniform(1.0 - scale, 1.0 + scale)
        ty, tx = rng.uniform(-shift, shift, size=2) * crop
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        matrix = np.array([[cos, -sin], [sin, cos]])
        centre = (crop - 1) / 2.0
        src_centre = np.array([y0 + centre + ty, x0 + centre + tx])
        img, scr, em = _warp(image, scribble, ema, matrix, src_centre, crop)
    else:
        img, scr, em = _crop(image, scribble, ema, y0, x0, crop)

    if flips:
        k = int(rng.integers(4))
        hflip, vflip = rng.random(2) < 0.5

        def geo(a: np.ndarray) -> np.ndarray:
            a = np.rot90(a, k, axes=(-2, -1))
            if hflip:
                a = a[..., :, ::-1]
            if vflip:
                a = a[..., ::-1, :]
            return a

        img, scr = geo(img), geo(scr)
        em = None if em is None else geo(em)

    a = 1.0 + rng.uniform(-contrast, contrast) if contrast > 0 else 1.0
    b = rng.uniform(-brightness, brightness) if brightness > 0 else 0.0
    img = np.ascontiguousarray(img, dtype=np.float32)
    if a != 1.0 or b != 0.0:
        img = (img * np.float32(a) + np.float32(b)).astype(np.float32, copy=False)
    if noise > 0 and rng.random() < p_noise:
        sd = rng.uniform(0.0, noise)
        img = (img + rng.normal(0.0, sd, size=img.shape)).astype(np.float32)
    if gain > 1 and rng.random() < p_gain:
        img = (img * np.float32(math.exp(rng.uniform(-math.log(gain), math.log(gain))))).astype(
            np.float32, copy=False)
    scr = np.ascontiguousarray(scr)
    em = None if em is None else np.ascontiguousarray(em)
    return img, scr, em


# ---------------------------------------------------------------- helpers


def _check(image, scribble, ema, size) -> None:
    def shape(a):
        return getattr(a, "shape", type(a).__name__)

    if not (isinstance(image, np.ndarray) and image.ndim == 3):
        raise ValueError(f"image must be a (C, H, W) ndarray, got {shape(image)}")
    hw = image.shape[1:]
    if not isinstance(scribble, np.ndarray) or scribble.shape != hw:
        raise ValueError(f"scribble must be an ndarray of shape {hw}, got {shape(scribble)}")
    if ema is not None and (not isinstance(ema, np.ndarray) or ema.shape != hw):
        raise ValueError(f"ema must be an ndarray of shape {hw}, got {shape(ema)}")
    if int(size) < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")


def _offset(n: int, size: int, rng: np.random.Generator) -> int:
    """Top/left of the crop; negative when the image is smaller (padding)."""
    lo, hi = min(0, n - size), max(0, n - size)
    return int(rng.integers(lo, hi + 1))


def _ema_fill(ema: np.ndarray) -> float:
    return EMA_FILL_UINT8 if ema.dtype == np.uint8 else EMA_FILL


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices outside ``[0, n)`` mirrored without repeating the edge (numpy 'reflect')."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def _window(arr: np.ndarray, r0: int, c0: int, h: int, w: int, *, reflect: bool, fill=0):
    """``arr[..., r0:r0+h, c0:c0+w]`` with the part outside ``arr`` padded."""
    H, W = arr.shape[-2:]
    if r0 >= 0 and c0 >= 0 and r0 + h <= H and c0 + w <= W:
        return arr[..., r0 : r0 + h, c0 : c0 + w]
    if reflect:
        rows = _reflect_index(np.arange(r0, r0 + h), H)
        cols = _reflect_index(np.arange(c0, c0 + w), W)
        return arr[..., rows[:, None], cols[None, :]]
    out = np.full(arr.shape[:-2] + (h, w), fill, dtype=arr.dtype)
    ra, rb = max(r0, 0), min(r0 + h, H)
    ca, cb = max(c0, 0), min(c0 + w, W)
    if ra < rb and ca < cb:
        out[..., ra - r0 : rb - r0, ca - c0 : cb - c0] = arr[..., ra:rb, ca:cb]
    return out


def _crop(image, scribble, ema, y0: int, x0: int, size: int) -> Triple:
    img = np.array(_window(image, y0, x0, size, size, reflect=True), dtype=np.float32)
    scr = np.array(_window(scribble, y0, x0, size, size, reflect=False, fill=0))
    em = None
    if ema is not None:
        em = np.array(_window(ema, y0, x0, size, size, reflect=False, fill=_ema_fill(ema)))
    return img, scr, em


def _warp(image, scribble, ema, matrix: np.ndarray, src_centre: np.ndarray, size: int) -> Triple:
    """Sample ``src = matrix @ (out - c) + src_centre`` for a size x size output."""
    c = (size - 1) / 2.0
    corners = np.array([[0, 0], [0, size - 1], [size - 1, 0], [size - 1, size - 1]], float) - c
    src = corners @ matrix.T + src_centre
    r0, c0 = (np.floor(src.min(axis=0)) - 1).astype(int)
    r1, c1 = (np.ceil(src.max(axis=0)) + 1).astype(int)
    h, w = r1 - r0 + 1, c1 - c0 + 1
    offset = src_centre - matrix @ np.array([c, c]) - np.array([r0, c0])
    kw = dict(
        matrix=matrix, offset=offset, output_shape=(size, size), mode="nearest", prefilter=False
    )

    win = _window(image, r0, c0, h, w, reflect=True)
    img = np.empty((image.shape[0], size, size), np.float32)
    for i in range(image.shape[0]):
        ndimage.affine_transform(np.asarray(win[i], np.float32), order=1, output=img[i], **kw)
    sw = _window(scribble, r0, c0, h, w, reflect=False, fill=0)
    scr = ndimage.affine_transform(sw, order=0, **kw)
    em = None
    if ema is not None:
        ew = _window(ema, r0, c0, h, w, reflect=False, fill=_ema_fill(ema))
        em = ndimage.affine_transform(np.asarray(ew, np.float32), order=1, **kw)
        if ema.dtype == np.uint8:
            em = np.clip(np.rint(em), 0, 255).astype(np.uint8)
    return img, scr, em

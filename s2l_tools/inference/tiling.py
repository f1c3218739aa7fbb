"""Tiled prediction of images of any size with smooth blending.

A network is run on overlapping tiles; the tiles' probabilities are averaged
with a smooth weight window so that no seams appear at tile borders.

This module is also loaded by the CellProfiler plugin inside CellProfiler
4.2.8's own Python 3.9 (numpy 1.23, scipy 1.9, scikit-image 0.18/0.19, no
torch). It therefore imports only numpy and the standard library, avoids
Python 3.10-only runtime syntax, and raises :class:`ValueError` (not
``S2LError``) for bad arguments.
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "predict_tiled", "tile_positions", "blend_window", "flip_averaged", "gain_averaged",
    "gains_problem", "parse_gains", "PassProgress",
]

#: the flips :func:`flip_averaged` averages over: none, left-right, up-down, both
FLIP_AXES: Tuple[Tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


class PassProgress:
    """One ``progress(done, total)`` over several tiled passes of an image.

    Each pass's callback (:meth:`next_pass`) reports its tiles after those of the passes
    before it, so ``done`` never goes back: a model trained at one object diameter
    predicts an image twice (its own scale, then resized), and a bar fed through this
    grows its total when the second pass starts instead of starting again at 0.

    Examples
    --------
    >>> seen = []
    >>> passes = PassProgress(lambda d, t: seen.append((d, t)))
    >>> first = passes.next_pass(); first(2, 4); first(4, 4)
    >>> second = passes.next_pass(); second(9, 9)
    >>> seen
    [(2, 4), (4, 4), (13, 13)]
    """

    def __init__(self, progress: Optional[Callable[[int, int], None]]):
        self._progress = progress
        self._before = 0  # the tiles of the passes that have ended
        self._current = 0  # the current pass's total

    def next_pass(self) -> Optional[Callable[[int, int], None]]:
        """The callback for the next pass (None when there is no ``progress``)."""
        if self._progress is None:
            return None
        self._before += self._current
        self._current = 0
        before = self._before

        def report(done: int, total: int) -> None:
            self._current = int(total)
            self._progress(before + int(done), before + int(total))

        return report


def tile_positions(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``.

    Tiles advance by ``tile - overlap``; the last tile is aligned with the end
    so that no tile sticks out (it then overlaps its neighbour by more than
    ``overlap``). When ``length <= tile`` there is one tile at 0 (the caller
    pads the data to ``tile``).

    Parameters
    ----------
    length : int
        Size of the axis to cover (>= 1).
    tile : int
        Tile size (>= 1).
    overlap : int
        Minimum overlap between neighbouring tiles, ``0 <= overlap < tile``.

    Returns
    -------
    starts : list of int
        Increasing start offsets; ``starts[0] == 0`` and
        ``starts[-1] == max(length - tile, 0)``.

    Examples
    --------
    >>> tile_positions(10, 4, 1)
    [0, 3, 6]
    >>> tile_positions(11, 4, 1)
    [0, 3, 6, 7]
    >>> tile_positions(3, 4, 1)
    [0]
    """
    length, tile, overlap = int(length), int(tile), int(overlap)
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def blend_window(size: int, ramp: int) -> np.ndarray:
    """1-D blending weights: a raised-cosine ramp of ``ramp`` pixels at each end.

    The weight of pixel ``i`` rises as ``0.5 - 0.5 cos(pi (i + 0.5) / ramp)``
    from both ends and is 1 in the middle. It is strictly positive everywhere
    (the first pixel has weight ``sin^2(pi / (4 ramp)) > 0``), so a pixel
    covered by a single tile, e.g. at the image border, still gets its value.

    Parameters
    ----------
    size : int
        Window length.
    ramp : int
        Ramp length at each end (0 gives a flat window of ones); it is capped
        at ``size // 2``.

    Returns
    -------
    w : (size,) float64 ndarray
        Weights in ``(0, 1]``.
    """
    size, ramp = int(size), int(ramp)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    ramp = max(0, min(ramp, size // 2))
    w = np.ones(size, dtype=np.float64)
    if ramp == 0:
        return w
    i = np.arange(size, dtype=np.float64)
    x = np.minimum(i + 0.5, size - i - 0.5) / ramp
    x = np.clip(x, 0.0, 1.0)
    w = 0.5 - 0.5 * np.cos(np.pi * x)
    return w


def _round_up(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


def _pad_reflect(image: np.ndarray, before: Tuple[int, int], after: Tuple[int, int]) -> np.ndarray:
    """Reflect-pad the last two axes; an axis of length 1 is edge-padded."""
    h, w = image.shape[-2:]
    modes = ["reflect" if n > 1 else "edge" for n in (h, w)]
    pad_h = (before[0], after[0])
    pad_w = (before[1], after[1])
    if modes[0] == modes[1]:
        return np.pad(image, ((0, 0), pad_h, pad_w), mode=modes[0])
    out = np.pad(image, ((0, 0), pad_h, (0, 0)), mode=modes[0])
    return np.pad(out, ((0, 0), (0, 0), pad_w), mode=modes[1])


def _checked_output(out, batch_shape: Tuple[int, ...], th: int, tw: int) -> np.ndarray:
    """``fn``'s output for a batch of ``batch_shape`` as float32, checked to be (N, K, th, tw)."""
    out = np.asarray(out, dtype=np.float32)
    if out.ndim != 4 or out.shape[0] != batch_shape[0] or out.shape[2:] != (th, tw):
        raise ValueError(
            f"fn returned shape {out.shape} for a batch of shape {tuple(batch_shape)}; "
            f"expected ({batch_shape[0]}, K, {th}, {tw})"
        )
    return out


def flip_averaged(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``fn`` averaged over the four flips of its input (test-time augmentation).

    Parameters
    ----------
    fn : callable
        Maps a float32 batch ``(N, C, h, w)`` to ``(N, K, h, w)`` probabilities.

    Returns
    -------
    averaged : callable
        ``averaged(batch)`` is the mean of ``flip(fn(flip(batch)))`` over the
        flips of :data:`FLIP_AXES` (none, left-right, up-down, both), each
        output flipped back: four calls of ``fn`` per batch. A network trained
        with flips as augmentation gives a smoother, slightly more accurate
        map (+0.006 to +0.008 foreground IoU on DSB-fluo, five seeds each,
        docs/benchmarks.md).
    """

    def averaged(batch: np.ndarray) -> np.ndarray:
        total = None
        for axes in FLIP_AXES:
            # a copy each time: fn may write into its input
            inp = np.ascontiguousarray(np.flip(batch, axes)) if axes else np.array(batch)
            out = np.asarray(fn(inp), dtype=np.float32)
            out = np.flip(out, axes) if axes else out
            total = out.copy() if total is None else total + out
        return total / len(FLIP_AXES)

    return averaged


def gains_problem(gains: Sequence[float]) -> Optional[str]:
    """What is wrong with the gains of :func:`gain_averaged`, or None.

    Examples
    --------
    >>> gains_problem((1, 1.5, 2)) is None
    True
    >>> gains_problem((1, 0))
    'gains 1, 0: each must be a number above 0 (e.g. 1,1.5,2)'
    """
    if not gains or not all(math.isfinite(g) and g > 0 for g in gains):
        return ("gains {}: each must be a number above 0 (e.g. 1,1.5,2)".format(
            ", ".join("{:g}".format(g) for g in gains) or "(none)"))
    return None


def parse_gains(text: str) -> Tuple[float, ...]:
    """``"1,1.5,2"`` -> ``(1.0, 1.5, 2.0)``: the gains as a user types them.

    Raises
    ------
    ValueError
        Not numbers separated by commas, or a gain not above 0; the message says the fix.

    Examples
    --------
    >>> parse_gains(" 1, 1.5,2 ")
    (1.0, 1.5, 2.0)
    """
    try:
        gains = tuple(float(g) for g in str(text).split(","))
    except ValueError:
        raise ValueError("gains {!r}: give numbers above 0 separated by commas, "
                         "e.g. 1,1.5,2".format(text)) from None
    why = gains_problem(gains)
    if why:
        raise ValueError(why)
    return gains


def gain_averaged(
    predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray, gains: Sequence[float],
) -> np.ndarray:
    """The mean of ``predict(image * g)`` over the gains (test-time intensity augmentation).

    Parameters
    ----------
    predict : callable
        Maps a normalised ``(C, H, W)`` image to an ``(H, W)`` probability map.
    image : (C, H, W) ndarray
        The normalised image (the background near 0, so a gain brightens the cells and
        leaves the background where it is).
    gains : sequence of float
        Each one more call of ``predict``. ``(1,)``: ``predict(image)`` itself.
        ``(1, 1.5, 2)`` mends models trained on a handful of images that call dim nuclei
        background (docs/benchmarks.md, "Prediction at several gains").

    Returns
    -------
    prob : (H, W) float32 ndarray
    """
    gains = tuple(float(g) for g in gains)
    why = gains_problem(gains)
    if why:
        raise ValueError(why)
    if gains == (1.0,):
        return np.asarray(predict(image), dtype=np.float32)
    total = None
    for g in gains:
        prob = np.asarray(predict(image * np.float32(g)), dtype=np.float32)
        total = prob.copy() if total is None else total + prob
    return total / np.float32(len(gains))


def predict_tiled(
    fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    pad_multiple: int = 32,
    flips: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
) -> np.ndarray:
    """Run ``fn`` on overlapping tiles of ``image`` and blend the outputs.

    Parameters
    ----------
    fn : callable
        Maps a float32 batch ``(N, C, h, w)`` (``h``, ``w`` multiples of
        ``pad_multiple``, ``N <= batch_size``) to ``(N, K, h, w)``
        probabilities (any array convertible by ``np.asarray``).
    image : (C, H, W) float32 ndarray
        Image of any size (smaller than a tile, odd sizes, huge).
    tile : int, optional
        Tile size in pixels; a positive multiple of ``pad_multiple``. An axis
        no longer than ``tile`` is covered by one tile of the smallest
        multiple of ``pad_multiple`` that fits.
    overlap : int, optional
        Overlap between neighbouring tiles, ``0 <= overlap < tile``. It is
        also the length of the blending ramp, and ``overlap // 2`` pixels of
        reflected context are added around the image.
    batch_size : int, optional
        Tiles per ``fn`` call (>= 1). Does not change the result.
    pad_multiple : int, optional
        Tile sizes passed to ``fn`` are multiples of this (e.g. 32 for a
        U-Net with five poolings).
    flips : bool, optional
        Average each tile's output over its four flips (:func:`flip_averaged`):
        four ``fn`` calls per batch instead of one.
    progress : callable, optional
        Called as ``progress(done, total)`` (tiles) after each ``fn`` call.

    Returns
    -------
    prob : (K, H, W) float32 ndarray
        Blended outputs, cropped to the image.

    Notes
    -----
    An axis that fits in one tile (rounded up to ``pad_multiple``) is one
    tile, reflect-padded at its end; a longer axis is reflect-padded by
    ``overlap // 2`` at both ends. The padded image is tiled with
    :func:`tile_positions`, and each tile's output is multiplied by the
    separable window ``blend_window(h, overlap) x blend_window(w, overlap)``.
    The result is ``sum(w * out) / sum(w)``; the window is strictly
    positive, so every pixel is defined. A pointwise ``fn`` (e.g. a sigmoid of
    the input) therefore gives exactly ``fn(image)`` up to float rounding.
    An image that fits in one tile has no ramp (all weights are 1): its result
    is ``fn``'s output on the padded image, cropped, bit for bit.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    c, h, w = image.shape
    if h < 1 or w < 1 or c < 1:
        raise ValueError(f"image must be non-empty, got shape {image.shape}")
    tile, overlap = int(tile), int(overlap)
    batch_size, pad_multiple = int(batch_size), int(pad_multiple)
    if pad_multiple < 1:
        raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
    if tile < 1 or tile % pad_multiple:
        raise ValueError(
            f"tile must be a positive multiple of pad_multiple={pad_multiple}, got {tile}"
        )
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile={tile}), got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    image = image.astype(np.float32, copy=False)
    if flips:
        fn = flip_averaged(fn)

    sizes = []  # per axis: (tile size, padded length, leading margin)
    for n in (h, w):
        # an axis that fits in one tile is one tile, padded at its end only;
        # a longer axis gets a margin of overlap // 2 at both ends
        one = _round_up(n, pad_multiple) <= tile
        margin = 0 if one else overlap // 2
        length = n + 2 * margin
        t = min(tile, _round_up(length, pad_multiple))
        sizes.append((t, max(length, t), margin, 0 if one else overlap))
    (th, hp, my, oy), (tw, wp, mx, ox) = sizes
    padded = _pad_reflect(image, (my, mx), (hp - h - my, wp - w - mx))
    ys = tile_positions(hp, th, oy)
    xs = tile_positions(wp, tw, ox)
    positions = [(y, x) for y in ys for x in xs]
    total = len(positions)
    crop = (slice(None), slice(my, my + h), slice(mx, mx + w))
    if total == 1 and oy == 0 and ox == 0:
        # One tile without a ramp (the image fits in one tile): every weight is 1, so
        # the blend below returns the tile's output unchanged, bit for bit. Taking it
        # directly skips five image-sized passes (benchmarks/cellprofiler_bench.py).
        batch = padded[None]  # padded is our own copy: fn may write into it
        out = _checked_output(fn(batch), batch.shape, th, tw)
        if progress is not None:
            progress(1, 1)
        return np.array(out[0][crop], dtype=np.float32)
    weight = np.outer(blend_window(th, oy), blend_window(tw, ox)).astype(np.float32)
    acc = None  # (K, hp, wp), allocated once K is known
    wsum = np.zeros((hp, wp), dtype=np.float32)
    done = 0
    for b in range(0, total, batch_size):
        chunk = positions[b : b + batch_size]
        batch = np.stack([padded[:, y : y + th, x : x + tw] for y, x in chunk])
        out = _checked_output(fn(batch), batch.shape, th, tw)
        if acc is None:
            acc = np.zeros((out.shape[1], hp, wp), dtype=np.float32)
        elif out.shape[1] != acc.shape[0]:
            raise ValueError(
                f"fn returned {out.shape[1]} channels, earlier calls returned {acc.shape[0]}"
            )
        for (y, x), o in zip(chunk, out):
            acc[:, y : y + th, x : x + tw] += o * weight
            wsum[y : y + th, x : x + tw] += weight
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    assert acc is not None
    result = acc[crop] / wsum[crop[1:]][None]
    return result.astype(np.float32, copy=False)

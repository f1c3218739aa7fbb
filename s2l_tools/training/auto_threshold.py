"""``s2l-train --auto-threshold``: the mask threshold from the forest's foreground share.

A network trained on strokes learns the strokes' class shares as a prior: on DSB
brightfield the strokes are a third cell pixels and the images 2 %, so its cut at 0.5
sits too low and it calls cells where there are none. The rule needs no mask: on the
run's own training images, the threshold at which the network calls as many pixels
cell as the random forest fitted on the same strokes (the fast start's forest, its
probability at 0.5) does, never below ``--mask-threshold`` (the floor)::

    cut = max(floor, quantile(p_network over all training pixels, 1 - share_forest))

It is set once, after the last epoch, from the final model, and saved in ``model.pt``
as its threshold (s2l-predict, the export and the CellProfiler module use it). Measured
on the laptop preset's models (docs/benchmarks.md, "A cut from the forest's share"):
DSB fluorescent nuclei unchanged (5 of 5 seeds: the network calls fewer pixels cell
than the forest), H&E +0.007 / +0.008 IoU, brightfield +0.03 / +0.05 (2 of 3 seeds).

:func:`probability_histogram` and :func:`share_threshold` are plain functions of
arrays; :func:`forest_share` and :func:`final_threshold` run them over a run's
training images, each rank its share, the counts summed over the ranks (the same cut
on every rank).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["BINS", "LOGIT_RANGE", "MIN_KEPT", "probability_histogram", "share_threshold",
           "share_above", "forest_share", "final_threshold", "FinalCut"]

#: The histogram's bins are equal steps of the logit ``log(p / (1 - p))`` over
#: ``[-LOGIT_RANGE, LOGIT_RANGE]`` (steps of 0.001): a network sure of most pixels puts them
#: at 0.9999 and above, where equal steps of the probability would lump them together.
#: Probabilities beyond the range (float32's largest below 1 is 1 - 6e-8: logit 16.6) fall in
#: the first or last bin.
LOGIT_RANGE = 16.0
BINS = 32_000
_STEP = 2 * LOGIT_RANGE / BINS

#: The cut keeps at least this share of what the network calls cell at the floor: a forest
#: that found (almost) no cell on the strokes would otherwise set a threshold no pixel
#: passes, and the saved model would find nothing. The measured brightfield runs kept 61 %
#: and more (docs/benchmarks.md), far from this limit.
MIN_KEPT = 0.25


def _logit(p):
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def _edge(k: int) -> float:
    """The probability at the lower edge of bin ``k``."""
    return float(1.0 / (1.0 + np.exp(-(-LOGIT_RANGE + k * _STEP))))


def _bin(t: float) -> int:
    """The bin whose lower edge is nearest to probability ``t``."""
    return int(np.clip(np.round((_logit(t) + LOGIT_RANGE) / _STEP), 0, BINS - 1))


def probability_histogram(prob: np.ndarray) -> np.ndarray:
    """Pixel counts of ``prob`` (probabilities in [0, 1]) in :data:`BINS` bins of the logit.

    Histograms of several images add up; a rank sends its sum to the others.

    Examples
    --------
    >>> h = probability_histogram(np.array([0.0, 0.5, 0.99999, 1.0]))
    >>> h.shape, int(h[0]), int(h[BINS // 2]), int(h[-1])
    ((32000,), 1, 1, 1)
    """
    z = np.nan_to_num(_logit(np.clip(np.asarray(prob, np.float64).ravel(), 0.0, 1.0)),
                      posinf=LOGIT_RANGE, neginf=-LOGIT_RANGE)
    k = np.clip(np.floor((z + LOGIT_RANGE) / _STEP), 0, BINS - 1).astype(np.int64)
    return np.bincount(k, minlength=BINS).astype(np.int64)


def _tail_counts(hist: np.ndarray) -> np.ndarray:
    """Element ``k``: the histogram's pixels in bin ``k`` or above."""
    return np.cumsum(np.asarray(hist, np.int64)[::-1])[::-1]


def share_above(hist: np.ndarray, t: float) -> float:
    """The share of the histogram's pixels at probability ``t`` or more (to a bin).

    Examples
    --------
    >>> share_above(probability_histogram(np.array([0.2, 0.6, 0.7, 0.9])), 0.5)
    0.75
    """
    hist = np.asarray(hist, np.int64)
    return float(hist[_bin(t):].sum() / max(1, hist.sum()))


def share_threshold(hist: np.ndarray, share: float, floor: float = 0.5,
                    min_kept: float = 0.0) -> float:
    """The threshold at which ``share`` of the histogram's pixels are foreground, or ``floor``.

    The smallest bin edge ``t`` with at most ``share`` of the pixels at ``t`` or above
    (``numpy.quantile(p, 1 - share)`` rounded up to the next bin edge), never below
    ``floor``. Pixels in the last bin (p > 1 - 1e-7) cannot be split: when they alone are
    more than ``share``, the last bin's edge is returned. With ``min_kept``, the share
    matched is at least ``min_kept`` times the share at ``floor``.

    Parameters
    ----------
    hist : (BINS,) int ndarray
        :func:`probability_histogram` of the network's maps (summed over images).
    share : float
        The foreground share to match, in [0, 1] (the forest's).
    floor : float
        The lowest threshold returned (``--mask-threshold``).
    min_kept : float
        The least part of the foreground at ``floor`` the cut keeps (:data:`MIN_KEPT` in
        ``s2l-train``), in [0, 1].

    Returns
    -------
    cut : float

    Examples
    --------
    >>> hist = probability_histogram(np.linspace(0, 1, 1001))  # 0, 0.001, ..., 1
    >>> cut = share_threshold(hist, 0.2)  # the 200 largest: 0.801 and above
    >>> 0.8 < cut <= 0.801, share_threshold(hist, 0.9)
    (True, 0.5)
    >>> 0.875 < share_threshold(hist, 0.0, min_kept=0.25) <= 0.876  # a quarter of 0.5 and up
    True
    """
    hist = np.asarray(hist, np.int64)
    n = int(hist.sum())
    if hist.shape != (BINS,) or n == 0:
        raise ValueError(f"expected a histogram of {BINS} bins with pixels in it")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    if not 0.0 <= min_kept <= 1.0:
        raise ValueError(f"min_kept must be in [0, 1], got {min_kept}")
    share = max(share, min_kept * share_above(hist, floor))
    tail = _tail_counts(hist)
    few = np.flatnonzero(tail <= share * n)
    k = int(few[0]) if few.size else BINS - 1
    return max(float(floor), _edge(k))


# ----------------------------------------------------------------- over a run's images
def _sum_over_ranks(counts: dict, ctx) -> dict:
    """``counts`` summed over the ranks (a collective: every rank calls it)."""
    if ctx.world_size == 1:
        return counts
    return {k: v * ctx.world_size for k, v in ctx.mean(counts).items()}


def forest_share(data, ctx, *, seed: int, counts: tuple[float, float] | None = None) -> float:
    """The share of the training pixels the strokes' random forest calls cell (p >= 0.5).

    ``counts`` (cell pixels, pixels) are this rank's, from maps it has already made
    (the fast start's); without them the forest is fitted on ``data``'s strokes (the
    same seeded forest on every rank, as the fast start fits it) and rank ``r`` of
    ``W`` classifies every ``W``-th image, spread over as many threads as torch has
    (as the fast start does). A collective: every rank calls it.
    """
    if counts is None:
        import torch

        from s2l_tools.classic.forest import map_forest_probability

        found = map_forest_probability(
            lambda prob: (int(np.count_nonzero(prob >= 0.5)), prob.size), data.images,
            data.scribbles, range(ctx.rank, len(data.images), ctx.world_size),
            threads=torch.get_num_threads(), seed=seed)
        counts = (sum(f for f, _ in found), sum(p for _, p in found))
    s = _sum_over_ranks({"fg": float(counts[0]), "px": float(counts[1])}, ctx)
    return s["fg"] / s["px"] if s["px"] > 0 else 0.0


class FinalCut(NamedTuple):
    """What :func:`final_threshold` measured on a run's training images."""

    #: the mask threshold to save in the model
    cut: float
    #: the network's foreground share at the floor and at the cut (all training pixels)
    network: float
    at_cut: float
    #: the largest share of one training image's pixels at the cut (``s2l-predict`` names
    #: images far above it: :func:`s2l_tools.inference.onnx.unusual_limit`)
    image_max: float


def _tail_shares(hist: np.ndarray) -> np.ndarray:
    """Element ``k``: the share of the histogram's pixels in bin ``k`` or above."""
    tail = _tail_counts(hist)
    return tail / max(1, int(tail[0]))


def final_threshold(model, data, ctx, *, share: float, floor: float, meta, device,
                    amp_dtype, each=None) -> FinalCut:
    """The cut of :func:`share_threshold` for ``model`` on ``data``'s training images.

    Each image is predicted whole (tiled as ``meta`` says, un-augmented, eval mode), as
    the ensemble pass predicts; rank ``r`` of ``W`` predicts every ``W``-th image and the
    histograms are summed over the ranks. A collective: every rank calls it and gets the
    same answer. The cut keeps at least :data:`MIN_KEPT` of the network's foreground at
    ``floor``. Returns the cut, the network's foreground share at ``floor`` and at the
    cut, and the largest share of one image's pixels at the cut (a :class:`FinalCut`;
    each image's shares at every bin are kept as one running maximum, so the cut, known
    only after the pass, needs no second one). ``each(i, prob)``, if given, is called
    with every map this rank makes (the training loop counts the held-out strokes on the
    same pass).
    """
    from s2l_tools.inference.predict import predict_probability

    ctx.sync_buffers(model)  # every rank predicts with the same BatchNorm statistics
    hist = np.zeros(BINS, np.int64)
    image_tails = np.zeros(BINS, np.float64)  # per bin, the most of one image at or above
    for i in range(ctx.rank, len(data.images), ctx.world_size):
        prob = predict_probability(model, data.images[i], meta, device=device, amp=amp_dtype,
                                   batch_size=1)
        one = probability_histogram(prob)
        hist += one
        np.maximum(image_tails, _tail_shares(one), out=image_tails)
        if each is not None:
            each(i, prob)
    if ctx.world_size > 1:
        hist = sum(np.frombuffer(b, np.int64) for b in ctx.all_gather_bytes(hist.tobytes()))
        image_tails = np.maximum.reduce([np.frombuffer(b, np.float64) for b in
                                         ctx.all_gather_bytes(image_tails.tobytes())])
    cut = share_threshold(hist, share, floor, min_kept=MIN_KEPT)
    return FinalCut(cut, share_above(hist, floor), share_above(hist, cut),
                    float(image_tails[_bin(cut)]))

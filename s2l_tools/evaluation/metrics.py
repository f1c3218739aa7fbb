"""Segmentation scores on instance label images (pure functions on arrays).

All functions take a predicted and a ground-truth label image of the same
shape: integer ``(H, W)`` (or any shape) arrays, 0 = background, any
non-negative ids (they need not be sequential; ids above 255 or 65535 are
fine). Overlaps between all objects are computed at once from a sparse
contingency table, so images with thousands of objects are cheap.

Scores
------
* :func:`foreground_iou` - binary IoU of the foreground (the paper's IoU).
* :func:`mdice` - the paper's instance Dice, defined exactly in its Notes.
* :func:`match_instances`, :func:`f1_score`, :func:`average_precision` - the
  detection view of DSB2018: one-to-one matches at an IoU threshold.
* :func:`score_pair` - all of the above in one dict.

The prediction is scored as given: post-processing (connected components,
removing objects < 64 px, filling holes) belongs to
:func:`s2l_tools.inference.postprocess.instances_from_probability`, run before.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "foreground_iou",
    "mdice",
    "Matching",
    "match_instances",
    "f1_score",
    "average_precision",
    "score_pair",
]


class Matching(NamedTuple):
    """Counts of a one-to-one matching (unpacks as ``tp, fp, fn``)."""

    tp: int
    fp: int
    fn: int


def _as_labels(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{name}: label image has non-integer values")
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        raise ValueError(f"{name}: label image must be integer, got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        raise ValueError(f"{name}: label image has negative ids")
    return a


def _compact(a: np.ndarray):
    """(ids of objects, per-pixel index 0 = background, 1..N = objects)."""
    flat = a.ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= max(1 << 20, 4 * flat.size):  # lookup table: linear time
        flat = flat.astype(np.intp, copy=False)
        ids = np.flatnonzero(np.bincount(flat, minlength=1)[1:]) + 1
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return ids.astype(a.dtype), lut[flat]
    uniq, inv = np.unique(flat, return_inverse=True)
    inv = inv.reshape(-1).astype(np.int64)
    if uniq.size and uniq[0] == 0:
        return uniq[1:], inv
    return uniq, inv + 1


class _Overlap:
    """Areas and pairwise overlaps of all objects of two label images."""

    def __init__(self, pred, true):
        pred = _as_labels(pred, "pred")
        true = _as_labels(true, "true")
        if pred.shape != true.shape:
            raise ValueError(f"shape mismatch: pred {pred.shape} vs true {true.shape}")
        self.pred_ids, pidx = _compact(pred)
        self.true_ids, tidx = _compact(true)
        self.n_pred = int(self.pred_ids.size)
        self.n_true = int(self.true_ids.size)
        n = self.n_true + 1
        self.pred_area = np.bincount(pidx, minlength=self.n_pred + 1)  # [0] = background
        self.true_area = np.bincount(tidx, minlength=n)
        table = coo_matrix(
            (np.ones(pidx.size, dtype=np.int64), (pidx, tidx)),
            shape=(self.n_pred + 1, n),
        ).tocsr()  # sums duplicate (pred, true) pairs: the contingency table
        table.sum_duplicates()
        table = table.tocoo()
        pp, tt, counts = table.row.astype(np.int64), table.col.astype(np.int64), table.data
        both = (pp > 0) & (tt > 0)
        self.fg_inter = int(counts[both].sum())
        self.fg_union = int(pidx.size - counts[(pp == 0) & (tt == 0)].sum())
        # foreground pairs, 0-based object indices
        self.p = pp[both] - 1
        self.t = tt[both] - 1
        self.inter = counts[both].astype(np.float64)
        self.pa = self.pred_area[1:][self.p].astype(np.float64)
        self.ta = self.true_area[1:][self.t].astype(np.float64)

    def iou(self) -> np.ndarray:
        return self.inter / (self.pa + self.ta - self.inter)

    def dice(self) -> np.ndarray:
        return 2.0 * self.inter / (self.pa + self.ta)


def _foreground_iou(ov: _Overlap) -> float:
    if ov.fg_union == 0:
        return 1.0
    return ov.fg_inter / ov.fg_union


def _mdice(ov: _Overlap) -> float:
    if ov.n_true == 0:
        return 1.0 if ov.n_pred == 0 else 0.0
    best = np.zeros(ov.n_true, dtype=np.float64)
    if ov.inter.size:
        dice = ov.dice()
        # per GT object: largest overlap first, ties to the higher Dice
        order = np.lexsort((-dice, -ov.inter, ov.t))
        t_sorted = ov.t[order]
        first = np.unique(t_sorted, return_index=True)[1]
        best[t_sorted[first]] = dice[order][first]
    return float(best.mean())


def _match(ov: _Overlap, iou_threshold: float) -> Matching:
    iou = ov.iou()
    cand = iou > iou_threshold
    p, t, iou = ov.p[cand], ov.t[cand], iou[cand]
    if iou_threshold >= 0.5 or p.size == 0:
        tp = int(p.size)  # IoU > 0.5 matches are unique by construction
    else:
        tp = _max_matching(p, t, iou)
    return Matching(tp=tp, fp=ov.n_pred - tp, fn=ov.n_true - tp)


def _max_matching(p: np.ndarray, t: np.ndarray, iou: np.ndarray) -> int:
    """Size of the optimal one-to-one matching of candidate pairs ``(p, t)``.

    The bipartite candidate graph is split into connected components; each
    is solved by ``linear_sum_assignment`` with weights ``big + IoU`` (``big``
    larger than any total IoU), which maximises the number of matches first,
    then their total IoU.
    """
    rows, p_local = np.unique(p, return_inverse=True)
    cols, t_local = np.unique(t, return_inverse=True)
    nr, nc = rows.size, cols.size
    graph = coo_matrix(
        (np.ones(p.size), (p_local, nr + t_local)), shape=(nr + nc, nr + nc)
    )
    _, comp = connected_components(graph, directed=False)
    pair_comp = comp[p_local]
    n_pairs = np.bincount(pair_comp)
    simple = n_pairs[pair_comp] == 1  # a lone pair is matched as is
    tp = int(np.count_nonzero(simple))
    hard = ~simple
    if hard.any():
        hp, ht, hiou, hcomp = p_local[hard], t_local[hard], iou[hard], pair_comp[hard]
        order = np.argsort(hcomp, kind="stable")
        hp, ht, hiou, hcomp = hp[order], ht[order], hiou[order], hcomp[order]
        bounds = np.flatnonzero(np.diff(hcomp)) + 1
        for sl_p, sl_t, sl_iou in zip(
            np.split(hp, bounds), np.split(ht, bounds), np.split(hiou, bounds)
        ):
            r_ids, r = np.unique(sl_p, return_inverse=True)
            c_ids, c = np.unique(sl_t, return_inverse=True)
            big = float(min(r_ids.size, c_ids.size) + 1)
            w = np.zeros((r_ids.size, c_ids.size), dtype=np.float64)
            w[r, c] = big + sl_iou
            ri, ci = linear_sum_assignment(w, maximize=True)
            tp += int(np.count_nonzero(w[ri, ci] > 0))
    return tp


def _f1(m: Matching) -> float:
    den = 2 * m.tp + m.fp + m.fn
    return 1.0 if den == 0 else 2 * m.tp / den


def _ap(m: Matching) -> float:
    den = m.tp + m.fp + m.fn
    return 1.0 if den == 0 else m.tp / den


def _check_threshold(iou_threshold: float) -> float:
    iou_threshold = float(iou_threshold)
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    return iou_threshold


def foreground_iou(pred_labels: np.ndarray, true_labels: np.ndarray) -> float:
    """Binary IoU of the foregrounds ``pred > 0`` and ``true > 0``.

    Parameters
    ----------
    pred_labels, true_labels : (H, W) integer ndarray
        Label images (0 = background) of the same shape; masks work too.

    Returns
    -------
    iou : float
        ``|P & T| / |P | T|``; 1.0 when both are empty.

    Examples
    --------
    >>> a = np.zeros((4, 4), int); a[:2] = 1
    >>> b = np.zeros((4, 4), int); b[:, :2] = 5
    >>> foreground_iou(a, b)
    0.3333333333333333
    """
    pred = _as_labels(pred_labels, "pred")
    true = _as_labels(true_labels, "true")
    if pred.shape != true.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs true {true.shape}")
    p, t = pred > 0, true > 0  # no object table needed: the same counts as _Overlap's
    union = int(np.count_nonzero(p | t))
    return 1.0 if union == 0 else int(np.count_nonzero(p & t)) / union


def mdice(pred_labels: np.ndarray, true_labels: np.ndarray) -> float:
    """Instance mean Dice (mDice) of the Scribble2Label paper.

    Parameters
    ----------
    pred_labels, true_labels : (H, W) integer ndarray
        Predicted and ground-truth label images (0 = background), same shape.

    Returns
    -------
    mdice : float
        In [0, 1].

    Notes
    -----
    For each ground-truth object :math:`g`, let :math:`p` be the predicted
    object with the largest overlap :math:`|g \\cap p|` (ties go to the pair
    with the higher Dice). Then

    .. math:: D(g) = \\frac{2 |g \\cap p|}{|g| + |p|},

    and :math:`D(g) = 0` when no predicted object overlaps :math:`g`. The
    score is the mean of :math:`D(g)` over all ground-truth objects. An image
    without ground-truth objects scores 1.0 if it has no predicted objects
    either, else 0.0. Averaging over images is the caller's job.

    Unlike the authors' code, small ground-truth objects are scored like any
    other (no "< 20 px scores 1" rule), objects touching the border are not
    treated specially and ids are not clipped at 255. The prediction is
    scored as given: the paper's post-processing (connected components,
    removing objects smaller than 64 px, filling holes) happens before, in
    :func:`s2l_tools.inference.postprocess.instances_from_probability`, not here.

    Examples
    --------
    >>> t = np.zeros((4, 8), int); t[:, :4] = 1
    >>> p = np.zeros((4, 8), int); p[:, :2] = 1; p[:, 2:4] = 2
    >>> mdice(p, t)  # 2 * 8 / (16 + 8)
    0.6666666666666666
    """
    return _mdice(_Overlap(pred_labels, true_labels))


def match_instances(
    pred_labels: np.ndarray, true_labels: np.ndarray, *, iou_threshold: float = 0.5
) -> Matching:
    """One-to-one matching of predicted and ground-truth objects.

    Parameters
    ----------
    pred_labels, true_labels : (H, W) integer ndarray
        Label images (0 = background), same shape.
    iou_threshold : float, optional
        A pair can match when its IoU is strictly greater than this
        (DSB2018: "an IoU above the threshold"), in [0, 1).

    Returns
    -------
    matching : Matching
        ``(tp, fp, fn)``: matched pairs, unmatched predicted objects,
        unmatched ground-truth objects.

    Notes
    -----
    For ``iou_threshold >= 0.5`` every object has at most one partner with
    IoU above the threshold (such a partner covers more than half of the
    union), so the candidate pairs are the matching. Below 0.5 an optimal
    assignment (``scipy.optimize.linear_sum_assignment``) maximises the
    number of matches, then their total IoU.
    """
    return _match(_Overlap(pred_labels, true_labels), _check_threshold(iou_threshold))


def f1_score(
    pred_labels: np.ndarray, true_labels: np.ndarray, *, iou_threshold: float = 0.5
) -> float:
    """Detection F1 ``2 TP / (2 TP + FP + FN)`` of :func:`match_instances`.

    1.0 when both images have no objects.
    """
    return _f1(match_instances(pred_labels, true_labels, iou_threshold=iou_threshold))


def average_precision(
    pred_labels: np.ndarray, true_labels: np.ndarray, *, iou_threshold: float = 0.5
) -> float:
    """DSB2018 precision at one threshold: ``TP / (TP + FP + FN)``.

    Uses :func:`match_instances`; 1.0 when both images have no objects. The
    DSB2018 leaderboard score averages this over thresholds 0.5, 0.55, ...,
    0.95 (call this function per threshold for that).
    """
    return _ap(match_instances(pred_labels, true_labels, iou_threshold=iou_threshold))


def score_pair(pred_labels: np.ndarray, true_labels: np.ndarray) -> dict:
    """All scores of one image, from a single overlap computation.

    Parameters
    ----------
    pred_labels, true_labels : (H, W) integer ndarray
        Label images (0 = background), same shape.

    Returns
    -------
    scores : dict
        ``iou`` (:func:`foreground_iou`), ``mdice`` (:func:`mdice`),
        ``f1_50`` and ``ap_50`` (:func:`f1_score`, :func:`average_precision`
        at IoU > 0.5) as floats; ``n_true``, ``n_pred``, ``tp``, ``fp``,
        ``fn`` as ints.
    """
    ov = _Overlap(pred_labels, true_labels)
    m = _match(ov, 0.5)
    return {
        "iou": float(_foreground_iou(ov)),
        "mdice": float(_mdice(ov)),
        "f1_50": float(_f1(m)),
        "ap_50": float(_ap(m)),
        "n_true": ov.n_true,
        "n_pred": ov.n_pred,
        "tp": m.tp,
        "fp": m.fp,
        "fn": m.fn,
    }

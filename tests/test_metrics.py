"""Tests of s2l_tools.evaluation.metrics on hand-made label images."""

from __future__ import annotations

import numpy as np
import pytest

from s2l_tools.evaluation.metrics import (
    average_precision,
    f1_score,
    foreground_iou,
    match_instances,
    mdice,
    score_pair,
)


def _squares(shape=(40, 40), boxes=((2, 2, 10, 10), (20, 20, 30, 32)), ids=None, dtype=np.int32):
    lab = np.zeros(shape, dtype)
    for k, (y0, x0, y1, x1) in enumerate(boxes):
        lab[y0:y1, x0:x1] = ids[k] if ids else k + 1
    return lab


def test_identical_labels_score_one():
    lab = _squares()
    s = score_pair(lab, lab)
    assert s == {
        "iou": 1.0, "mdice": 1.0, "f1_50": 1.0, "ap_50": 1.0,
        "n_true": 2, "n_pred": 2, "tp": 2, "fp": 0, "fn": 0,
    }


def test_shifted_square():
    true = np.zeros((20, 20), np.int32)
    true[2:12, 2:12] = 1  # 100 px
    pred = np.zeros((20, 20), np.int32)
    pred[2:12, 4:14] = 1  # shifted by 2 columns: overlap 80, union 120
    assert foreground_iou(pred, true) == pytest.approx(80 / 120)
    assert mdice(pred, true) == pytest.approx(2 * 80 / 200)
    assert match_instances(pred, true) == (1, 0, 0)
    # shift by 4: overlap 60, union 140, IoU 0.43 < 0.5: no match
    pred2 = np.zeros((20, 20), np.int32)
    pred2[2:12, 6:16] = 1
    assert mdice(pred2, true) == pytest.approx(0.6)
    tp, fp, fn = match_instances(pred2, true)
    assert (tp, fp, fn) == (0, 1, 1)
    assert f1_score(pred2, true) == 0.0
    assert match_instances(pred2, true, iou_threshold=0.4).tp == 1


def test_split_cell():
    true = np.zeros((10, 20), np.int32)
    true[:, :16] = 1  # 160 px
    pred = np.zeros((10, 20), np.int32)
    pred[:, :8] = 3  # 80 px each: IoU 0.5 with the GT, not > 0.5
    pred[:, 8:16] = 9
    s = score_pair(pred, true)
    assert s["iou"] == 1.0
    assert s["mdice"] == pytest.approx(2 * 80 / (160 + 80))
    assert (s["tp"], s["fp"], s["fn"]) == (0, 2, 1)
    assert s["f1_50"] == 0.0 and s["ap_50"] == 0.0
    # unequal halves: the bigger one matches
    pred[:, 8:16] = 3
    pred[:, 12:16] = 9  # 120 px and 40 px
    s = score_pair(pred, true)
    assert s["mdice"] == pytest.approx(2 * 120 / (160 + 120))
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 0)
    assert s["f1_50"] == pytest.approx(2 / 3) and s["ap_50"] == pytest.approx(1 / 2)


def test_missing_and_extra_objects():
    true = _squares(boxes=((2, 2, 10, 10), (20, 20, 30, 30), (32, 2, 38, 8)))
    pred = _squares(boxes=((2, 2, 10, 10), (12, 30, 16, 38)))
    # GT: dice 1, 0, 0 -> 1/3; matches: 1 tp, 1 fp, 2 fn
    assert mdice(pred, true) == pytest.approx(1 / 3)
    assert match_instances(pred, true) == (1, 1, 2)
    assert f1_score(pred, true) == pytest.approx(2 / 5)
    assert average_precision(pred, true) == pytest.approx(1 / 4)


def test_empty_cases():
    empty = np.zeros((10, 10), np.int32)
    lab = _squares(shape=(10, 10), boxes=((1, 1, 5, 5),))
    s = score_pair(empty, empty)
    assert (s["iou"], s["mdice"], s["f1_50"], s["ap_50"]) == (1.0, 1.0, 1.0, 1.0)
    s = score_pair(lab, empty)  # prediction without GT objects
    assert (s["iou"], s["mdice"], s["f1_50"], s["ap_50"]) == (0.0, 0.0, 0.0, 0.0)
    assert (s["tp"], s["fp"], s["fn"], s["n_pred"], s["n_true"]) == (0, 1, 0, 1, 0)
    s = score_pair(empty, lab)  # nothing predicted
    assert (s["iou"], s["mdice"], s["f1_50"], s["ap_50"]) == (0.0, 0.0, 0.0, 0.0)
    assert (s["tp"], s["fp"], s["fn"]) == (0, 0, 1)


def test_label_permutation_invariance():
    rng = np.random.default_rng(0)
    true = np.zeros((64, 64), np.int32)
    pred = np.zeros((64, 64), np.int32)
    for k in range(16):
        y, x = divmod(k, 4)
        true[y * 16 + 2 : y * 16 + 14, x * 16 + 2 : x * 16 + 14] = k + 1
        dy, dx = rng.integers(-3, 4, size=2)
        pred[y * 16 + 2 + dy : y * 16 + 12 + dy, x * 16 + 2 + dx : x * 16 + 12 + dx] = k + 1
    ref = score_pair(pred, true)
    perm_p = np.concatenate([[0], rng.permutation(16) + 1])
    perm_t = np.concatenate([[0], rng.permutation(16) + 1])
    assert score_pair(perm_p[pred], perm_t[true]) == ref


def test_non_sequential_large_ids():
    true = _squares(ids=[7, 300])
    pred = _squares(ids=[70000, 2**40], dtype=np.int64)
    ref = score_pair(_squares(), _squares())
    assert score_pair(pred, true) == ref
    assert score_pair(pred.astype(np.uint64), true.astype(np.uint16)) == ref
    assert score_pair(_squares(ids=[255, 256]).astype(np.float32), true) == ref
    assert score_pair(true.astype(np.uint64), true.astype(np.uint32)) == ref
    assert score_pair(true > 0, true) == score_pair(_squares(ids=[1, 1]), true)


def test_hungarian_below_half_maximises_matches():
    true = np.zeros((10, 30), np.int32)
    pred = np.zeros((10, 30), np.int32)
    true[:, 0:10] = 1  # 100 px
    true[:, 14:24] = 2  # 100 px
    pred[:, 1:16] = 1  # A, 150 px: IoU 90/160 with GT1, 20/230 with GT2
    pred[:, 0:1] = 2  # B, 10 px: IoU 10/100 with GT1
    # the largest total IoU would be the single pair A-GT1; two matches are possible
    assert match_instances(pred, true, iou_threshold=0.05) == (2, 0, 0)
    assert match_instances(pred, true, iou_threshold=0.3) == (1, 1, 1)
    assert match_instances(pred, true, iou_threshold=0.5) == (1, 1, 1)
    assert f1_score(pred, true, iou_threshold=0.05) == 1.0


def test_many_objects_fast():
    rng = np.random.default_rng(1)
    n = 80  # 6400 objects on a 960 x 960 grid
    true = np.zeros((n * 12, n * 12), np.int32)
    ys, xs = np.divmod(np.arange(n * n), n)
    for k, (y, x) in enumerate(zip(ys, xs)):
        true[y * 12 + 1 : y * 12 + 11, x * 12 + 1 : x * 12 + 11] = k + 1
    pred = np.roll(true, 1, axis=1)
    pred[pred == 5] = 0  # one object missed
    s = score_pair(pred, true)
    assert s["n_true"] == n * n and s["n_pred"] == n * n - 1
    assert (s["tp"], s["fp"], s["fn"]) == (n * n - 1, 0, 1)
    assert s["mdice"] == pytest.approx((n * n - 1) * 0.9 / (n * n))
    assert match_instances(pred, true, iou_threshold=0.1).tp == n * n - 1


def test_bad_inputs():
    a = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="shape"):
        score_pair(a, np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="negative"):
        mdice(a - 1, a)
    with pytest.raises(ValueError, match="non-integer"):
        foreground_iou(a + 0.5, a)
    with pytest.raises(ValueError, match="iou_threshold"):
        match_instances(a, a, iou_threshold=1.0)


def test_foreground_iou_is_score_pairs_and_takes_masks():
    """foreground_iou (computed without the object table) equals score_pair's IoU, bit for
    bit; boolean masks (the training loop's prob > 0.5) score as label images."""
    rng = np.random.default_rng(4)
    for _ in range(5):
        pred = rng.integers(0, 4, (30, 40)) * (rng.random((30, 40)) > 0.5)
        true = rng.integers(0, 300, (30, 40)) * (rng.random((30, 40)) > 0.4)
        assert foreground_iou(pred, true) == score_pair(pred, true)["iou"]
        assert foreground_iou(pred > 0, true > 0) == score_pair(pred, true)["iou"]
    empty = np.zeros((5, 5), bool)
    assert foreground_iou(empty, empty) == 1.0
    with pytest.raises(ValueError, match="shape mismatch"):
        foreground_iou(empty, np.zeros((5, 6), bool))

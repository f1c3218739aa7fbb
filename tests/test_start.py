"""The fast start's first map (s2l_tools.classic.start): GrabCut dropped where it fails."""

import numpy as np
import pytest

from s2l_tools.classic.forest import fit_forest
from s2l_tools.classic.start import first_map, foreground_agreement


def _cells(seed, texture=0.0):
    """Bright discs on a dark background; ``texture`` adds bright speckle to the background
    (which GrabCut's colour model takes for cells, while the forest's scales tell apart)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    truth = np.zeros((96, 96), bool)
    scr = np.zeros((96, 96), np.uint8)
    for cy, cx in ((24, 24), (24, 70), (70, 30), (68, 72)):
        truth |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 100
        scr[cy - 1:cy + 2, cx - 4:cx + 4] = 2
    scr[46:48, 4:92] = 1
    scr[4:92, 47:49] = 1
    image = truth * 0.6 + 0.2 + rng.normal(0, 0.03, truth.shape)
    if texture:
        image = image + texture * (rng.random(truth.shape) < 0.3) * ~truth
    return np.clip(image, 0, 1)[None].astype(np.float32), scr, truth


def test_agreement():
    a = np.zeros((4, 4), bool)
    assert foreground_agreement(a, a) == 1.0
    b = a.copy(); b[0] = True
    assert foreground_agreement(a, b) == 0.0 and foreground_agreement(b, b) == 1.0


def test_first_map_kinds_and_the_agreement_rule():
    image, scr, truth = _cells(0)
    forest = fit_forest([image], [scr], seed=0)
    forest_only, used = first_map(image, scr, forest=forest)
    assert not used and forest_only.dtype == np.float32
    grab, used = first_map(image, scr, grabcut=True)
    assert used and set(np.unique(grab)) <= {0.0, 1.0}
    both, used = first_map(image, scr, forest=forest, grabcut=True)
    # on clean cells the two agree: the mean, confident only where both are
    assert used and np.allclose(both, (forest_only + grab) / 2)
    assert ((both > 0.8) & ~truth).sum() <= ((forest_only > 0.8) & ~truth).sum()
    # demanding more overlap than there is: the forest alone
    agree = foreground_agreement(forest_only > 0.5, grab > 0.5)
    alone, used = first_map(image, scr, forest=forest, grabcut=True, min_agreement=agree + 1e-6)
    assert not used and np.array_equal(alone, forest_only)
    kept, used = first_map(image, scr, forest=forest, grabcut=True, min_agreement=0)
    assert used and np.array_equal(kept, both)
    with pytest.raises(ValueError, match="forest"):
        first_map(image, scr)


def test_first_map_deterministic():
    image, scr, _ = _cells(1)
    forest = fit_forest([image], [scr], seed=0)
    a, _ = first_map(image, scr, forest=forest, grabcut=True, seed=3)
    b, _ = first_map(image, scr, forest=forest, grabcut=True, seed=3)
    assert np.array_equal(a, b)


def test_grabcut_dropped_where_it_fails():
    """Speckled background: GrabCut's colour model calls it cell (IoU with the truth < 0.2),
    the forest does not; their mean would veto the forest's cells, the rule keeps them."""
    image, scr, truth = _cells(0, texture=0.7)
    forest = fit_forest([image], [scr], seed=0)
    forest_only, _ = first_map(image, scr, forest=forest)
    grab, _ = first_map(image, scr, grabcut=True)
    iou = lambda a: (a & truth).sum() / (a | truth).sum()  # noqa: E731
    assert iou(grab > 0.5) < 0.2 < 0.8 < iou(forest_only > 0.5)
    start, used = first_map(image, scr, forest=forest, grabcut=True)
    assert not used and np.array_equal(start, forest_only)
    vetoed = (forest_only + grab) / 2  # the start before the rule
    confident = lambda m: ((m > 0.8) & truth).sum()  # noqa: E731  cells pseudo-labelled
    assert confident(start) > 0.5 * truth.sum() > confident(vetoed)

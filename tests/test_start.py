"""The fast start's first map (s2l_tools.classic.start): GrabCut left out where it fails."""

import numpy as np
import pytest

from s2l_tools.classic.forest import ForestSettings, fit_forest
from s2l_tools.classic.start import (MIN_AGREEMENT, classic_maps, combine, keep_grabcut,
                                     sample_images)
from s2l_tools.evaluation.metrics import foreground_iou
from s2l_tools.training.config import TrainConfig


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


def test_agreement_sample_and_rule():
    a = np.zeros((4, 4), bool)
    assert foreground_iou(a, a) == 1.0
    b = a.copy()
    b[0] = True
    assert foreground_iou(a, b) == 0.0 and foreground_iou(b, b) == 1.0
    assert sample_images(100, 32)[0] == 0 and sample_images(100, 32)[-1] == 99
    assert len(sample_images(100, 32)) == 32 and sample_images(3, 32) == [0, 1, 2]
    # the median decides, so a few images where GrabCut fails do not drop it
    assert keep_grabcut([0.8, 0.7, 0.05, 0.6]) and not keep_grabcut([0.1, 0.2, 0.9])
    assert keep_grabcut([0.1], min_agreement=0) and keep_grabcut([])
    # s2l-train's default is the measured one (config.py writes it out)
    assert TrainConfig().grabcut_agreement == MIN_AGREEMENT


def test_maps_and_their_mean():
    image, scr, truth = _cells(0)
    forest = fit_forest([image], [scr], settings=ForestSettings(n_estimators=20), seed=0)
    prob, proposal = classic_maps(image, scr, forest=forest, grabcut=True, seed=0)
    assert prob.dtype == np.float32 and proposal.dtype == bool
    assert classic_maps(image, scr, forest=forest)[1] is None
    assert classic_maps(image, scr, grabcut=True)[0] is None
    both = combine(prob, proposal)
    assert np.allclose(both, (prob + proposal) / 2) and np.array_equal(combine(prob, None), prob)
    assert set(np.unique(combine(None, proposal))) <= {0.0, 1.0}
    # on clean cells the two agree (the mean is kept), and the mean is confident
    # on no more background than the forest alone
    assert foreground_iou(prob > 0.5, proposal) > 0.8
    assert ((both > 0.8) & ~truth).sum() <= ((prob > 0.8) & ~truth).sum()
    # GrabCut is seeded: the same proposal again
    assert np.array_equal(classic_maps(image, scr, grabcut=True, seed=0)[1], proposal)
    with pytest.raises(ValueError, match="both"):
        combine(None, None)


def test_grabcut_left_out_where_it_fails():
    """Speckled background: GrabCut's colour model calls it cell (IoU with the truth < 0.2),
    the forest does not; their mean vetoes the forest's cells, the rule keeps them."""
    cases = [_cells(k, texture=0.7) for k in range(3)]
    forest = fit_forest([c[0] for c in cases], [c[1] for c in cases],
                        settings=ForestSettings(n_estimators=20), seed=0)
    agree = []
    for image, scr, truth in cases:
        prob, proposal = classic_maps(image, scr, forest=forest, grabcut=True)
        assert foreground_iou(proposal, truth) < 0.2 < 0.8 < foreground_iou(prob > 0.5, truth)
        agree.append(foreground_iou(prob > 0.5, proposal))
        confident = lambda m: ((m > 0.8) & truth).sum()  # noqa: E731  cells pseudo-labelled
        assert confident(combine(prob, None)) > 0.5 * truth.sum() > confident(combine(prob, proposal))
    assert not keep_grabcut(agree)

"""GrabCut from scribbles (s2l_tools.classic.grabcut)."""

import numpy as np
import pytest

from s2l_tools.classic.grabcut import grabcut_proposal, to_bgr8


def test_to_bgr8():
    grey = np.array([[[-0.5, 0.0, 0.5, 2.0]]], np.float32)
    out = to_bgr8(grey)
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 0, 128, 255] and (out[..., 0] == out[..., 2]).all()
    two = to_bgr8(np.ones((2, 3, 3), np.float32))
    assert (two[..., :2] == 255).all() and (two[..., 2] == 0).all()
    assert to_bgr8(np.zeros((5, 3, 3), np.float32)).shape == (3, 3, 3)
    with pytest.raises(ValueError, match="C, H, W"):
        to_bgr8(np.zeros((3, 3)))


def test_proposal_fills_scribbled_cells():
    yy, xx = np.mgrid[:64, :64]
    truth = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 64) | ((yy - 44) ** 2 + (xx - 40) ** 2 <= 81)
    rng = np.random.default_rng(0)
    image = (truth * 0.7 + 0.1 + rng.normal(0, 0.05, truth.shape))[None].astype(np.float32)
    scr = np.zeros(truth.shape, np.uint8)
    scr[19:22, 18:23] = 2          # a short stroke in each cell
    scr[43:46, 38:43] = 2
    scr[2:4, 2:60] = 1             # background strokes across the top and the left
    scr[10:60, 58:60] = 1
    fg = grabcut_proposal(to_bgr8(image), scr)
    iou = (fg & truth).sum() / (fg | truth).sum()
    assert iou > 0.85, iou
    assert not grabcut_proposal(to_bgr8(image), np.where(scr == 1, 1, 0).astype(np.uint8)).any()
    assert grabcut_proposal(to_bgr8(image), np.where(scr == 2, 2, 0).astype(np.uint8)).all()


def test_proposal_is_reproducible_in_any_thread():
    """GrabCut's k-means draws from OpenCV's per-thread generator: seeded per call, the
    proposal does not depend on what ran before in the thread, or on which thread runs it
    (s2l-train's fast start spreads the images over threads)."""
    from concurrent.futures import ThreadPoolExecutor

    from s2l_tools.data.demo_data import make_nuclei_image
    from s2l_tools.data.synth import synthesize_scribbles
    from s2l_tools.io.images import normalize

    cases = []
    for k in range(6):
        img, lab = make_nuclei_image(shape=(96, 96), n_cells=(6, 10), rng=np.random.default_rng(k))
        cases.append((to_bgr8(normalize(img[None])), synthesize_scribbles(lab, ratio=0.3, seed=k)))
    first = [grabcut_proposal(im, scr) for im, scr in cases]
    again = [grabcut_proposal(im, scr) for im, scr in reversed(cases)][::-1]
    with ThreadPoolExecutor(3) as pool:
        pooled = list(pool.map(lambda c: grabcut_proposal(*c), cases))
    for a, b, c in zip(first, again, pooled):
        assert (a == b).all() and (a == c).all()
    assert any(f.any() and not f.all() for f in first)

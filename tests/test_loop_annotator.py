"""benchmarks/loop.py's simulated annotators: the strokes docs/benchmarks.md's loop rows rest on."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

from s2l_tools import labels as L

_SPEC = importlib.util.spec_from_file_location(
    "loop_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "loop.py")
loop = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = loop  # as an import would (its dataclass looks itself up)
_SPEC.loader.exec_module(loop)


def _scene():
    """Two square cells in a 64 x 64 image; nothing scribbled."""
    labels = np.zeros((64, 64), np.int32)
    labels[10:26, 10:26] = 1
    labels[36:52, 36:52] = 2
    return labels, np.zeros((64, 64), np.uint8)


def test_a_halo_gets_a_background_stroke_beside_the_cell_not_on_it():
    labels, scribble = _scene()
    prob = np.zeros((64, 64), np.float32)
    prob[6:30, 6:30] = 0.9  # cell 1 found, with a 4-px halo around it
    prob[36:52, 36:52] = 0.9
    where = np.ones((64, 64), bool)
    pixels, code = loop.correcting_stroke(labels, scribble, prob, where)
    assert code == L.BACKGROUND and pixels.sum() >= 8
    assert not (pixels & (labels > 0)).any()
    # beside the cell: in the halo, not on the cell's 8-neighbours
    assert (prob[pixels] >= 0.5).all() and not pixels[9:27, 9:27].any()


def test_a_missed_cell_gets_its_skeleton_and_no_error_no_stroke():
    labels, scribble = _scene()
    prob = np.zeros((64, 64), np.float32)
    prob[10:26, 10:26] = 0.9  # cell 2 missed
    pixels, code = loop.correcting_stroke(labels, scribble, prob, np.ones((64, 64), bool))
    assert code == L.FOREGROUND and pixels.any() and (labels[pixels] == 2).all()
    # only the region shown counts: around cell 1 the prediction is right
    around_1 = np.zeros((64, 64), bool)
    around_1[4:32, 4:32] = True
    assert loop.correcting_stroke(labels, scribble, prob, around_1) is None


def test_a_scribbled_cell_gets_a_stroke_in_its_missed_part_only():
    labels, scribble = _scene()
    scribble[18, 12:24] = L.FOREGROUND  # cell 1 has a stroke
    prob = np.zeros((64, 64), np.float32)
    prob[10:26, 10:18] = 0.9  # its right half missed
    prob[36:52, 36:52] = 0.9
    pixels, code = loop.correcting_stroke(labels, scribble, prob, np.ones((64, 64), bool))
    assert code == L.FOREGROUND and pixels.any()
    assert (labels[pixels] == 1).all() and not pixels[:, :18].any()


def test_the_paired_annotators_ring_lies_beside_its_cell_and_off_the_neighbour():
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15] = 1
    labels[5:15, 17:25] = 2  # 2 px to the right of cell 1
    ring = loop.ring_stroke(labels, 1)
    assert ring.sum() >= 30 and not (ring & (labels > 0)).any()
    from scipy import ndimage as ndi

    d1 = ndi.distance_transform_edt(labels != 1)
    assert ((d1[ring] >= 1.5) & (d1[ring] <= 2.5)).all()  # 2 px outside cell 1
    # not drawn in the 2-px gap against cell 2: nearer to it than to cell 1's outline
    assert not ring[5:15, 15:17].any()
    assert not (ring & (ndi.distance_transform_edt(labels != 2) < 1.5)).any()


def test_the_random_arm_adds_its_strokes_on_the_truth(tmp_path):
    """add_strokes("random", ...): n strokes, cell strokes on cells, background strokes off
    them, none over an existing stroke; no run needed (it asks for no prediction)."""
    import tifffile

    assert not loop.ARMS["random"].needs_prediction
    assert all(a.needs_prediction for k, a in loop.ARMS.items() if k != "random")
    labels = np.zeros((64, 64), np.int32)
    labels[8:24, 8:24], labels[36:56, 30:50] = 1, 2
    scribble = np.zeros((64, 64), np.uint8)
    scribble[15, 10:20] = L.FOREGROUND
    (tmp_path / "scribbles").mkdir()
    tifffile.imwrite(tmp_path / "scribbles" / "a.tif", scribble)
    added, seconds = loop.add_strokes("random", tmp_path, ["a"], {"a": labels}, 4,
                                      run=tmp_path / "no-run", rng=np.random.default_rng(0))
    new = tifffile.imread(tmp_path / "scribbles" / "a.tif")
    assert added == 4 and seconds == 0.0
    assert np.array_equal(new[15, 10:20], scribble[15, 10:20])
    assert (labels[new == L.FOREGROUND] > 0).all() and (labels[new == L.BACKGROUND] == 0).all()
    assert (new != scribble).sum() > 0


def test_an_image_without_strokes_gets_a_scribble_file_only_once_it_has_one(tmp_path):
    """--scribbled-images: an image with no scribble file is read as unscribbled; the
    strokes a round adds to it write its file, and an image still without any stays out
    (no empty file, which would put it in the training); the start's count skips it."""
    import tifffile

    labels = np.zeros((64, 64), np.int32)
    labels[8:56, 8:56] = 1  # most pixels are cell: random strokes land there
    scribble = np.zeros((64, 64), np.uint8)
    scribble[30, 20:40] = L.FOREGROUND
    (tmp_path / "scribbles").mkdir()
    tifffile.imwrite(tmp_path / "scribbles" / "a.tif", scribble)
    truth = {"a": labels, "b": labels.copy(), "c": np.zeros((1, 1), np.int32)}
    assert loop.count_strokes(tmp_path, ["a", "b", "c"]) == 1
    added, _ = loop.add_strokes("random", tmp_path, ["a", "b", "c"], truth, 3,
                                run=tmp_path / "no-run", rng=np.random.default_rng(1))
    assert added == 3
    assert (tmp_path / "scribbles" / "b.tif").is_file()  # the cell's stroke in "b"
    assert (tifffile.imread(tmp_path / "scribbles" / "b.tif") == L.FOREGROUND).any()
    # "c" (1 px of the 8,193 the draws pick from by area) got no stroke: no file for it
    assert not (tmp_path / "scribbles" / "c.tif").exists()


def test_the_spread_order_takes_every_images_best_region_before_any_second():
    ranked = [(0.9, "a", 1), (0.8, "a", 2), (0.7, "b", 1), (0.6, "a", 3), (0.5, "c", 1),
              (0.4, "b", 2)]
    assert loop.spread(ranked) == [(0.9, "a", 1), (0.7, "b", 1), (0.5, "c", 1),
                                   (0.8, "a", 2), (0.4, "b", 2), (0.6, "a", 3)]
    assert loop.ARMS["suggest-spread"].order == "spread"

"""Tests of s2l_tools.inference.postprocess (probability -> instance labels)."""

from __future__ import annotations

import numpy as np
import pytest

from s2l_tools.inference.postprocess import (
    fill_holes_per_object,
    instances_from_probability,
    relabel_sequential,
)


def _disc(shape, center, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def _touching_discs():
    shape = (60, 80)
    return (_disc(shape, (30, 25), 12) | _disc(shape, (30, 47), 12)).astype(np.float32)


def test_touching_discs_split_by_watershed():
    prob = _touching_discs()
    merged = instances_from_probability(prob, declump="none")
    assert merged.max() == 1
    split = instances_from_probability(prob, declump="watershed")
    assert split.dtype == np.int32 and split.max() == 2
    assert split[30, 25] != split[30, 47] and split[30, 25] > 0 and split[30, 47] > 0
    assert np.array_equal(split > 0, prob > 0.5)
    sizes = np.bincount(split.ravel())[1:]
    assert abs(int(sizes[0]) - int(sizes[1])) <= 0.1 * sizes.max()


def test_touching_cells_are_split_by_default_on_every_prediction_path(tmp_path):
    """Declumping is on by default (measured on the DSB val splits: docs/benchmarks.md),
    the same in the library, the ONNX reader the CellProfiler module runs and s2l-predict."""
    import inspect

    from s2l_tools.cli.predict import get_parser
    from s2l_tools.inference import onnx as oi
    from s2l_tools.inference.postprocess import DEFAULT_DECLUMP
    from s2l_tools.inference.predict import predict_files, predict_image

    assert DEFAULT_DECLUMP == "watershed"
    assert instances_from_probability(_touching_discs()).max() == 2
    for fn in (predict_image, predict_files, oi.segment):
        assert inspect.signature(fn).parameters["declump"].default == DEFAULT_DECLUMP, fn
    parser = get_parser()
    assert parser.parse_args(["m", "i", "--out", "o"]).declump == "watershed"
    assert parser.parse_args(["m", "i", "--out", "o", "--declump", "none"]).declump == "none"
    assert parser.parse_args(["m", "i", "--out", "o", "--watershed"]).declump == "watershed"


def test_watershed_explicit_min_distance_and_single_disc():
    prob = _touching_discs()
    assert instances_from_probability(prob, declump="watershed", min_distance=5).max() == 2
    # markers closer than the discs' centre distance cannot both survive
    assert instances_from_probability(prob, declump="watershed", min_distance=30).max() == 1
    one = _disc((40, 40), (20, 20), 10).astype(np.float32)
    assert instances_from_probability(one, declump="watershed").max() == 1


def test_small_object_removed():
    prob = np.zeros((50, 50), np.float32)
    prob[5:15, 5:15] = 1  # 100 px
    prob[30:37, 30:39] = 1  # 63 px
    prob[40:48, 40:48] = 1  # exactly 64 px: kept
    lab = instances_from_probability(prob, min_size=64)
    assert lab.max() == 2
    assert (lab[30:37, 30:39] == 0).all()
    assert (lab[40:48, 40:48] > 0).all()
    assert instances_from_probability(prob, min_size=0).max() == 3


def test_hole_filled():
    prob = np.zeros((40, 40), np.float32)
    prob[5:25, 5:25] = 1
    prob[10:15, 10:15] = 0
    lab = instances_from_probability(prob)
    assert lab.max() == 1 and (lab[5:25, 5:25] == 1).all()
    assert (instances_from_probability(prob, fill_holes=False)[10:15, 10:15] == 0).all()


def test_hole_between_neighbours_not_filled():
    """Background enclosed only by two objects together stays background."""
    lab = np.zeros((30, 30), np.int32)
    lab[5:25, 5:10] = 1  # a "U" made of two objects: left bar + bottom bar
    lab[20:25, 10:25] = 2
    lab[5:20, 20:25] = 2
    lab[5:10, 10:20] = 2  # object 2 with object 1 closes a pocket
    out = fill_holes_per_object(lab)
    assert (out[10:20, 10:20] == 0).all()
    assert np.array_equal(out, lab)


def test_object_inside_hole_keeps_its_label():
    lab = np.zeros((40, 40), np.int32)
    lab[5:35, 5:35] = 1
    lab[10:30, 10:30] = 0
    lab[15:25, 15:25] = 2
    out = fill_holes_per_object(lab)
    assert (out[15:25, 15:25] == 2).all()
    assert (out[10:15, 10:30] == 1).all()


def test_hole_in_one_object_does_not_merge_neighbour():
    prob = np.zeros((40, 60), np.float32)
    prob[5:30, 5:30] = 1
    prob[12:20, 12:20] = 0  # hole
    prob[5:30, 35:55] = 1  # separate neighbour
    lab = instances_from_probability(prob)
    assert lab.max() == 2
    assert (lab[12:20, 12:20] == lab[6, 6]).all()
    assert lab[6, 40] != lab[6, 6]
    assert (lab[:, 30:35] == 0).all()


def test_labels_sequential():
    rng = np.random.default_rng(0)
    prob = np.zeros((100, 100), np.float32)
    for _ in range(12):
        y, x = rng.integers(10, 90, size=2)
        prob[y - 5 : y + 5, x - 5 : x + 5] = rng.uniform(0.6, 1.0)
    prob[0:3, 0:3] = 1  # removed (9 px)
    lab = instances_from_probability(prob, min_size=20)
    ids = np.unique(lab)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, ids.size))


def test_empty_probability_gives_zeros():
    for prob in (np.zeros((30, 40)), np.full((30, 40), 0.5)):
        lab = instances_from_probability(prob, declump="watershed")
        assert lab.shape == (30, 40) and lab.dtype == np.int32 and not lab.any()


def test_threshold_is_strict():
    prob = np.zeros((20, 20), np.float32)
    prob[2:12, 2:12] = 0.5
    assert instances_from_probability(prob, min_size=1).max() == 0
    prob[2:12, 2:12] = np.nextafter(np.float32(0.5), np.float32(1))
    assert instances_from_probability(prob, min_size=1).max() == 1
    prob[2:12, 2:12] = 0.3
    assert instances_from_probability(prob, threshold=0.29, min_size=1).max() == 1
    assert instances_from_probability(prob, threshold=0.3, min_size=1).max() == 0


def test_eight_connectivity():
    prob = np.zeros((20, 20), np.float32)
    prob[2:10, 2:10] = 1
    prob[10:18, 10:18] = 1  # touches the first square at a corner only
    assert instances_from_probability(prob, min_size=1, declump="none").max() == 1


def test_relabel_sequential_large_ids():
    lab = np.zeros((5, 5), np.int64)
    lab[0, 0] = 70000
    lab[1, 1] = 7
    lab[2, 2] = 2**40
    out = relabel_sequential(lab)
    assert out.dtype == np.int32
    assert (out[1, 1], out[0, 0], out[2, 2]) == (1, 2, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="2-D"):
        instances_from_probability(np.zeros((2, 5, 5)))
    with pytest.raises(ValueError, match="declump"):
        instances_from_probability(np.zeros((5, 5)), declump="distance")
    with pytest.raises(ValueError, match="NaN"):
        instances_from_probability(np.full((5, 5), np.nan))
    with pytest.raises(ValueError, match="min_distance"):
        instances_from_probability(np.zeros((5, 5)), min_distance=0)


def test_fill_holes_matches_filling_every_object():
    """Only objects next to a hole of the whole foreground are filled one by one: the
    same result as filling each object separately, on random blobs with holes."""
    from scipy import ndimage as ndi

    from s2l_tools.inference.postprocess import fill_holes_per_object

    rng = np.random.default_rng(4)
    for _ in range(5):
        fg = ndi.gaussian_filter(rng.random((96, 96)), 2) > 0.5
        fg[rng.random((96, 96)) < 0.05] = False  # pinholes
        labels, _ = ndi.label(fg, structure=np.ones((3, 3)))
        want = labels.copy()
        for i, sl in enumerate(ndi.find_objects(labels), start=1):
            obj = labels[sl] == i
            new = ndi.binary_fill_holes(obj) & ~obj & (want[sl] == 0)
            want[sl][new] = i
        got = fill_holes_per_object(labels)
        assert (got != labels).any()
        np.testing.assert_array_equal(got, want)

"""Tests of s2l_tools.inference.postprocess (probability -> instance labels)."""

from __future__ import annotations

import inspect

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


def test_default_min_size_keeps_small_nuclei():
    """New models, s2l-train and the array function share one default, and it keeps a nucleus
    of 40 px (DSB2018 has 10-13 % under 64 px; 64 was the default until 2026-12-03)."""
    from s2l_tools.training.checkpoint import DEFAULT_MIN_SIZE, ModelMeta
    from s2l_tools.training.config import TrainConfig

    default = inspect.signature(instances_from_probability).parameters["min_size"].default
    assert default == DEFAULT_MIN_SIZE == ModelMeta().min_size
    assert TrainConfig(data="d", out="o").min_size == DEFAULT_MIN_SIZE
    prob = np.zeros((30, 30), np.float32)
    prob[2:10, 2:7] = 1  # 40 px: a small nucleus, kept
    prob[20:24, 20:25] = 1  # 20 px: a speck, removed
    lab = instances_from_probability(prob)
    assert lab.max() == 1 and (lab[2:10, 2:7] > 0).all() and (lab[20:24, 20:25] == 0).all()


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


# ---------------------------------------------------------------- declumping: fast == definition


def _reference_instances(prob, *, threshold=0.5, min_size=32, fill_holes=True,
                         declump="watershed", min_distance=None):
    """instances_from_probability as defined (and implemented before issue 17 item 5): the
    peaks of every object by ``peak_local_max(labels=...)``, one watershed over the whole
    image, then ``remove_small_objects`` and ``relabel_sequential``."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.segmentation import watershed

    from s2l_tools.inference.postprocess import remove_small_objects

    labels = label(prob > threshold, connectivity=2)
    if fill_holes:
        labels = fill_holes_per_object(labels)
    if declump == "watershed" and labels.any():
        md = min_distance
        if md is None:
            areas = np.bincount(labels.ravel())[1:]
            areas = areas[areas > 0]
            big = areas[areas >= max(min_size, 1)]
            areas = big if big.size else areas
            md = max(1, int(round(0.5 * np.sqrt(float(np.median(areas)) / np.pi))))
        mask = labels > 0
        smooth = ndi.gaussian_filter(ndi.distance_transform_edt(mask), sigma=1.0) * mask
        coords = peak_local_max(smooth, min_distance=md, labels=labels, exclude_border=False)
        peaks = np.zeros(labels.shape, bool)
        peaks[coords[:, 0], coords[:, 1]] = True
        markers = label(peaks, connectivity=2)
        out = watershed(-smooth, markers, mask=mask, connectivity=2).astype(np.int64)
        missing = mask & (out == 0)
        out[missing] = labels[missing] + out.max()
        labels = out
    if min_size > 1:
        labels = remove_small_objects(labels, min_size)
    return relabel_sequential(labels)


def _nuclei_maps(seed, size=160):
    """A camera image of synthetic nuclei scaled to [0, 1] (noisy edges, specks, pinholes)
    and its true foreground blurred with noise (clumps merged, as a network gives)."""
    from scipy import ndimage as ndi

    from s2l_tools.data.demo_data import make_nuclei_image

    rng = np.random.default_rng(seed)
    img, lab = make_nuclei_image(shape=(size, size), n_cells=(10, 22), rng=rng)
    img = img.astype(np.float64)
    bg, fg = np.median(img[lab == 0]), np.median(img[lab > 0])
    soft = ndi.gaussian_filter((lab > 0).astype(float), 1.5)
    soft += 0.15 * ndi.gaussian_filter(rng.standard_normal(soft.shape), 1.0)
    return [np.clip((img - bg) / (fg - bg), 0, 1), np.clip(soft, 0, 1)]


def _edge_case_map():
    """Mirror-symmetric touching discs and clumps (equal markers), objects cut by the image
    border, a filled hole holding another object (so objects touch), a ring, bars
    (plateaus), 1-pixel and 2-pixel objects, a corner-touching pair."""
    shape = (112, 144)
    m = _disc(shape, (30, 25), 12) | _disc(shape, (30, 47), 12)
    m |= _disc(shape, (80, 30), 9) | _disc(shape, (80, 46), 9) | _disc(shape, (94, 38), 9)
    m[0:14, 60:100] = True  # border, a plateau
    m[100:, 120:] = True
    m[:, -3:] = True  # a 3-px bar along the border
    m[40:70, 70:100] = True  # a square with a hole and an object inside it
    m[46:64, 76:94] = False
    m[51:59, 81:89] = True
    m |= _disc(shape, (90, 95), 12) & ~_disc(shape, (90, 95), 7)  # a ring
    m[20:26, 110:130] = True
    m[5, 5] = True
    m[8, 8:10] = True
    m[108, 2] = True
    m[60:66, 110:116] = True  # touches the next square by a corner only
    m[66:72, 116:122] = True
    return m.astype(np.float32)


_SETTINGS = (
    {},
    {"min_size": 0, "min_distance": 1},
    {"min_size": 1, "min_distance": 2},
    {"min_distance": 6, "fill_holes": False},
)


@pytest.mark.parametrize("settings", _SETTINGS)
def test_declumping_equals_whole_image_definition(settings):
    """Only objects with two or more markers are flooded, each in its box, and the peaks
    come from one maximum filter: the labels are still exactly the definition's, on
    synthetic nuclei, noisy blobs and edge cases."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(11)
    maps = _nuclei_maps(0) + _nuclei_maps(1) + [_edge_case_map(), _touching_discs()]
    for _ in range(2):
        blobs = ndi.gaussian_filter(rng.random((96, 96)), rng.uniform(1.5, 4))
        blobs = (blobs - blobs.min()) / np.ptp(blobs)
        blobs[rng.random(blobs.shape) < 0.03] = 0  # pinholes
        maps.append(blobs)
    maps.append(np.zeros((40, 50), np.float32))
    for k, prob in enumerate(maps):
        want = _reference_instances(prob, **settings)
        got = instances_from_probability(prob, **settings)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want, err_msg=f"map {k}, {settings}")
    prob = _edge_case_map()
    assert instances_from_probability(prob, declump="none", **settings).max() < (
        instances_from_probability(prob, **settings).max())


@pytest.mark.parametrize("min_distance", [1, 2, 3, 5, 9])
def test_object_peaks_equal_peak_local_max(min_distance):
    """The per-object peaks from one whole-image maximum filter (and a window-by-window check
    where a neighbour's larger value hides an object's own maximum) are peak_local_max's."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.measure import label

    from s2l_tools.inference.postprocess import _object_peaks

    for prob in _nuclei_maps(2) + [_edge_case_map()]:
        # holes kept: the object in the square's hole must not touch the square
        labels = label(prob > 0.5, connectivity=2)
        mask = labels > 0
        smooth = ndi.gaussian_filter(ndi.distance_transform_edt(mask), sigma=1.0) * mask
        assert not np.any((ndi.maximum_filter(labels, size=3) != labels) & mask)  # apart
        coords = peak_local_max(smooth, min_distance=min_distance, labels=labels,
                                exclude_border=False)
        want = np.sort(coords[:, 0] * labels.shape[1] + coords[:, 1])
        got = _object_peaks(smooth, labels, np.flatnonzero(labels), np.bincount(labels.ravel()),
                            min_distance, ndi.find_objects(labels))
        np.testing.assert_array_equal(got, want)


def test_object_peaks_of_flat_objects_equal_peak_local_max():
    """An object whose values are all equal gets, as in peak_local_max, the pixels that an
    opening removes instead of all its pixels (corners of a square, tips of a plus)."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max

    from s2l_tools.inference.postprocess import _object_peaks

    labels = np.zeros((40, 40), np.int32)
    labels[2:5, 2:5] = 1  # 3 x 3
    labels[10:15, 10:15] = 2  # 5 x 5
    labels[20, 21:24] = labels[21:24, 22] = 3  # a plus ...
    labels[24, 22] = 3
    labels[30, 30] = 4  # one pixel
    labels[33:35, 2:20] = 5  # a bar
    smooth = np.array([0, 2.0, 1.5, 1.0, 3.0, 2.0])[labels]
    smooth[33, 10] = 2.5  # ... and the bar is not flat
    for md in (1, 2, 3):
        coords = peak_local_max(smooth, min_distance=md, labels=labels, exclude_border=False)
        want = np.sort(coords[:, 0] * 40 + coords[:, 1])
        got = _object_peaks(smooth, labels, np.flatnonzero(labels), np.bincount(labels.ravel()),
                            md, ndi.find_objects(labels))
        np.testing.assert_array_equal(got, want)
        assert 2 * 40 + 2 in got and 3 * 40 + 3 not in got  # a corner, not the centre


def test_distances_and_smoothing_on_object_pixels_equal_whole_image_filters():
    """The distance transform box by box and the Gaussian computed at the objects' pixels
    only are bit for bit scipy's whole-image results (objects at the border, thin ones,
    images down to 4 pixels wide); the Gaussian's gathered form is used on x86-64."""
    import platform

    from scipy import ndimage as ndi
    from skimage.measure import label

    from s2l_tools.inference.postprocess import _object_distances, _smooth_at
    from s2l_tools.inference import postprocess as pp

    maps = _nuclei_maps(3) + [_edge_case_map()]
    rng = np.random.default_rng(5)
    maps += [rng.random((h, w)) for h, w in ((4, 30), (30, 5), (7, 7), (64, 48))]
    for prob in maps:
        labels = label(prob > 0.5, connectivity=2)
        mask = labels > 0
        if mask.all() or not mask.any():
            continue
        want = ndi.distance_transform_edt(mask)
        dist = _object_distances(labels, ndi.find_objects(labels))
        np.testing.assert_array_equal(dist, want)
        np.testing.assert_array_equal(
            _smooth_at(dist, np.flatnonzero(mask)), ndi.gaussian_filter(want, 1.0) * mask)
    if platform.machine() in ("x86_64", "AMD64"):
        assert pp._GATHER_EXACT is True


def test_fill_holes_says_when_objects_touch_after_filling():
    """Filling a hole that holds another object makes the two touch: the fast declumping
    then runs the whole-image definition (objects must be apart for the box-by-box work)."""
    from scipy import ndimage as ndi

    from s2l_tools.inference.postprocess import _fill_holes

    lab = np.zeros((40, 40), np.int32)
    lab[5:35, 5:35] = 1
    lab[10:30, 10:30] = 0
    lab[15:25, 15:25] = 2  # inside the hole: touches 1 once the hole is filled
    lab[37:40, 0:3] = 3
    out, touching = _fill_holes(lab, lambda: ndi.find_objects(lab))
    assert touching and np.array_equal(out, fill_holes_per_object(lab))
    lab[15:25, 15:25] = 0  # a plain hole
    out, touching = _fill_holes(lab, lambda: ndi.find_objects(lab))
    assert not touching and (out[10:30, 10:30] == 1).all()
    lab[5:35, 5:35] = 0  # nothing to fill: the input itself comes back
    out, touching = _fill_holes(lab, lambda: ndi.find_objects(lab))
    assert out is lab and not touching


def _cells(missed: int, found: int, *, shape=(128, 128), radius=8):
    """A probability map of cells on a grid: ``found`` called (0.9 inside, a 0.3 halo ramping
    to 0.15 outside, as a network's edge), then ``missed`` only outlined (a faint 0.2 ring,
    0.02 inside), as a network that sees a cell it does not call."""
    prob = np.full(shape, 0.01, np.float32)
    centres = [(16 + 32 * (i // 4), 16 + 32 * (i % 4)) for i in range(missed + found)]
    for k, c in enumerate(centres):
        outer = _disc(shape, c, radius + 2)
        if k < found:
            prob[outer] = 0.15
            prob[_disc(shape, c, radius + 1)] = 0.3
            prob[_disc(shape, c, radius)] = 0.9
        else:
            prob[outer] = 0.2
            prob[_disc(shape, c, radius - 1)] = 0.02
    return prob


def test_under_called_names_cells_outlined_not_called():
    """Where the network outlines cells faintly and calls few of them, the image is named;
    where it calls every cell it sees (a halo at its edges), or sees nothing, it is not."""
    from s2l_tools.inference.postprocess import under_called, under_called_share

    missed = _cells(missed=10, found=2)
    of_seen, of_image = under_called_share(missed)
    assert of_seen > 0.6 and of_image > 0.1 and under_called(missed)
    found = _cells(missed=0, found=12)
    assert under_called_share(found) == (0.0, 0.0) and not under_called(found)
    # one outlined cell among eleven called: a small share of what was seen
    assert not under_called(_cells(missed=1, found=11))
    assert under_called_share(np.zeros((32, 32))) == (0.0, 0.0)
    # the mask's threshold decides what is called: at 0.15 the outlines are cells
    assert not under_called(missed, threshold=0.15)


def test_under_called_ignores_specks_and_haze():
    """A sparse image: one called cell, a faint haze under 0.1 over the background, and
    faint specks under 30 px each: nothing seen and not called that counts."""
    from s2l_tools.inference.postprocess import UNDER_MIN_PART, under_called, under_called_share

    prob = np.full((200, 200), 0.08, np.float32)  # haze below UNDER_LOW
    prob[_disc(prob.shape, (100, 100), 8)] = 0.9
    for y in range(10, 200, 20):  # 5 x 5 specks at 0.3, apart, away from the cell
        for x in range(10, 200, 20):
            if abs(y - 100) > 20 or abs(x - 100) > 20:
                prob[y - 2:y + 3, x - 2:x + 3] = 0.3
    assert 25 < UNDER_MIN_PART
    assert under_called_share(prob) == (0.0, 0.0) and not under_called(prob)
    # a faint part as big as a cell far from any called one is counted
    prob[_disc(prob.shape, (30, 30), 12)] = 0.2
    assert under_called_share(prob)[0] > 0.5


def test_under_called_bad_shape():
    from s2l_tools.inference.postprocess import under_called_share

    with pytest.raises(ValueError, match="must be"):
        under_called_share(np.zeros((2, 8, 8)))

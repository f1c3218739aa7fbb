"""Synthetic scribbles: s2l_tools.data.synth and the s2l-synth command."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.draw import disk

from s2l_tools.errors import S2LWarning
from s2l_tools.labels import BACKGROUND, BACKGROUND_CLASS, FOREGROUND, FOREGROUND_CLASS
from s2l_tools.cli.synth import main
from s2l_tools.data.synth import (
    BACKGROUND_MARGIN,
    NEAR_DISTANCE,
    handdrawn_rois,
    image_seed,
    synthesize_scribbles,
)

RATIOS = (0.1, 0.3, 0.5, 1.0)


def make_labels(shape=(256, 256), n_cells=40, seed=0) -> np.ndarray:
    """Non-overlapping discs of radius 6..13, labelled 1..n_cells."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    n = 0
    while n < n_cells:
        radius = int(rng.integers(6, 14))
        centre = rng.integers(radius, np.array(shape) - radius)
        rr, cc = disk(tuple(centre), radius, shape=shape)
        if not labels[rr, cc].any():
            n += 1
            labels[rr, cc] = n
    return labels


@pytest.fixture(scope="module")
def labels():
    return make_labels()


@pytest.fixture(scope="module")
def by_ratio(labels):
    return {r: synthesize_scribbles(labels, ratio=r, seed=3) for r in RATIOS}


def test_output_convention(labels, by_ratio):
    s = by_ratio[0.5]
    assert s.shape == labels.shape and s.dtype == np.uint8
    assert set(np.unique(s).tolist()) == {0, BACKGROUND, FOREGROUND}


def test_same_seed_same_scribbles_other_seed_other(labels):
    a = synthesize_scribbles(labels, ratio=0.3, seed=7)
    b = synthesize_scribbles(labels, ratio=0.3, rng=np.random.default_rng(7))
    c = synthesize_scribbles(labels, ratio=0.3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_ratios_grow_strictly_and_nest(by_ratio):
    fg = [int((by_ratio[r] == FOREGROUND).sum()) for r in RATIOS]
    bg = [int((by_ratio[r] == BACKGROUND).sum()) for r in RATIOS]
    assert fg == sorted(set(fg)), fg
    assert bg == sorted(set(bg)), bg
    for small, large in zip(RATIOS[:-1], RATIOS[1:]):  # same seed: a superset
        lo, hi = by_ratio[small], by_ratio[large]
        assert np.all(hi[lo > 0] == lo[lo > 0])


def test_number_of_scribbled_cells_follows_ratio(labels, by_ratio):
    n_cells = int(labels.max())
    for r in RATIOS:
        cells = np.unique(labels[by_ratio[r] == FOREGROUND])
        assert len(cells) == max(1, round(r * n_cells))


def test_classes_stay_on_their_side(labels, by_ratio):
    cells = labels > 0
    touching = ndi.binary_dilation(cells, structure=np.ones((3, 3), bool))
    for s in by_ratio.values():
        assert np.all(cells[s == FOREGROUND])
        assert not np.any(touching[s == BACKGROUND])


def test_scribbles_are_one_pixel_wide(by_ratio):
    for s in by_ratio.values():
        m = s > 0
        assert not np.any(m[:-1, :-1] & m[1:, :-1] & m[:-1, 1:] & m[1:, 1:])


def test_near_background_runs_beside_the_cells(labels):
    distance = ndi.distance_transform_edt(labels == 0)
    for ratio in (0.1, 1.0):
        near = synthesize_scribbles(labels, ratio=ratio, seed=3, background="near")
        far = synthesize_scribbles(labels, ratio=ratio, seed=3)
        assert np.array_equal(near == FOREGROUND, far == FOREGROUND)  # same cells
        d = distance[near == BACKGROUND]
        assert d.size and d.min() >= 2 and d.max() <= NEAR_DISTANCE + 0.5
        assert np.median(distance[far == BACKGROUND]) > 2 * NEAR_DISTANCE  # skeleton: far off
        m = near > 0
        assert not np.any(m[:-1, :-1] & m[1:, :-1] & m[:-1, 1:] & m[1:, 1:])  # 1 px wide
    with pytest.raises(ValueError, match="background='ring'.*skeleton, near, mixed"):
        synthesize_scribbles(labels, ratio=0.5, background="ring")


def test_mixed_background_splits_the_segments(labels):
    distance = ndi.distance_transform_edt(labels == 0)
    previous = None
    for ratio in RATIOS:
        mixed = synthesize_scribbles(labels, ratio=ratio, seed=3, background="mixed")
        far = synthesize_scribbles(labels, ratio=ratio, seed=3)
        assert np.array_equal(mixed == FOREGROUND, far == FOREGROUND)
        bg = ndi.label(mixed == BACKGROUND, structure=np.ones((3, 3), bool))[0]
        beside = [np.max(distance[bg == i]) <= NEAR_DISTANCE + 0.5 for i in range(1, bg.max() + 1)]
        assert any(beside) and not all(beside)  # some strokes beside cells, some midway
        if previous is not None:  # a larger ratio scribbles a superset
            assert np.all(mixed[previous > 0] == previous[previous > 0])
        previous = mixed


def test_near_background_falls_back_to_the_skeleton():
    labels = np.zeros((20, 40), np.int32)
    labels[:, :17] = 1  # the only background is a 3-px strip: no outline 3 px out
    labels[:, 20:] = 2
    for background in ("near", "mixed"):
        s = synthesize_scribbles(labels, ratio=1.0, seed=0, background=background)
        assert np.any(s == BACKGROUND) and np.all(labels[s == BACKGROUND] == 0)


def test_tiny_cells_get_a_pixel():
    labels = np.zeros((40, 40), np.int32)
    labels[5, 5] = 1
    labels[20:22, 20:22] = 7  # sparse ids are fine
    labels[30:32, 5:8] = 9
    s = synthesize_scribbles(labels, ratio=1.0, seed=0)
    assert set(np.unique(labels[s == FOREGROUND]).tolist()) == {1, 7, 9}
    assert np.any(s == BACKGROUND)


def test_both_classes_even_with_thin_background():
    labels = np.ones((20, 20), np.uint8)
    labels[:, 9:11] = 0  # a background gap too thin for the margin
    labels[:, 11:] = 2
    s = synthesize_scribbles(labels, ratio=0.1, seed=0)
    assert np.any(s == FOREGROUND) and np.any(s == BACKGROUND)
    assert np.all(labels[s == BACKGROUND] == 0)


def test_no_cell_warns_and_scribbles_background():
    with pytest.warns(S2LWarning, match="no cell"):
        s = synthesize_scribbles(np.zeros((64, 64), np.uint8), ratio=0.5, seed=0)
    assert np.any(s == BACKGROUND) and not np.any(s == FOREGROUND)


def test_no_background_warns():
    with pytest.warns(S2LWarning, match="no background"):
        s = synthesize_scribbles(np.ones((16, 16), np.uint8), ratio=1.0, seed=0)
    assert np.any(s == FOREGROUND) and not np.any(s == BACKGROUND)


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, float("nan")])
def test_bad_ratio(labels, ratio):
    with pytest.raises(ValueError, match=r"ratio.*\(0, 1\]"):
        synthesize_scribbles(labels, ratio=ratio, seed=0)


@pytest.mark.parametrize(
    "bad, match",
    [(np.zeros((4, 4, 4), np.uint8), "2-D"), (np.zeros((4, 4), np.float32), "integer"),
     (np.zeros((4, 4), bool), "integer"), (-np.ones((4, 4), np.int32), "negative")],
)
def test_bad_labels(bad, match):
    with pytest.raises(ValueError, match=match):
        synthesize_scribbles(bad, ratio=0.5, seed=0)


def test_rng_and_seed_together(labels):
    with pytest.raises(ValueError, match="either"):
        synthesize_scribbles(labels, ratio=0.5, seed=0, rng=np.random.default_rng(0))


def test_image_seed_is_stable():
    a = np.random.default_rng(image_seed(0, "a")).integers(1 << 30)
    assert a == np.random.default_rng(image_seed(0, "a")).integers(1 << 30)
    assert a != np.random.default_rng(image_seed(0, "b")).integers(1 << 30)
    assert a != np.random.default_rng(image_seed(1, "a")).integers(1 << 30)


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def data(tmp_path):
    masks = tmp_path / "data" / "masks"
    masks.mkdir(parents=True)
    tifffile.imwrite(masks / "a.tif", make_labels((96, 96), 8, seed=1))
    import imageio.v3 as iio

    iio.imwrite(masks / "b.png", make_labels((80, 96), 6, seed=2).astype(np.uint8))
    return tmp_path / "data"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


def test_cli_writes_scribbles(data, capsys):
    assert main([str(data), "--ratio", "0.5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 scribble masks" in out and "foreground" in out
    import imageio.v3 as iio

    for stem, labels in (("a", tifffile.imread(data / "masks" / "a.tif")),
                         ("b", iio.imread(data / "masks" / "b.png"))):
        s = tifffile.imread(data / "scribbles" / f"{stem}.tif")
        assert s.dtype == np.uint8 and s.shape == labels.shape
        assert np.any(s == FOREGROUND) and np.all(labels[s == FOREGROUND] > 0)
        assert np.any(s == BACKGROUND) and np.all(labels[s == BACKGROUND] == 0)
    assert not list((data / "scribbles").glob(".*"))  # no temporary files left


def test_cli_background_near(data, capsys):
    assert main([str(data), "--ratio", "1", "--background", "near"]) == 0
    labels = tifffile.imread(data / "masks" / "a.tif")
    s = tifffile.imread(data / "scribbles" / "a.tif")
    d = ndi.distance_transform_edt(labels == 0)[s == BACKGROUND]
    assert d.size and d.max() <= NEAR_DISTANCE + 0.5
    assert main([str(data), "--ratio", "1", "--background", "ring", "--overwrite"]) == 2
    assert "invalid choice: 'ring'" in capsys.readouterr().err


def test_cli_refuses_to_overwrite(data, capsys):
    assert main([str(data), "--ratio", "0.5"]) == 0
    target = data / "scribbles" / "a.tif"
    hand_made = np.zeros((96, 96), np.uint8)
    hand_made[10, 10:20] = FOREGROUND
    tifffile.imwrite(target, hand_made)
    capsys.readouterr()
    assert main([str(data), "--ratio", "0.5"]) == 1
    err = one_line_error(capsys)
    assert "--overwrite" in err and "a.tif" in err
    np.testing.assert_array_equal(tifffile.imread(target), hand_made)
    assert main([str(data), "--ratio", "0.5", "--overwrite"]) == 0
    assert not np.array_equal(tifffile.imread(target), hand_made)


def test_cli_refuses_to_sit_beside_other_scribbles(data, capsys):
    (data / "scribbles").mkdir()
    import imageio.v3 as iio

    iio.imwrite(data / "scribbles" / "a.png", np.zeros((96, 96), np.uint8))
    assert main([str(data), "--ratio", "0.5", "--overwrite"]) == 1
    assert "a.png" in one_line_error(capsys)
    assert not (data / "scribbles" / "a.tif").exists()


def test_cli_seed_per_image_is_stable(data):
    assert main([str(data), "--ratio", "0.3", "--seed", "4"]) == 0
    before = tifffile.imread(data / "scribbles" / "a.tif")
    tifffile.imwrite(data / "masks" / "0.tif", make_labels((64, 64), 4, seed=5))
    assert main([str(data), "--ratio", "0.3", "--seed", "4", "--overwrite"]) == 0
    np.testing.assert_array_equal(tifffile.imread(data / "scribbles" / "a.tif"), before)
    assert main([str(data), "--ratio", "0.3", "--seed", "5", "--overwrite"]) == 0
    assert not np.array_equal(tifffile.imread(data / "scribbles" / "a.tif"), before)


def test_cli_missing_masks_folder(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--ratio", "0.5"]) == 1
    err = one_line_error(capsys)
    assert str(tmp_path / "nope" / "masks") in err and "no such folder" in err


def test_cli_empty_masks_folder(tmp_path, capsys):
    (tmp_path / "masks").mkdir()
    assert main([str(tmp_path), "--ratio", "0.5"]) == 1
    assert "no label images" in one_line_error(capsys)


@pytest.mark.parametrize("ratio", ["0", "1.5"])
def test_cli_bad_ratio(data, capsys, ratio):
    assert main([str(data), "--ratio", ratio]) == 1
    assert "--ratio" in one_line_error(capsys)
    assert not (data / "scribbles").exists()


def test_cli_mask_not_2d(data, capsys):
    tifffile.imwrite(data / "masks" / "c.tif", np.zeros((3, 8, 8), np.uint16),
                     photometric="minisblack")
    assert main([str(data), "--ratio", "0.5"]) == 1
    assert "c.tif" in one_line_error(capsys)
    assert not (data / "scribbles").exists()  # validated before anything is written


def test_cli_unreadable_mask(data, capsys):
    (data / "masks" / "c.tif").write_bytes(b"not a tiff")
    assert main([str(data), "--ratio", "0.5"]) == 1
    assert "c.tif" in one_line_error(capsys)
    assert not (data / "scribbles").exists()


def test_cli_warns_about_an_image_without_cells(data, capsys):
    tifffile.imwrite(data / "masks" / "c.tif", np.zeros((32, 32), np.uint16))
    assert main([str(data), "--ratio", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "c.tif" in err and "no cell" in err


def test_cli_help_has_example(capsys):
    assert main(["--help"]) == 0
    assert "example:" in capsys.readouterr().out


def test_cli_rois_round_trip(data, capsys):
    roi = pytest.importorskip("s2l_tools.io.roi")
    assert main([str(data), "--ratio", "0.5", "--rois"]) == 0
    for stem in "ab":
        mask = tifffile.imread(data / "scribbles" / f"{stem}.tif")
        rois = roi.read_rois(data / "rois" / f"{stem}.zip")
        np.testing.assert_array_equal(roi.rois_to_scribbles(rois, mask.shape), mask)
    assert not list((data / "rois").glob(".*"))
    assert main([str(data), "--ratio", "0.5", "--rois", "--overwrite"]) == 0
    for stem in "ab":
        (data / "scribbles" / f"{stem}.tif").unlink()
    assert main([str(data), "--ratio", "0.5", "--rois"]) == 1  # the ROI sets exist
    assert "a.zip" in one_line_error(capsys)


# --------------------------------------------------------------------------- hand-drawn strokes


@pytest.fixture(scope="module")
def small_labels():
    return make_labels((128, 128), 14, seed=4)


@pytest.fixture(scope="module")
def hand(small_labels):
    return {r: handdrawn_rois(small_labels, ratio=r, seed=3) for r in (0.3, 1.0)}


def by_class(rois):
    from s2l_tools.io.roi import roi_class

    classes = [roi_class(roi) for roi in rois]
    assert None not in classes
    return ([r for r, k in zip(rois, classes) if k == FOREGROUND_CLASS],
            [r for r, k in zip(rois, classes) if k == BACKGROUND_CLASS])


def test_hand_counts_and_classes(small_labels, hand):
    import roifile

    from s2l_tools.io.roi import rasterize_roi

    for ratio, rois in hand.items():
        k = max(1, round(ratio * int(small_labels.max())))
        fg, bg = by_class(rois)
        assert k <= len(fg) <= 2 * k and len(bg) == k
        assert rois == fg + bg  # the ROI Manager's order: cells first
        assert [r.group for r in fg] == [1] * len(fg) and [r.group for r in bg] == [2] * len(bg)
        assert [r.name for r in fg] == [f"fg-{i:04d}" for i in range(1, len(fg) + 1)]
        assert [r.name for r in bg] == [f"bg-{i:04d}" for i in range(1, len(bg) + 1)]
        assert {r.roitype for r in rois} == {roifile.ROI_TYPE.POLYLINE}
        assert all(r.subpixel_coordinates is None and r.n_coordinates >= 2 for r in rois)
        cells = set()
        for roi in fg:  # each stroke in one cell; k cells scribbled
            under = np.unique(small_labels[rasterize_roi(roi, small_labels.shape)])
            assert len(under) == 1 and under[0] > 0
            cells.add(int(under[0]))
        assert len(cells) == k
    widths = [r.stroke_width for r in hand[1.0]]
    assert set(widths) == {1, 2, 3}
    assert all(r.float_stroke_width == 0 for r in hand[1.0])


def test_hand_strokes_stay_on_their_side(small_labels, hand):
    from s2l_tools.io.roi import rois_to_scribbles

    cells = small_labels > 0
    touching = ndi.binary_dilation(cells, structure=np.ones((3, 3), bool))
    for rois in hand.values():  # S2LWarning is an error: no overlap, nothing off the image
        s = rois_to_scribbles(rois, small_labels.shape)
        assert np.any(s == FOREGROUND) and np.all(cells[s == FOREGROUND])
        assert np.any(s == BACKGROUND) and not np.any(touching[s == BACKGROUND])


def test_hand_background_beside_cells_and_across_background(small_labels, hand):
    from s2l_tools.io.roi import rasterize_roi

    distance = ndi.distance_transform_edt(small_labels == 0)
    beside = across = 0
    _, bg = by_class(hand[1.0])
    for roi in bg:
        d = distance[rasterize_roi(roi, small_labels.shape)]
        assert d.min() > BACKGROUND_MARGIN  # a clear margin, whatever the width
        beside += d.max() <= 6.5
        across += d.min() > 6
    assert beside >= len(bg) // 3 and across >= len(bg) // 3, (beside, across, len(bg))
    _, bg = by_class(handdrawn_rois(small_labels, ratio=0.01, seed=3))
    assert len(bg) == 1 and distance[rasterize_roi(bg[0], small_labels.shape)].min() > 6


def test_hand_strokes_are_short_and_wobbly(small_labels, hand):
    from s2l_tools.io.roi import rasterize_roi

    fg, bg = by_class(hand[1.0])
    for roi in fg:
        cell = np.unique(small_labels[rasterize_roi(roi, small_labels.shape)])[0]
        size = np.ptp(np.argwhere(small_labels == cell), axis=0).max() + 1
        xy = roi.integer_coordinates
        assert np.ptp(xy, axis=0).max() <= 0.6 * size + 2
    bent = sum(len(r.integer_coordinates) > 2 for r in fg + bg)
    assert bent > len(fg + bg) // 2  # mostly polylines of several vertices, not straight lines


def test_hand_same_seed_same_strokes_other_seed_other(small_labels):
    def encoded(rois):
        return [r.tobytes() for r in rois]

    a = handdrawn_rois(small_labels, ratio=0.5, seed=7)
    b = handdrawn_rois(small_labels, ratio=0.5, rng=np.random.default_rng(7))
    c = handdrawn_rois(small_labels, ratio=0.5, seed=8)
    assert encoded(a) == encoded(b)
    assert encoded(a) != encoded(c)


def test_hand_larger_ratio_draws_a_superset(small_labels, hand):
    from s2l_tools.io.roi import rois_to_scribbles

    lo, hi = (rois_to_scribbles(hand[r], small_labels.shape) for r in (0.3, 1.0))
    assert np.all(hi[lo > 0] == lo[lo > 0])
    assert np.count_nonzero(hi) > np.count_nonzero(lo)


def test_hand_concave_and_tiny_cells():
    from s2l_tools.io.roi import rois_to_scribbles

    labels = np.zeros((64, 64), np.int32)
    labels[disk((30, 30), 20)] = 3  # a crescent: the centroid is outside it
    labels[disk((30, 40), 16)] = 0
    labels[60, 2] = 9  # one pixel at the border
    labels[2:4, 60:62] = 5
    for seed in range(4):
        rois = handdrawn_rois(labels, ratio=1.0, seed=seed)
        s = rois_to_scribbles(rois, labels.shape)
        assert set(np.unique(labels[s == FOREGROUND]).tolist()) == {3, 5, 9}
        assert np.any(s == BACKGROUND) and np.all(labels[s == BACKGROUND] == 0)


def test_hand_no_cell_warns_and_strokes_background():
    with pytest.warns(S2LWarning, match="no cell"):
        rois = handdrawn_rois(np.zeros((64, 64), np.uint8), ratio=0.5, seed=0)
    fg, bg = by_class(rois)
    assert not fg and bg


def test_hand_no_background_warns():
    with pytest.warns(S2LWarning, match="no background"):
        rois = handdrawn_rois(np.ones((16, 16), np.uint8), ratio=1.0, seed=0)
    fg, bg = by_class(rois)
    assert fg and not bg


@pytest.mark.parametrize(
    "kwargs, match",
    [({"ratio": 0}, r"ratio.*\(0, 1\]"), ({"ratio": 1.5}, r"ratio.*\(0, 1\]"),
     ({"ratio": 0.5, "labels": np.zeros((4, 4), np.float32)}, "integer"),
     ({"ratio": 0.5, "labels": np.zeros((4, 4, 4), np.uint8)}, "2-D"),
     ({"ratio": 0.5, "labels": -np.ones((4, 4), np.int32)}, "negative"),
     ({"ratio": 0.5, "rng": np.random.default_rng(0)}, "either")],
)
def test_hand_bad_input(small_labels, kwargs, match):
    kwargs = {"labels": small_labels, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        handdrawn_rois(kwargs.pop("labels"), **kwargs)


def test_cli_hand_writes_rois_and_their_scribbles(data, capsys):
    import roifile

    from s2l_tools.cli import scribbles
    from s2l_tools.io.images import read_labels
    from s2l_tools.io.roi import read_rois, rois_to_scribbles

    assert main([str(data), "--ratio", "0.5", "--seed", "1", "--protocol", "hand"]) == 0
    assert "2 ROI sets" in capsys.readouterr().out
    (data / "images").mkdir()
    written = {}
    for stem, name in (("a", "a.tif"), ("b", "b.png")):
        labels = read_labels(data / "masks" / name)
        zip_path = data / "rois" / f"{stem}.zip"
        rois = roifile.roiread(zip_path)  # a real RoiSet.zip
        expected = handdrawn_rois(labels, ratio=0.5, rng=np.random.default_rng(image_seed(1, stem)))
        assert [r.tobytes() for r in rois] == [r.tobytes() for r in expected]
        s = tifffile.imread(data / "scribbles" / f"{stem}.tif")
        np.testing.assert_array_equal(s, rois_to_scribbles(read_rois(zip_path), labels.shape))
        assert np.any(s == FOREGROUND) and np.all(labels[s == FOREGROUND] > 0)
        assert np.any(s == BACKGROUND) and np.all(labels[s == BACKGROUND] == 0)
        written[stem] = s
        tifffile.imwrite(data / "images" / f"{stem}.tif", np.zeros(labels.shape, np.uint8))
    assert not list((data / "rois").glob(".*")) and not list((data / "scribbles").glob(".*"))
    # s2l-scribbles on the same folder gives the very same masks (and takes them as its own)
    assert scribbles.main([str(data)]) == 0
    for stem, s in written.items():
        np.testing.assert_array_equal(tifffile.imread(data / "scribbles" / f"{stem}.tif"), s)


def test_cli_hand_respects_existing_files(data, capsys):
    (data / "rois").mkdir()
    (data / "rois" / "a.zip").write_bytes(b"hand-made")
    assert main([str(data), "--ratio", "0.5", "--protocol", "hand"]) == 1
    err = one_line_error(capsys)
    assert "a.zip" in err and "--overwrite" in err
    assert (data / "rois" / "a.zip").read_bytes() == b"hand-made"
    assert not (data / "scribbles").exists()
    assert main([str(data), "--ratio", "0.5", "--protocol", "hand", "--overwrite"]) == 0
    assert (data / "rois" / "a.zip").read_bytes() != b"hand-made"


def test_cli_hand_has_its_own_background(data, capsys):
    assert main([str(data), "--ratio", "0.5", "--protocol", "hand", "--background", "near"]) == 1
    err = one_line_error(capsys)
    assert "--background near" in err and "--protocol skeleton" in err
    assert not (data / "scribbles").exists() and not (data / "rois").exists()


@pytest.mark.parametrize("argv", [["--protocol", "freehand"], ["--protocol"],
                                  ["--protocol", "hand", "--background", "ring"]])
def test_cli_bad_protocol(data, capsys, argv):
    assert main([str(data), "--ratio", "0.5", *argv]) == 2
    assert "usage:" in capsys.readouterr().err
    assert not (data / "scribbles").exists()


def test_cli_hand_warns_about_an_image_without_cells(data, capsys):
    from s2l_tools.io.roi import read_rois, roi_class

    tifffile.imwrite(data / "masks" / "c.tif", np.zeros((32, 32), np.uint16))
    assert main([str(data), "--ratio", "0.5", "--protocol", "hand"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "c.tif" in err and "no cell" in err
    rois = read_rois(data / "rois" / "c.zip")
    assert rois and {roi_class(r) for r in rois} == {BACKGROUND_CLASS}
    s = tifffile.imread(data / "scribbles" / "c.tif")
    assert np.any(s == BACKGROUND) and not np.any(s == FOREGROUND)

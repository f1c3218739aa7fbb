"""Tests for the synthetic demo data: images, scribble ROIs, dataset layout."""

from __future__ import annotations

import time

import numpy as np
import pytest
import roifile
import tifffile
from scipy import ndimage as ndi
from skimage.draw import polygon

from s2l_tools.data.demo_data import make_demo_dataset, make_nuclei_image, scribble_rois
from s2l_tools.errors import S2LError

SEEDS = range(5)
LINE_TYPES = (roifile.ROI_TYPE.POLYLINE, roifile.ROI_TYPE.FREELINE)
AREA_TYPES = (roifile.ROI_TYPE.POLYGON, roifile.ROI_TYPE.FREEHAND)


def _sample(seed):
    rng = np.random.default_rng(seed)
    image, labels = make_nuclei_image(rng=rng)
    return image, labels, scribble_rois(labels, rng=rng)


def _drawn_pixels(roi, shape):
    """(N, 2) int (row, col) pixels ImageJ fills or draws for ``roi``."""
    xy = roi.coordinates().astype(np.int64)
    if roi.roitype in AREA_TYPES:  # vertices on pixel corners
        rr, cc = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, shape)
        return np.c_[rr, cc]
    # pixel-centre DDA with Java rounding, as ImageJ draws lines
    pts = [xy[0].astype(float)]
    for p, q in zip(xy[:-1].astype(float), xy[1:].astype(float)):
        n = int(max(abs(q - p)))
        for i in range(1, n + 1):
            pts.append(p + (q - p) * i / n)
    pix = np.floor(np.array(pts) + 0.5).astype(np.int64)[:, ::-1]
    if roi.stroke_width == 3:
        pix = (pix[:, None, :] + np.array([[dy, dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])).reshape(-1, 2)
    return pix


def _touching_pairs(labels):
    a = np.concatenate([labels[1:, :].ravel(), labels[:, 1:].ravel()])
    b = np.concatenate([labels[:-1, :].ravel(), labels[:, :-1].ravel()])
    sel = (a != b) & (a > 0) & (b > 0)
    return {tuple(sorted(p)) for p in zip(a[sel], b[sel])}


# ---- image ---------------------------------------------------------------


def test_image_is_deterministic_by_seed():
    img1, lab1 = make_nuclei_image(rng=np.random.default_rng(3))
    img2, lab2 = make_nuclei_image(rng=np.random.default_rng(3))
    img3, _ = make_nuclei_image(rng=np.random.default_rng(4))
    assert img1.dtype == np.uint16 and img1.shape == (256, 256)
    assert lab1.dtype == np.int32 and lab1.shape == (256, 256)
    np.testing.assert_array_equal(img1, img2)
    np.testing.assert_array_equal(lab1, lab2)
    assert not np.array_equal(img1, img3)


@pytest.mark.parametrize("seed", SEEDS)
def test_labels_cover_cells_some_touching(seed):
    _, labels = make_nuclei_image(rng=np.random.default_rng(seed))
    assert 0.05 <= np.mean(labels > 0) <= 0.40
    n = labels.max()
    assert 15 <= n <= 40
    # labels are 1..N, each one connected piece
    assert set(np.unique(labels)) == set(range(n + 1))
    for k in range(1, n + 1):
        assert ndi.label(labels == k)[1] == 1
    assert len(_touching_pairs(labels)) >= 2


@pytest.mark.parametrize("seed", SEEDS)
def test_cells_brighter_than_uneven_background(seed):
    image, labels = make_nuclei_image(rng=np.random.default_rng(seed))
    f = image.astype(float) - 100.0  # camera offset
    assert image.min() >= 50  # an offset, like a camera
    assert f[labels > 0].mean() > 2.0 * f[labels == 0].mean()
    far = ndi.distance_transform_edt(labels == 0) >= 6
    corners = [np.s_[:48, :48], np.s_[:48, -48:], np.s_[-48:, :48], np.s_[-48:, -48:]]
    means = [f[c][far[c]].mean() for c in corners]
    assert max(means) > 1.15 * min(means)
    # noisy, not flat
    assert f[far].std() > 3


def test_image_is_fast():
    rng = np.random.default_rng(0)
    make_nuclei_image(rng=rng)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        make_nuclei_image(rng=rng)
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.3  # ~0.05 s unloaded; generous for a shared machine


def test_other_shapes_and_counts():
    image, labels = make_nuclei_image(shape=(96, 160), n_cells=(3, 5), rng=np.random.default_rng(1))
    assert image.shape == labels.shape == (96, 160)
    assert 1 <= labels.max() <= 5


@pytest.mark.parametrize(
    "kwargs", [{"shape": (16, 256)}, {"n_cells": (5, 2)}, {"n_cells": (0, 3)}]
)
def test_image_bad_arguments(kwargs):
    with pytest.raises(S2LError, match="make_nuclei_image"):
        make_nuclei_image(rng=np.random.default_rng(0), **kwargs)


# ---- scribbles ---------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_rois_lie_where_they_should(seed):
    _, labels, rois = _sample(seed)
    H, W = labels.shape
    bg_dist = ndi.distance_transform_edt(labels == 0)
    fg = [r for r in rois if r.group == 1]
    bg = [r for r in rois if r.group == 2]
    assert len(fg) + len(bg) == len(rois)
    assert len(fg) >= max(3, round(0.5 * labels.max()))
    assert len(bg) >= 4
    for roi in rois:
        xy = roi.coordinates()
        assert xy.dtype.kind == "i"  # integer pixel coordinates
        assert roi.roitype in LINE_TYPES + AREA_TYPES
        assert roi.stroke_width in (1, 3)
        lim_x, lim_y = (W, H) if roi.roitype in AREA_TYPES else (W - 1, H - 1)
        assert xy[:, 0].min() >= 0 and xy[:, 0].max() <= lim_x
        assert xy[:, 1].min() >= 0 and xy[:, 1].max() <= lim_y
        pix = _drawn_pixels(roi, labels.shape)
        assert pix.size and pix.min() >= 0 and pix[:, 0].max() < H and pix[:, 1].max() < W
        if roi.group == 1:
            assert roi.name.startswith("fg-")
            assert roi.stroke_color == b"\xff\xff\xff\x00"
            vert = np.minimum(xy[:, ::-1], [H - 1, W - 1])
            assert np.all(labels[vert[:, 0], vert[:, 1]] > 0)
            hit = labels[pix[:, 0], pix[:, 1]]
            assert hit.min() > 0 and np.unique(hit).size == 1  # one cell each
        else:
            assert roi.name.startswith("bg-")
            assert roi.stroke_color == b"\xff\x00\xff\xff"
            vert = np.minimum(xy[:, ::-1], [H - 1, W - 1])
            assert np.all(bg_dist[vert[:, 0], vert[:, 1]] >= 2)
            assert np.all(bg_dist[pix[:, 0], pix[:, 1]] >= 2)
    names = [r.name for r in rois]
    assert len(set(names)) == len(names)
    assert {r.roitype for r in rois} == set(LINE_TYPES + AREA_TYPES)
    # each stroked cell once
    cells = [labels[r.coordinates()[0, 1], r.coordinates()[0, 0]] for r in fg if r.roitype in LINE_TYPES]
    assert len(set(cells)) == len(cells)


def test_rois_use_both_stroke_widths():
    widths = {r.stroke_width for seed in SEEDS for r in _sample(seed)[2] if r.roitype in LINE_TYPES}
    assert widths == {1, 3}


def test_rois_round_trip_through_roifile(tmp_path):
    _, _, rois = _sample(0)
    path = tmp_path / "RoiSet.zip"
    roifile.roiwrite(path, rois)
    back = roifile.roiread(path)
    assert len(back) == len(rois)
    for a, b in zip(rois, back):
        assert (b.name, b.group, b.roitype, b.stroke_width, b.stroke_color) == (
            a.name,
            a.group,
            a.roitype,
            a.stroke_width,
            a.stroke_color,
        )
        np.testing.assert_array_equal(b.coordinates(), a.coordinates())


def test_rois_are_deterministic_by_seed():
    a, b = _sample(2)[2], _sample(2)[2]
    assert [r.tobytes() for r in a] == [r.tobytes() for r in b]


def test_at_least_three_cells_and_options():
    labels = np.zeros((80, 80), np.int32)
    for k, (y, x) in enumerate([(15, 15), (15, 60), (60, 15), (60, 60)], start=1):
        yy, xx = np.ogrid[:80, :80]
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= 64] = k
    rois = scribble_rois(labels, rng=np.random.default_rng(0), fraction=0.1, n_background=2, areas=False)
    assert sum(r.group == 1 for r in rois) == 3
    assert sum(r.group == 2 for r in rois) == 2
    assert all(r.roitype in LINE_TYPES for r in rois)


def test_no_cells_gives_background_only():
    rois = scribble_rois(np.zeros((64, 64), np.uint16), rng=np.random.default_rng(0))
    assert rois and all(r.group == 2 for r in rois)


@pytest.mark.parametrize(
    ("labels", "kwargs"),
    [
        (np.zeros((8, 8, 2), np.int32), {}),
        (np.zeros((8, 8), np.float32), {}),
        (np.zeros((8, 8), np.int32), {"fraction": 0.0}),
    ],
)
def test_scribbles_bad_arguments(labels, kwargs):
    with pytest.raises(S2LError, match="scribble_rois"):
        scribble_rois(labels, rng=np.random.default_rng(0), **kwargs)


# ---- dataset ------------------------------------------------------------------


def test_dataset_layout(tmp_path):
    summary = make_demo_dataset(tmp_path / "demo", n_train=2, n_val=1, shape=(128, 160), seed=7)
    root = tmp_path / "demo"
    assert summary["root"] == root
    assert [e["stem"] for e in summary["train"]] == ["nuclei_000", "nuclei_001"]
    assert [e["stem"] for e in summary["val"]] == ["nuclei_002"]
    for split, n in (("train", 2), ("val", 1)):
        assert len(list((root / split / "images").glob("*.tif"))) == n
        assert len(list((root / split / "masks").glob("*.tif"))) == n
        for entry in summary[split]:
            image = tifffile.imread(entry["image"])
            mask = tifffile.imread(entry["mask"])
            assert image.dtype == np.uint16 and image.shape == (128, 160)
            assert mask.dtype == np.uint16 and mask.shape == (128, 160)
            assert mask.max() == entry["n_cells"] > 0
    assert not (root / "val" / "rois").exists()
    for entry in summary["train"]:
        assert entry["rois"] == root / "train" / "rois" / f"{entry['stem']}.zip"
        rois = roifile.roiread(entry["rois"])
        assert sum(r.group == 1 for r in rois) == entry["n_fg_rois"] >= 3
        assert sum(r.group == 2 for r in rois) == entry["n_bg_rois"] >= 1
        assert all(r.name.startswith(("fg-", "bg-")) for r in rois)
    assert not list(root.rglob("*.part"))  # atomic writes leave nothing behind


def test_dataset_is_deterministic_by_seed(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n_train=1, n_val=1, shape=(96, 96), seed=1)
    b = make_demo_dataset(tmp_path / "b", n_train=1, n_val=1, shape=(96, 96), seed=1)
    for split in ("train", "val"):
        for ea, eb in zip(a[split], b[split]):
            np.testing.assert_array_equal(tifffile.imread(ea["image"]), tifffile.imread(eb["image"]))
            np.testing.assert_array_equal(tifffile.imread(ea["mask"]), tifffile.imread(eb["mask"]))
    ra = [r.tobytes() for r in roifile.roiread(a["train"][0]["rois"])]
    rb = [r.tobytes() for r in roifile.roiread(b["train"][0]["rois"])]
    assert ra == rb


def test_dataset_bad_counts(tmp_path):
    with pytest.raises(S2LError, match="n_train"):
        make_demo_dataset(tmp_path, n_train=0)

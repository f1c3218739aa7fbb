"""``s2l-train --clean-strokes``: foreground strokes past a cell's edge left out (issue 14)."""

import numpy as np
import pytest

from _demo import scribbled_demo
from s2l_tools import labels as L
from s2l_tools.cli import train
from s2l_tools.data.clean import MIN_PIXELS, drop_stray_foreground, stray_foreground
from s2l_tools.io.images import read_labels, write_tiff
from s2l_tools.training.data import load_training_data


def _cell_image(bright=1.0, dark=0.1):
    """A (1, 40, 40) image: a bright 16 x 16 cell on a dark background, with noise."""
    rng = np.random.default_rng(0)
    image = np.full((1, 40, 40), dark, np.float32)
    image[0, 12:28, 12:28] = bright
    return image + rng.normal(0, 0.02, image.shape).astype(np.float32)


def test_the_stroke_past_the_edge_is_found_and_the_rest_kept():
    image = _cell_image()
    scribble = np.zeros((40, 40), np.uint8)
    scribble[19:21, 8:32] = L.FOREGROUND     # through the cell, 4 px past each edge
    scribble[2:4, :] = L.BACKGROUND
    stray = stray_foreground(image, scribble, sigma=0)
    inside = np.zeros((40, 40), bool)
    inside[12:28, 12:28] = True
    fg = scribble == L.FOREGROUND
    assert np.array_equal(stray, fg & ~inside)  # exactly the pixels on the background
    # smoothed by 1 px, the pixel just past the edge is a blend: the far ones still go
    smoothed = stray_foreground(image, scribble)
    assert smoothed[19, 8:11].all() and smoothed[19, 29:32].all()
    assert not smoothed[19, 13:27].any()
    # background strokes are never touched, even where they lie on the cell
    scribble[12:14, 14:26] = L.BACKGROUND
    assert not stray_foreground(image, scribble)[scribble == L.BACKGROUND].any()


def test_a_stroke_on_a_dim_cell_is_kept_whole_in_an_image_of_bright_ones():
    image = _cell_image()
    image[0, 32:38, 4:36] = 0.35             # a dim cell below the bright one
    scribble = np.zeros((40, 40), np.uint8)
    scribble[16:24, 14:26] = L.FOREGROUND    # many pixels on the bright cell
    scribble[34:36, 6:34] = L.FOREGROUND     # a stroke inside the dim cell
    scribble[2:4, :] = L.BACKGROUND
    stray = stray_foreground(image, scribble)
    assert not stray.any()
    # one median for all the image's strokes would have taken the dim one for background
    dim = image[0, 34:36, 6:34]
    assert (np.abs(dim - 0.1) < np.abs(dim - 1.0)).all()
    # past the dim cell's edge the stroke's own colour tells again
    scribble[34:36, 36:40] = L.FOREGROUND
    scribble[34:36, 34:36] = L.FOREGROUND    # joined to it: one stroke
    assert stray_foreground(image, scribble, sigma=0)[34:36, 37:40].all()


def test_too_few_pixels_of_a_class_and_the_medians_of_other_images():
    image = _cell_image()
    scribble = np.zeros((40, 40), np.uint8)
    scribble[2:4, :] = L.BACKGROUND
    scribble[30:32, :] = L.FOREGROUND        # a "cell" stroke wholly on the background
    assert stray_foreground(image, scribble).mean() <= 0.5 * (scribble == L.FOREGROUND).mean()
    # too few pixels of a class and no medians given: nothing
    few = np.zeros((40, 40), np.uint8)
    few[19, 8:32] = L.FOREGROUND
    few[2, :MIN_PIXELS - 1] = L.BACKGROUND
    assert not stray_foreground(image, few, sigma=0).any()
    # with the medians of other images, the same pixels as with enough of its own
    found = stray_foreground(image, few, sigma=0, medians=(np.array([0.1]), np.array([1.0])))
    assert found[19, 8:12].all() and found[19, 28:32].all() and not found[19, 12:28].any()


def test_drop_stray_foreground_pools_the_medians_and_copies():
    images = [_cell_image(), _cell_image()]
    a = np.zeros((40, 40), np.uint8)
    a[19:21, 8:32] = L.FOREGROUND
    a[2:4, :] = L.BACKGROUND
    b = np.zeros((40, 40), np.uint8)
    b[19, 6:34] = L.FOREGROUND               # no background stroke in this image
    before = [a.copy(), b.copy()]
    out, dropped, total = drop_stray_foreground(images, [a, b])
    assert np.array_equal(a, before[0]) and np.array_equal(b, before[1])  # inputs untouched
    assert total == int((a == L.FOREGROUND).sum() + (b == L.FOREGROUND).sum())
    assert dropped == int(sum((s == L.FOREGROUND).sum() - (o == L.FOREGROUND).sum()
                              for s, o in zip(before, out)))
    # image b, without background strokes of its own, is cleaned with a's background
    assert (out[1][19, 6:10] == L.UNLABELED).all() and (out[1][19, 14:26] == L.FOREGROUND).all()
    assert (out[0] == L.BACKGROUND).sum() == (a == L.BACKGROUND).sum()


def _grown(root, px):
    """ROOT's training strokes, every foreground stroke grown by ``px`` (past the smaller
    cells' edges)."""
    from scipy import ndimage as ndi

    for f in sorted((root / "train" / "scribbles").glob("*.tif")):
        s = read_labels(f)
        grown = ndi.binary_dilation(s == L.FOREGROUND, iterations=px) & (s == L.UNLABELED)
        s[grown] = L.FOREGROUND
        write_tiff(f, s)
    return root


@pytest.fixture(scope="module")
def sloppy(tmp_path_factory):
    """The demo's training images with every foreground stroke grown by 3 px."""
    return _grown(scribbled_demo(tmp_path_factory), 3)


def test_train_leaves_the_stray_pixels_out(sloppy, tmp_path, capsys, monkeypatch):
    from s2l_tools.training import engine

    seen = {}
    real = engine.fast_start

    def spy(store, data, *args, **kwargs):
        seen["scribbles"] = [s.copy() for s in data.scribbles]
        return real(store, data, *args, **kwargs)

    monkeypatch.setattr(engine, "fast_start", spy)
    out = tmp_path / "run"
    assert train.main([str(sloppy / "train"), "--out", str(out), "--clean-strokes",
                       "--fast-start", "forest", "--encoder", "resnet18", "--crop", "64",
                       "--batch-size", "4", "--samples-per-epoch", "8", "--epochs", "1",
                       "--warmup-epochs", "1", "--holdout-strokes", "0", "--tile", "64",
                       "--panel-images", "0", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    data = load_training_data(sloppy / "train")
    expected, dropped, total = drop_stray_foreground(data.images, data.scribbles)
    assert 0 < dropped < total
    assert f"clean strokes: {dropped} of {total} foreground scribble pixels" in err
    # what the training saw is the cleaned strokes (the fast start, then every epoch)
    assert all(np.array_equal(s, e) for s, e in zip(seen["scribbles"], expected))
    # the run records the user's own scribbles, so --resume on the same files is allowed
    import json

    record = json.loads((out / "inputs.json").read_text())
    from s2l_tools.training.data import array_digest

    assert [e["scribbles"] for e in record["images"]] == \
        [array_digest(s) for s in data.scribbles]


def test_auto_cleans_only_where_many_pixels_stray(tmp_path_factory):
    """``--clean-strokes auto`` (the laptop preset): strokes grown well past the cells (11 %
    of their pixels on the background, as careless ones) are cleaned as with ``on``; the
    demo's own strokes, few of whose pixels stray, are kept."""
    import io

    from rich.console import Console

    from s2l_tools.data.clean import AUTO_SHARE
    from s2l_tools.training.engine import _drop_stray_foreground

    def run(data, when):
        out = io.StringIO()
        return _drop_stray_foreground(data, when, Console(file=out, width=200)), out.getvalue()

    careless = load_training_data(_grown(scribbled_demo(tmp_path_factory), 6) / "train")
    cleaned, said = run(careless, "auto")
    expected, dropped, total = drop_stray_foreground(careless.images, careless.scribbles)
    assert dropped > AUTO_SHARE * total and "left out" in said and "(auto)" in said
    assert all(np.array_equal(c, e) for c, e in zip(cleaned.scribbles, expected))
    assert all(np.array_equal(c, e) for c, e in zip(run(careless, "on")[0].scribbles, expected))

    careful = load_training_data(scribbled_demo(tmp_path_factory) / "train")
    _, dropped, total = drop_stray_foreground(careful.images, careful.scribbles)
    assert dropped <= AUTO_SHARE * total
    kept, said = run(careful, "auto")
    assert kept is careful and "kept as drawn" in said
    if dropped:  # on: cleaned whatever the share
        assert not all(np.array_equal(a, b) for a, b in
                       zip(run(careful, "on")[0].scribbles, careful.scribbles))


def test_the_laptop_preset_cleans_careless_strokes_only(tmp_path):
    """``--preset laptop`` means ``--clean-strokes auto``; flags win; full masks have no
    strokes; a run's config.json of before (true/false) reads as on/off."""
    from s2l_tools.errors import S2LError
    from s2l_tools.training.config import TrainConfig

    parse = train.get_parser().parse_args
    base = ["data", "--out", str(tmp_path / "x")]
    assert train.config_from_args(parse(base)).clean_strokes == "off"  # s2l-train's default
    assert train.config_from_args(parse([*base, "--clean-strokes"])).clean_strokes == "on"
    laptop = [*base, "--preset", "laptop"]
    assert train.config_from_args(parse(laptop)).clean_strokes == "auto"
    assert train.config_from_args(parse([*laptop, "--method", "pce"])).clean_strokes == "auto"
    assert train.config_from_args(parse([*laptop, "--no-clean-strokes"])).clean_strokes == "off"
    assert train.config_from_args(parse([*laptop, "--clean-strokes"])).clean_strokes == "on"
    assert train.config_from_args(parse([*laptop, "--method", "full"])).clean_strokes == "off"
    assert TrainConfig.from_dict({"clean_strokes": True}).clean_strokes == "on"
    assert TrainConfig.from_dict({"clean_strokes": False}).clean_strokes == "off"
    from s2l_tools.training.engine import _changed_settings  # --resume of such a run

    assert _changed_settings({"clean_strokes": False}, TrainConfig()) == []
    assert _changed_settings({"clean_strokes": False}, TrainConfig(clean_strokes="auto")) == \
        ["--clean-strokes off -> auto"]
    with pytest.raises(S2LError, match="--clean-strokes maybe: choose one of off, on, auto"):
        TrainConfig(clean_strokes="maybe").validate()

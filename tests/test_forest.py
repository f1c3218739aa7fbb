"""The random-forest pixel classifier and s2l-train's --fast-start forest / --preset."""

import json
from dataclasses import replace

import numpy as np
import torch
import pytest

from s2l_tools.cli import train
from s2l_tools.training.checkpoint import load_checkpoint
from s2l_tools.training.config import PRESETS, TrainConfig
from s2l_tools.errors import S2LError
from s2l_tools.classic.forest import (ForestSettings, fit_forest, forest_probability,
                                      map_forest_probability, pixel_features)
from _demo import scribbled_demo

SMALL = ForestSettings(n_estimators=20, sigma_max=4)


def discs(seed=0, shape=(64, 64), n=5, radius=6):
    """A noisy image of bright discs and its truth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, bool)
    for cy, cx in rng.integers(radius + 2, shape[0] - radius - 2, size=(n, 2)):
        truth |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    image = truth * 0.8 + rng.normal(0, 0.1, shape)
    return image[None].astype(np.float32), truth


def scribble_of(truth, seed=0):
    """A few foreground pixels inside the discs, a few background pixels outside."""
    rng = np.random.default_rng(seed)
    scr = np.zeros(truth.shape, np.uint8)
    fg, bg = np.flatnonzero(truth), np.flatnonzero(~truth)
    scr.flat[rng.choice(fg, 20, replace=False)] = 2
    scr.flat[rng.choice(bg, 60, replace=False)] = 1
    return scr


def test_features_shape():
    image = np.zeros((2, 20, 30), np.float32)
    feats = pixel_features(image, ForestSettings(sigma_min=1, sigma_max=4))
    assert feats.shape == (20, 30, 2 * 3 * 4) and feats.dtype == np.float32
    with pytest.raises(ValueError, match="C, H, W"):
        pixel_features(np.zeros((20, 30)))


def test_forest_labels_unscribbled_pixels():
    image, truth = discs(0)
    forest = fit_forest([image], [scribble_of(truth)], settings=SMALL, seed=0)
    # a new image of the same kind: the forest generalises beyond the scribbled pixels
    image2, truth2 = discs(1)
    prob = forest_probability(forest, image2, settings=SMALL)
    assert prob.shape == truth2.shape and prob.dtype == np.float32
    assert 0 <= prob.min() and prob.max() <= 1
    iou = ((prob > 0.5) & truth2).sum() / ((prob > 0.5) | truth2).sum()
    assert iou > 0.8, iou
    # seeded: the same forest twice
    again = fit_forest([image], [scribble_of(truth)], settings=SMALL, seed=0)
    assert np.array_equal(forest_probability(again, image2, settings=SMALL), prob)


def test_forest_on_threads_is_the_same_forest():
    """n_jobs spreads the fit's per-image features (and the trees) over threads: the
    training rows keep the images' order, so the forest is the one fitted on one thread."""
    pairs = [discs(s, shape=(48 + 8 * s, 64)) for s in range(4)]
    images = [im for im, _ in pairs]
    scribbles = [scribble_of(t, s) for s, (_, t) in enumerate(pairs)]
    scribbles[2][:] = 0  # an image without strokes adds no rows
    one = fit_forest(images, scribbles, settings=SMALL, seed=3)
    two = fit_forest(images, scribbles, settings=replace(SMALL, n_jobs=2), seed=3)
    probe, _ = discs(9)
    assert np.array_equal(forest_probability(one, probe, settings=SMALL),
                          forest_probability(two, probe, settings=SMALL))
    assert [t.tree_.n_node_samples[0] for t in one.estimators_] == \
        [t.tree_.n_node_samples[0] for t in two.estimators_]


def test_map_forest_probability_keeps_the_order_on_any_thread_count():
    pairs = [discs(s, shape=(40 + 8 * s, 64)) for s in range(4)]
    images = [im for im, _ in pairs]
    scribbles = [scribble_of(t, s) for s, (_, t) in enumerate(pairs)]
    order = [3, 0, 2]
    one = map_forest_probability(lambda p: p, images, scribbles, order, threads=1, seed=1)
    two = map_forest_probability(lambda p: p, images, scribbles, order, threads=2, seed=1)
    assert [p.shape for p in one] == [images[i].shape[1:] for i in order]
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    forest = fit_forest(images, scribbles, seed=1)
    assert np.array_equal(one[0], forest_probability(forest, images[3]))


def test_forest_needs_both_classes():
    image, truth = discs(0)
    only_fg = np.where(scribble_of(truth) == 2, 2, 0).astype(np.uint8)
    with pytest.raises(S2LError, match="background and foreground"):
        fit_forest([image], [only_fg], settings=SMALL)


def test_forest_caps_training_pixels():
    image, truth = discs(0)
    scr = np.where(truth, 2, 1).astype(np.uint8)  # every pixel scribbled
    forest = fit_forest([image], [scr], settings=ForestSettings(n_estimators=3, sigma_max=2,
                                                                max_pixels=50), seed=0)
    assert sum(t.tree_.n_node_samples[0] for t in forest.estimators_) <= 3 * 100


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return scribbled_demo(tmp_path_factory, n_val=1)


TINY = ["--encoder", "resnet18", "--crop", "32", "--batch-size", "2", "--samples-per-epoch",
        "4", "--ensemble-every", "1", "--tile", "64", "--panel-images", "0", "--device", "cpu"]


@pytest.mark.parametrize("kind", ["forest", "grabcut", "forest+grabcut"])
def test_fast_start_pseudo_labels_from_epoch_one(data, tmp_path, capsys, kind):
    out = tmp_path / "fast"
    # a warm-up longer than the run: without a fast start no pseudo-label would act
    assert train.main([str(data / "train"), "--out", str(out), "--epochs", "2",
                       "--warmup-epochs", "5", "--fast-start", kind, *TINY]) == 0
    err = capsys.readouterr().err
    assert f"fast start: {kind} pseudo-labels for 3 image(s)" in err
    assert ("(GrabCut kept: " in err) == (kind == "forest+grabcut")
    ck = load_checkpoint(out / "checkpoint.pt")
    assert all(row["coverage"] > 0.5 for row in ck["history"])
    # the forest's map is the store's only update: the network's join after the warm-up
    assert all(n == 1 for n in ck["ema"]["n_updates"])
    # without a fast start no pseudo-label would act: refused up front (issue 16)
    plain = tmp_path / "plain"
    assert train.main([str(data / "train"), "--out", str(plain), "--epochs", "2",
                       "--warmup-epochs", "5", *TINY]) == 1
    assert "--warmup-epochs 5: longer than the run" in capsys.readouterr().err
    assert not plain.exists()


def test_forest_grabcut_start_leaves_grabcut_out_below_the_agreement(data, tmp_path, capsys):
    """--grabcut-agreement above what GrabCut and the forest share: the forest's map alone."""
    runs = {}
    for name, extra in (("forest", ["--fast-start", "forest"]),
                        ("both", ["--fast-start", "forest+grabcut", "--grabcut-agreement", "1"])):
        runs[name] = tmp_path / name
        assert train.main([str(data / "train"), "--out", str(runs[name]), "--epochs", "1",
                           "--warmup-epochs", "5", "--seed", "3", *extra, *TINY]) == 0
    assert "(GrabCut left out: its foreground and the forest's overlap by IoU" in \
        capsys.readouterr().err
    maps = [load_checkpoint(runs[n] / "checkpoint.pt")["ema"]["maps"] for n in ("forest", "both")]
    assert torch.equal(maps[0], maps[1])


def test_fast_start_resume_keeps_store(data, tmp_path):
    out = tmp_path / "run"
    common = [str(data / "train"), *TINY, "--fast-start", "forest", "--warmup-epochs", "1",
              "--checkpoint-every", "1"]
    assert train.main([*common, "--out", str(out), "--epochs", "1"]) == 0
    before = load_checkpoint(out / "checkpoint.pt")["ema"]
    assert all(n == 1 for n in before["n_updates"])  # the forest's map
    assert train.main(["--out", str(out), "--resume", "--epochs", "2"]) == 0
    after = load_checkpoint(out / "checkpoint.pt")
    # resumed from the checkpoint's store: the forest did not run again (it would count
    # an update), and the pass due after the last epoch is pending as in any run
    assert after["epoch"] == 2 and after["ensemble_pending"]
    assert all(n == 1 for n in after["ema"]["n_updates"])
    for x, y in zip(before["maps"], after["ema"]["maps"]):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_fast_start_only_for_s2l(data, tmp_path, capsys):
    with pytest.raises(S2LError, match="--fast-start forest"):
        TrainConfig(method="pce", fast_start="forest").validate()
    assert train.main([str(data / "train"), "--out", str(tmp_path / "x"), "--method", "pce",
                       "--fast-start", "forest", *TINY]) == 1
    err = capsys.readouterr().err
    assert "--method s2l" in err and "Traceback" not in err


def test_preset_sets_budget_and_flags_win(data, tmp_path):
    out = tmp_path / "laptop"
    assert train.main([str(data / "train"), "--out", str(out), "--preset", "laptop",
                       "--epochs", "1", "--crop", "32", "--samples-per-epoch", "2",
                       "--batch-size", "2", "--tile", "64", "--device", "cpu"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    laptop = PRESETS["laptop"]
    assert cfg["encoder"] == laptop["encoder"] and cfg["fast_start"] == laptop["fast_start"]
    assert cfg["crf_weight"] == laptop["crf_weight"] > 0
    assert cfg["pseudo_margin"] == laptop["pseudo_margin"] == 1
    assert cfg["diameter"] == laptop["diameter"] > 0
    assert cfg["clean_strokes"] == laptop["clean_strokes"] == "auto"
    assert cfg["lr"] == laptop["lr"] and cfg["ensemble_every"] == laptop["ensemble_every"]
    assert cfg["epochs"] == 1 and cfg["crop"] == 32  # flags given win
    # another method keeps the preset's budget without its (S2L-only) fast start
    pce = tmp_path / "laptop_pce"
    assert train.main([str(data / "train"), "--out", str(pce), "--preset", "laptop",
                       "--method", "pce", "--epochs", "1", "--crop", "32",
                       "--samples-per-epoch", "2", "--batch-size", "2", "--tile", "64",
                       "--device", "cpu"]) == 0
    cfg = json.loads((pce / "config.json").read_text())
    assert cfg["method"] == "pce" and cfg["fast_start"] == "none" and cfg["encoder"] == "resnet18"
    assert cfg["crf_weight"] is None  # pCE stays scribbles only (no CRF loss)
    assert cfg["pseudo_margin"] == 0
    # the paper preset is the defaults
    defaults = TrainConfig()
    assert all(getattr(defaults, k) == v for k, v in PRESETS["paper"].items())


def test_bands_equal_the_whole_image():
    """Band by band (bounded memory) gives the whole image's features and probabilities."""
    from dataclasses import replace

    image, truth = discs(2, shape=(90, 40))
    forest = fit_forest([image], [scribble_of(truth)], settings=SMALL, seed=0)
    whole = forest_probability(forest, image, settings=SMALL)
    banded_settings = replace(SMALL, band_pixels=7 * 40)  # 7 rows a band
    banded = forest_probability(forest, image, settings=banded_settings)
    np.testing.assert_allclose(banded, whole, atol=1e-6)
    again = fit_forest([image], [scribble_of(truth)], settings=banded_settings, seed=0)
    np.testing.assert_allclose(forest_probability(again, image, settings=SMALL), whole, atol=1e-6)

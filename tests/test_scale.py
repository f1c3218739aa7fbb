"""One object size (``s2l-train --diameter``): estimate, resize, train, predict at the
scale a first pass finds, in s2l-predict and the ONNX reader alike."""

import json

import numpy as np
import pytest
import torch

from s2l_tools.cli import train
from s2l_tools.errors import S2LError
from s2l_tools.inference import postprocess as pp
from s2l_tools.training.checkpoint import ModelMeta, load_model
from s2l_tools.training.config import PRESETS, TrainConfig
from s2l_tools.training.data import TrainingData, epoch_plan, inputs_record
from s2l_tools.training import scale


def discs(radius, shape=(96, 96), n=6, seed=0):
    """A (1, H, W) image of bright discs on noise, and their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    k = 0
    for _ in range(200):
        cy, cx = rng.integers(radius + 1, np.array(shape) - radius - 1)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        grown = (yy - cy) ** 2 + (xx - cx) ** 2 <= (radius + 2) ** 2
        if not (labels[grown] > 0).any():
            k += 1
            labels[disc] = k
        if k == n:
            break
    image = (labels > 0) * 0.8 + rng.normal(0, 0.05, shape)
    return image[None].astype(np.float32), labels


@pytest.mark.parametrize("radius", [5, 10])
def test_estimate_diameter_of_discs(radius):
    _, labels = discs(radius)
    prob = (labels > 0).astype(np.float32)
    assert pp.estimate_diameter(prob) == pytest.approx(2 * radius, rel=0.1)
    assert pp.median_diameter(labels) == pytest.approx(2 * radius, rel=0.1)
    assert np.isnan(pp.estimate_diameter(np.zeros((20, 20), np.float32)))


def test_scale_for_is_clipped():
    assert pp.scale_for(12, 24) == 2.0
    assert pp.scale_for(2, 24) == pp.MAX_SCALE and pp.scale_for(500, 24) == pp.MIN_SCALE
    assert pp.scale_for(48, 24) == 1.0  # big objects are never shrunk (it cost IoU)
    assert pp.scale_for(float("nan"), 24) == 1.0 and pp.scale_for(12, 0) == 1.0
    # never past a megapixel: a 1024 x 1024 image stays, a 512 x 1024 one may reach 1.41x
    assert pp.scale_for(8, 24, shape=(1, 1024, 1024)) == 1.0
    assert pp.scale_for(8, 24, shape=(2048, 2048)) == 1.0  # bigger still: never shrunk
    assert pp.scale_for(8, 24, shape=(512, 1024)) == pytest.approx(2 ** 0.5)
    assert pp.scale_for(20, 24, shape=(512, 1024)) == pytest.approx(1.2)  # under the cap
    h, w = pp.scaled_shape((700, 900), pp.scale_for(4, 24, shape=(700, 900)))
    assert h * w <= pp.MAX_PIXELS * 1.01


def test_images_past_a_megapixel_are_seen_once(monkeypatch):
    """Prediction and training alike leave an image at its size when enlarging it would
    pass MAX_PIXELS (here lowered to the test image's own size)."""
    image, _ = discs(5)
    monkeypatch.setattr(pp, "MAX_PIXELS", image.shape[1] * image.shape[2])
    seen = []

    def prob_fn(im):
        seen.append(im.shape)
        return np.clip(im[0], 0, 1).astype(np.float32)

    _, factor = pp.at_diameter(prob_fn, image, 20.0)
    assert factor == 1.0 and seen == [image.shape]
    scales, found = scale.training_scales(_data(with_masks=True), 20.0, from_masks=True)
    assert found[0] == pytest.approx(10, rel=0.2) and scales == [1.0, 1.0]


def test_at_diameter_passes_twice_at_the_found_scale():
    image, labels = discs(5)  # diameter ~10: seen at 20 px means twice the size
    seen = []

    def prob_fn(im):
        seen.append(im.shape)
        # a "network" that finds the discs wherever they are: the image's own intensity
        return np.clip(im[0], 0, 1).astype(np.float32)

    prob, factor = pp.at_diameter(prob_fn, image, 20.0)
    assert factor == pytest.approx(2.0, rel=0.1)
    assert seen[0] == image.shape and seen[1] == (1,) + pp.scaled_shape(image.shape, factor)
    assert prob.shape == image.shape[1:] and prob.dtype == np.float32
    # resized there and back, the discs are where they were
    assert np.mean((prob > 0.5) == (labels > 0)) > 0.98
    # objects already at the target size: one pass
    seen.clear()
    _, factor = pp.at_diameter(prob_fn, image, 10.0)
    assert factor == pytest.approx(1.0, abs=0.15) and len(seen) in (1, 2)
    # a known factor (a run's own image): one pass, at it
    seen.clear()
    known, factor = pp.at_diameter(prob_fn, image, 20.0, scale=1.5)
    assert factor == 1.5 and seen == [(1,) + pp.scaled_shape(image.shape, 1.5)]
    assert np.mean((known > 0.5) == (labels > 0)) > 0.98
    with pytest.raises(ValueError, match="scale"):
        pp.at_diameter(prob_fn, image, 20.0, scale=0.0)


def _data(radii=(5, 10), with_masks=False):
    images, scribbles, masks = [], [], []
    for i, r in enumerate(radii):
        image, labels = discs(r, seed=i)
        scr = np.where(labels > 0, 2, 0).astype(np.uint8)
        scr[::7, ::7] = np.where(labels[::7, ::7] > 0, 2, 1)
        images.append(image)
        scribbles.append(scr)
        masks.append(labels if with_masks else None)
    return TrainingData(stems=[f"im{i}" for i in range(len(radii))], images=images,
                        scribbles=scribbles, masks=masks,
                        digests=[{"image": f"d{i}", "scribbles": f"s{i}"}
                                 for i in range(len(radii))],
                        heldout=[None, scribbles[1] == 1])


def test_training_scales_and_rescale():
    data = _data(with_masks=True)
    scales, found = scale.training_scales(data, 20.0, from_masks=True)
    assert scales == pytest.approx([2.0, 1.0], rel=0.1) and set(found) == {0, 1}
    small = scale.rescale(data, scales)
    assert small.source_shapes == [(96, 96), (96, 96)]
    assert small.shapes[0] == pp.scaled_shape((96, 96), scales[0])
    # labels stay labels (nearest): the codes and the objects' count are kept
    assert set(np.unique(small.scribbles[0])) == set(np.unique(data.scribbles[0]))
    assert len(np.unique(small.masks[0])) == len(np.unique(data.masks[0]))
    assert small.heldout[0] is None and small.heldout[1].shape == small.shapes[1]
    # the record keeps each image's scale, and a later run takes it back
    record = inputs_record(small)
    assert [e["scale"] for e in record["images"]] == scales
    assert record["images"][0]["source_shape"] == [96, 96]
    assert scale.recorded_scales(record, data) == dict(enumerate(scales))
    again, found = scale.training_scales(data, 40.0, record=record)
    assert again == scales and found == {}
    # another image content under the same name: estimated again
    changed = _data(with_masks=True)
    changed.digests[0] = {"image": "other", "scribbles": "s0"}
    assert scale.recorded_scales(record, changed) == {1: scales[1]}


def test_diameters_from_the_forest_never_from_masks():
    found = scale.estimate_diameters(_data(), [0, 1], seed=0)
    assert found[0] == pytest.approx(10, rel=0.25) and found[1] == pytest.approx(20, rel=0.25)
    # a dataset's masks (kept for scoring) do not leak into a run on scribbles
    with_masks = _data(with_masks=True)
    with_masks.masks[0] = np.zeros_like(with_masks.masks[0])
    assert scale.estimate_diameters(with_masks, [0, 1], seed=0) == found
    assert np.isnan(scale.estimate_diameters(with_masks, [0], from_masks=True)[0])


def test_crops_are_drawn_by_the_area_as_read():
    data = _data(with_masks=True)
    cfg = TrainConfig(crop=32, samples_per_epoch=4000, seed=0)
    big = scale.rescale(data, [3.0, 1.0])  # image 0 nine times the pixels
    counts = np.bincount(epoch_plan(cfg, big, 0), minlength=2)
    assert abs(counts[0] / counts.sum() - 0.5) < 0.05


def test_config_and_meta_check_the_diameter():
    with pytest.raises(S2LError, match="--diameter -1"):
        TrainConfig(diameter=-1).validate()
    assert TrainConfig().diameter == 0 and PRESETS["paper"]["diameter"] == 0
    assert PRESETS["laptop"]["diameter"] == 24  # docs/benchmarks.md, "Not past a megapixel"
    assert "diameter" in ModelMeta(diameter=-2.0).problem()
    assert ModelMeta(diameter=24.0).problem() is None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run on discs of diameter ~10 trained at 20 px."""
    import tifffile

    root = tmp_path_factory.mktemp("scale")
    data = root / "data"
    for sub in ("images", "scribbles"):
        (data / sub).mkdir(parents=True)
    for i in range(2):
        image, labels = discs(5, seed=i)
        tifffile.imwrite(data / "images" / f"im{i}.tif", (image[0] * 200 + 20).clip(0, 255)
                         .astype(np.uint8))
        scr = np.zeros(labels.shape, np.uint8)
        scr[labels > 0] = 2
        scr[::5, ::5][labels[::5, ::5] == 0] = 1
        tifffile.imwrite(data / "scribbles" / f"im{i}.tif", scr)
    out = root / "run"
    code = train.main([str(data), "--out", str(out), "--diameter", "20", "--epochs", "1",
                       "--fast-start", "forest", "--encoder", "resnet18", "--crop", "32",
                       "--batch-size", "2", "--samples-per-epoch", "2", "--tile", "64",
                       "--panel-images", "0", "--holdout-strokes", "0", "--lr", "1e-4",
                       "--device", "cpu"])
    assert code == 0
    return data, out


def test_a_run_trains_at_one_size_and_records_it(run, capsys):
    data, out = run
    record = json.loads((out / "inputs.json").read_text())
    for e in record["images"]:
        assert e["source_shape"] == [96, 96]
        assert 1.5 < e["scale"] <= 2.5 and e["shape"] == list(pp.scaled_shape((96, 96),
                                                                               e["scale"]))
    model, meta = load_model(out)
    assert meta.diameter == 20.0


def test_predict_and_onnx_apply_the_scale_alike(run, tmp_path):
    from dataclasses import replace

    from s2l_tools.inference import onnx as oi
    from s2l_tools.inference.export import export_onnx
    from s2l_tools.inference.predict import predict_image
    from s2l_tools.io.images import read_image

    data, out = run
    model, meta = load_model(out)
    image = read_image(data / "images" / "im0.tif")
    _, native = predict_image(model, image, replace(meta, diameter=0.0), device="cpu")
    # this one-epoch model's first pass sees one blob ~100 px across, which the run's 20 px
    # would leave at its size (never shrunk): a diameter above it makes the second pass
    found = pp.estimate_diameter(native)
    meta = replace(meta, diameter=float(np.ceil(2 * found)))
    assert pp.scale_for(found, meta.diameter) > 1.5
    ticks = []
    labels, prob = predict_image(model, image, meta, device="cpu",
                                 progress=lambda d, t: ticks.append((d, t)))
    assert prob.shape == image.shape[1:]
    # one bar over both passes: done never goes back, the total grows once, ends full
    done = [d for d, _ in ticks]
    assert done == sorted(done) and ticks[-1][0] == ticks[-1][1]
    assert len({t for _, t in ticks}) == 2
    # without the metadata's diameter the network sees another image: the maps differ
    assert not np.allclose(prob, native, atol=1e-3)
    path = export_onnx(model, meta, tmp_path / "m.onnx")
    assert oi.read_props(path)[oi.FORMAT_VERSION_KEY] == "2"  # older readers refuse it
    assert oi.read_meta(path)["diameter"] == meta.diameter
    onnx_ticks = []
    onnx_labels, onnx_prob = oi.segment(oi.load_session(path), np.asarray(
        __import__("tifffile").imread(data / "images" / "im0.tif"), np.float32),
        progress=lambda d, t: onnx_ticks.append((d, t)))
    np.testing.assert_allclose(onnx_prob, prob, atol=2e-3)
    assert onnx_ticks[-1] == ticks[-1]  # the same tiles, counted the same way


def test_suggest_sees_a_run_s_images_at_their_trained_scale(run, monkeypatch):
    """s2l-suggest predicts an image the run trained on at the factor inputs.json records
    (one pass, the size its EMA map was made at); another image gets the first pass."""
    import shutil

    import tifffile

    from s2l_tools.inference import predict, suggest

    data, out = run
    record = json.loads((out / "inputs.json").read_text())
    seen = []
    real = predict.predict_probability

    def spy(*args, **kwargs):
        seen.append(kwargs.get("scale"))
        return real(*args, **kwargs)

    monkeypatch.setattr(predict, "predict_probability", spy)
    results = suggest.suggest(out, data, device="cpu")
    assert seen == [e["scale"] for e in record["images"]]
    assert {r.source for r in results} == {"store"}
    other = data.parent / "other"
    shutil.copytree(data, other)
    image = tifffile.imread(other / "images" / "im0.tif")
    tifffile.imwrite(other / "images" / "im0.tif", np.ascontiguousarray(image[:, ::-1]))
    seen.clear()
    results = suggest.suggest(out, other, device="cpu")
    assert seen == [None, record["images"][1]["scale"]]
    assert [r.source for r in results] == ["prediction", "store"]


def test_from_keeps_the_scales(run, tmp_path, capsys):
    data, out = run
    capsys.readouterr()
    again = tmp_path / "again"
    assert train.main([str(data), "--out", str(again), "--from", str(out), "--epochs", "1",
                       "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "2 scale(s) kept from" in err and "EMA maps of 2 image(s) kept" in err
    assert (json.loads((again / "inputs.json").read_text())["images"]
            == json.loads((out / "inputs.json").read_text())["images"])


@pytest.mark.ray
def test_ray_workers_train_at_the_run_s_scales(run, tmp_path, monkeypatch):
    """Every worker estimates the factors itself (the same seeded forest): a 2-worker run on
    a private local Ray records those of a one-process run, and the store's digest (checked
    on every rank after every epoch) shows the ranks' maps, and so their sizes, agree."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no ~/.ray/auth_token from tests
    monkeypatch.setenv("S2L_CHECK_STORE", "1")
    data, out = run
    ray_run = tmp_path / "ray"
    assert train.main([str(data), "--out", str(ray_run), "--diameter", "20", "--epochs", "2",
                       "--num-workers", "2", "--fast-start", "forest", "--encoder", "resnet18",
                       "--crop", "32", "--batch-size", "4", "--samples-per-epoch", "4",
                       "--ensemble-every", "1", "--warmup-epochs", "1", "--tile", "64",
                       "--panel-images", "0", "--holdout-strokes", "0",
                       "--device", "cpu"]) == 0
    images = json.loads((ray_run / "inputs.json").read_text())["images"]
    assert images == json.loads((out / "inputs.json").read_text())["images"]
    assert load_model(ray_run)[1].diameter == 20.0

"""s2l-suggest: regions for new strokes from a run's EMA store; never read as scribbles."""

import csv
import shutil

import numpy as np
import pytest
import tifffile

from s2l_tools import labels as L
from s2l_tools.cli import suggest as suggest_cli
from s2l_tools.cli import train
from s2l_tools.cli.scribbles import main as scribbles_main
from s2l_tools.data.demo_data import make_demo_dataset
from s2l_tools.inference.suggest import find_regions, score_map
from s2l_tools.io.roi import read_rois, rasterize_roi, rois_to_scribbles, write_roiset

TINY = ["--encoder", "resnet18", "--crop", "32", "--batch-size", "2", "--samples-per-epoch",
        "4", "--warmup-epochs", "1", "--ensemble-every", "1", "--tile", "64",
        "--panel-images", "0", "--device", "cpu", "--epochs", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A dataset (three images with scribbles, one without) and an s2l and a pce run."""
    root = tmp_path_factory.mktemp("suggest")
    make_demo_dataset(root, n_train=4, n_val=0, shape=(64, 64), seed=2)
    data = root / "train"
    (data / "rois" / "nuclei_003.zip").unlink()  # an image nobody has scribbled yet
    assert scribbles_main([str(data)]) == 0
    s2l, pce = root / "s2l", root / "pce"
    assert train.main([str(data), "--out", str(s2l), *TINY]) == 0
    assert train.main([str(data), "--out", str(pce), "--method", "pce", *TINY]) == 0
    return data, s2l, pce


def test_score_map_and_regions():
    y = np.zeros((48, 48), np.float32)
    y[8:20, 8:20] = 0.6   # the store is unsure here (below tau 0.8)
    y[30:36, 30:36] = 0.55  # a smaller unsure patch
    p = y.copy()
    p[40:46, 2:10] = 0.9   # the prediction now disagrees with the store here
    s = score_map(p, y, threshold=0.8)
    assert s[0, 0] == 0 and s[12, 12] == pytest.approx(2 / 3) and s[42, 5] == pytest.approx(0.9)
    regions = find_regions(s, top_k=2, min_area=4)
    assert [r.name for r in regions] == ["suggest_01", "suggest_02"]
    assert regions[0].score > regions[1].score and regions[0].mask[14, 14]
    assert 10 < regions[0].y < 18 and 10 < regions[0].x < 18
    # scribbled pixels (and 2 px around) need no stroke
    scr = np.zeros_like(y, np.uint8)
    scr[14, 8:20] = L.FOREGROUND
    s2 = score_map(p, y, scr, threshold=0.8)
    assert s2[14, 14] == 0 and s2[12, 14] == 0 and s2[9, 14] > 0
    # no store: the prediction's uncertainty
    assert score_map(np.full((4, 4), 0.5, np.float32))[0, 0] == pytest.approx(1.0)
    assert score_map(np.full((4, 4), 0.0, np.float32))[0, 0] == 0
    assert find_regions(np.zeros((8, 8), np.float32)) == []


def test_called_map_points_at_what_an_unusual_image_calls_cell():
    """On an image called cell far more than any training image, the regions lie in what
    the network calls cell (confidently), not where it is unsure."""
    from s2l_tools.inference.suggest import called_map, unusual_image

    p = np.full((64, 64), 0.02, np.float32)
    p[:, :44] = 0.97          # 69 % of it called cell, confidently
    p[50:58, 50:58] = 0.5     # a small patch it is unsure of
    assert unusual_image(p, 0.5, 0.2) and not unusual_image(p, 0.5, 0.5)
    unsure = find_regions(score_map(p), top_k=1, min_area=4)
    assert unsure[0].mask[54, 54]  # the uncertainty points at the patch
    scr = np.zeros_like(p, np.uint8)
    scr[30, 5:40] = L.BACKGROUND
    s = called_map(p, scr, threshold=0.5)
    assert s[10, 10] == 1 and s[54, 54] == 0 and s[30, 20] == 0 and s[10, 60] == 0
    regions = find_regions(s, top_k=3, min_area=4)
    assert len(regions) == 3
    for r in regions:
        assert (p[r.mask] > 0.5).mean() > 0.95 and not r.mask[54, 54], r.name


def test_score_map_edge_band_leaves_out_the_outline():
    # a predicted cell whose outline the store doubts, and a whole object it doubts
    p = np.zeros((48, 48), np.float32)
    p[10:30, 10:30] = 0.9
    y = p.copy()
    y[8:12, 8:32] = 0.5      # the store is unsure along the cell's top edge
    y[38:46, 38:46] = 0.5    # ... and of a whole object the prediction calls background
    whole = score_map(p, y, threshold=0.8)
    inner = score_map(p, y, threshold=0.8, edge_band=3)
    assert whole[10, 20] == pytest.approx(1.0) and inner[10, 20] == 0  # on the outline
    assert inner[8, 20] == 0 and inner[12, 20] == 0                     # within 3 px of it
    assert inner[42, 42] == pytest.approx(1.0) == whole[42, 42]         # far from it
    assert inner[20, 20] == whole[20, 20] == 0                          # sure inside
    regions = find_regions(inner, top_k=3, min_area=4)
    assert len(regions) == 1 and regions[0].mask[42, 42]


def test_suggest_writes_rois_csv_and_overviews(runs, tmp_path, capsys):
    data, run, _ = runs
    out = tmp_path / "sugg"
    assert suggest_cli.main([str(run), str(data), "--out", str(out), "--top-k", "3",
                             "--min-area", "4", "--device", "cpu"]) == 0
    assert "suggested region(s) in 4 image(s)" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "suggestions.csv").open()))
    assert rows and [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    # the order to draw: every image's best region, then every image's second, ...
    tier = [int(r["region"].split("_")[1]) for r in rows]
    assert tier == sorted(tier)
    firsts = [float(r["score"]) for r in rows if r["region"] == "suggest_01"]
    assert firsts == sorted(firsts, reverse=True)
    assert {r["source"] for r in rows if r["image"] == "nuclei_003"} <= {"prediction"}
    assert {r["source"] for r in rows if r["image"] != "nuclei_003"} <= {"store"}
    for stem in ("nuclei_000", "nuclei_001", "nuclei_002", "nuclei_003"):
        assert (out / f"{stem}_suggestions.png").read_bytes()[:4] == b"\x89PNG"
        mine = [r for r in rows if r["image"] == stem]
        assert len(mine) <= 3
        if not mine:
            continue
        rois = read_rois(out / f"{stem}_suggestions.zip")
        assert sorted(r.name for r in rois) == sorted(r["region"] for r in mine)
        assert all(r.group == L.GROUP_SUGGESTION for r in rois)
        assert all(r.hexcolor(r.stroke_color) == "#ff00ff" for r in rois)
        # each ROI covers its region: the area in the table, pixel for pixel
        for roi in rois:
            area = next(int(r["area"]) for r in mine if r["region"] == roi.name)
            assert rasterize_roi(roi, (64, 64)).sum() >= area
    assert any(float(r["area"]) > 0 for r in rows)


def test_suggestion_rois_are_never_scribbles(runs, tmp_path):
    """Suggestions saved in the ROI Manager with the strokes drawn in them (one RoiSet)
    give the same scribble mask as the strokes alone, in s2l-scribbles too."""
    data, run, _ = runs
    out = tmp_path / "sugg"
    assert suggest_cli.main([str(run), "--out", str(out), "--min-area", "4",
                             "--device", "cpu"]) == 0
    stem = next(p.name.removesuffix("_suggestions.zip") for p in out.glob("*.zip"))
    suggestions = read_rois(out / f"{stem}_suggestions.zip")
    assert not rois_to_scribbles(suggestions, (64, 64)).any()
    strokes = read_rois(data / "rois" / f"{stem}.zip")
    alone = rois_to_scribbles(strokes, (64, 64))
    both = tmp_path / "data"
    shutil.copytree(data, both)
    shutil.rmtree(both / "scribbles")
    write_roiset([*suggestions, *strokes], both / "rois" / f"{stem}.zip")
    assert scribbles_main([str(both)]) == 0
    np.testing.assert_array_equal(tifffile.imread(both / "scribbles" / f"{stem}.tif"), alone)


@pytest.mark.parametrize("case", ["pce", "channels", "not_a_run", "out_in_data"])
def test_suggest_refusals_write_nothing(runs, tmp_path, capsys, case):
    data, run, pce = runs
    out = tmp_path / "sugg"
    argv = [str(run), str(data), "--out", str(out), "--device", "cpu"]
    expect = {"pce": "--method pce, which keeps no EMA store", "channels": "the model in",
              "not_a_run": "no checkpoint.pt", "out_in_data": "a folder of the dataset"}[case]
    if case == "pce":
        argv[0] = str(pce)
    elif case == "channels":
        rgb = tmp_path / "rgb"
        (rgb / "images").mkdir(parents=True)
        im = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        tifffile.imwrite(rgb / "images" / "a.tif", im, photometric="rgb")
        argv[1] = str(rgb)
    elif case == "not_a_run":
        argv[0] = str(tmp_path)
    elif case == "out_in_data":
        out = data / "rois"
        argv[3] = str(out)
    before = sorted(p.name for p in data.rglob("*"))
    assert suggest_cli.main(argv) == 1
    err = capsys.readouterr().err
    assert expect in " ".join(err.split()) and err.count("\n") == 1, err
    assert case == "out_in_data" or not out.exists()
    assert sorted(p.name for p in data.rglob("*")) == before


# ----------------------------------------------------------------------------- Fiji

def _fiji_suggestions(tmp_path, source="store"):
    """An image and its suggestions, as s2l-suggest writes them (no training needed)."""
    from s2l_tools.inference.suggest import ImageSuggestions, write_suggestions

    image = np.random.default_rng(0).random((1, 40, 50)).astype(np.float32)
    score = np.zeros((40, 50), np.float32)
    score[5:15, 5:20] = 1.0
    score[25:35, 30:45] = 0.8
    regions = find_regions(score, top_k=5, min_area=4, sigma=0)
    write_suggestions([ImageSuggestions("cells", image, np.zeros((40, 50), np.float32),
                                        source, regions)], tmp_path / "sugg")
    tifffile.imwrite(tmp_path / "cells.tif", (image[0] * 255).astype(np.uint8), imagej=True)
    (tmp_path / "empty").mkdir()
    return regions


def _spec(tmp_path, mode):
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = {"mode": mode, "image": str(tmp_path / "cells.tif"), "folder": str(tmp_path / "sugg"),
            "empty": str(tmp_path / "empty"),
            "menu": str(root / "fiji_bridge" / "scripts" / "Plugins" / "Scribble2Label")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    return (Path(__file__).parent / "imagej_scripts" / "suggestions_driver.py",
            root / "fiji_bridge" / "jars" / "Lib", tmp_path / "spec.json")


def _lines(stdout):
    return {ln.partition(" ")[0]: ln.partition(" ")[2] for ln in stdout.splitlines()}


@pytest.mark.imagej
@pytest.mark.parametrize("source", ["unusual", "undercalled"])
def test_show_suggestions_in_imagej(tmp_path, source):
    import json

    from _imagej import IMAGEJ_AVAILABLE, run_jython

    if not IMAGEJ_AVAILABLE:
        pytest.skip("needs /usr/share/java/ij.jar, jython.jar and java")
    regions = _fiji_suggestions(tmp_path, source=source)
    proc = run_jython(*_spec(tmp_path, "headless"), timeout=180)
    out = _lines(proc.stdout)
    loaded = json.loads(out["LOADED"])
    # ImageJ reads group 3, magenta, and each ROI covers exactly its region's pixels
    assert loaded == [[r.name, 3, "#ff00ff", r.area] for r in regions]
    assert json.loads(out["OVERLAY"]) == ["fg-keep", "suggest_01", "suggest_02"]
    assert "no suggestions for cells.tif" in out["MISSING"]
    assert "Show Suggestions: 2 suggested region(s) for cells.tif" in proc.stdout
    # an image s2l-suggest found unlike the training images, or with cells outlined and
    # not called: the message says which
    said = {"unusual": "far more of this image cell than of any training image",
            "undercalled": "outlined far more cells in this image than it called"}
    assert all((text in proc.stdout) == (key == source) for key, text in said.items())


@pytest.mark.imagej
def test_show_suggestions_roi_manager_under_xvfb(tmp_path):
    import json
    import os
    import signal
    import subprocess

    from _imagej import IMAGEJ_AVAILABLE, SENTINEL, jython_command

    if not IMAGEJ_AVAILABLE or shutil.which("xvfb-run") is None:
        pytest.skip("needs ImageJ, jython, java and xvfb-run")
    _fiji_suggestions(tmp_path)
    cmd = ["xvfb-run", "-a", *[a for a in jython_command(*_spec(tmp_path, "manager"))
                               if a != "-Djava.awt.headless=true"]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    assert SENTINEL in stdout.splitlines(), stdout + stderr
    assert json.loads(_lines(stdout)["MANAGER"]) == ["bg-keep", "suggest_01", "suggest_02"]


def test_draw_order_spreads_the_strokes_over_the_images():
    from s2l_tools.inference.suggest import draw_order

    rows = [dict(image="a", region="suggest_01", score=9.0),
            dict(image="a", region="suggest_02", score=8.0),
            dict(image="b", region="suggest_01", score=7.0),
            dict(image="a", region="suggest_03", score=6.0),
            dict(image="c", region="suggest_01", score=5.0),
            dict(image="b", region="suggest_02", score=4.0)]
    got = [(r["image"], r["region"][-2:]) for r in draw_order(rows[::-1])]
    assert got == [("a", "01"), ("b", "01"), ("c", "01"), ("a", "02"), ("b", "02"),
                   ("a", "03")]
    assert draw_order([]) == []
    # the regions of unusual images (masks far over the training images') come first
    for row in rows:
        row["source"] = "unusual" if row["image"] == "b" else "prediction"
    got = [(r["image"], r["region"][-2:]) for r in draw_order(rows[::-1])]
    assert got == [("b", "01"), ("b", "02"), ("a", "01"), ("c", "01"), ("a", "02"),
                   ("a", "03")]
    # so do those of images where the network outlined far more cells than it called
    for row in rows:
        row["source"] = {"b": "unusual", "c": "undercalled"}.get(row["image"], "prediction")
    got = [(r["image"], r["region"][-2:]) for r in draw_order(rows[::-1])]
    assert got == [("b", "01"), ("c", "01"), ("b", "02"), ("a", "01"), ("a", "02"),
                   ("a", "03")]


def test_missed_map_points_at_cells_outlined_not_called():
    """On an image where the network outlines cells it does not call, the regions lie on
    those cells, not on the cell it called, nor where strokes are."""
    from s2l_tools.inference.postprocess import under_called
    from s2l_tools.inference.suggest import missed_map

    yy, xx = np.mgrid[:96, :96]
    p = np.full((96, 96), 0.01, np.float32)
    for cy, cx in ((20, 20), (20, 70), (70, 20)):  # outlined: a faint ring
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        p[(r2 >= 49) & (r2 < 100)] = 0.2
    p[(yy - 70) ** 2 + (xx - 70) ** 2 < 100] = 0.95  # called
    assert under_called(p, 0.5)
    scr = np.zeros_like(p, np.uint8)
    scr[70, 14:27] = L.FOREGROUND  # a stroke through one outlined cell
    s = missed_map(p, scr, threshold=0.5)
    assert s[20, 20] == 1 and s[20, 70] == 1 and s[70, 70] == 0 and s[5, 50] == 0
    assert s[70, 20] == 0  # by the stroke
    regions = find_regions(s, top_k=5, min_area=4)
    assert {(round(r.y / 10), round(r.x / 10)) for r in regions} >= {(2, 2), (2, 7)}
    assert all(not r.mask[60:81, 60:81].any() for r in regions)


def _copied_run(runs, tmp_path):
    """(data, a copy of the s2l run, its model, its metadata, its probability on the image
    without scribbles, nuclei_003), for a test that changes the copy's metadata."""
    from s2l_tools.inference.predict import predict_probability
    from s2l_tools.io.images import read_image
    from s2l_tools.training.checkpoint import load_model

    data, run, _ = runs
    odd = tmp_path / "run"
    shutil.copytree(run, odd)
    model, meta = load_model(odd / "model.pt")
    prob = predict_probability(model, read_image(data / "images" / "nuclei_003.tif"), meta,
                               device="cpu", batch_size=1)
    return data, odd, model, meta, prob


def test_unusual_image_gets_regions_where_it_is_called_cell(runs, tmp_path, capsys):
    """An image without scribbles whose prediction calls far more of it cell than the model
    did on any training image: its regions lie in what the network calls cell (not where it
    is unsure), come first, and the command says so."""
    from dataclasses import replace

    from s2l_tools.training.checkpoint import save_model

    data, odd, model, meta, prob = _copied_run(runs, tmp_path)
    # at this threshold 70 % of it is called cell (under 1: a tiny model trained on a loaded
    # machine, with fewer threads, may call most of it cell at probability 1.0)
    cut = min(float(np.quantile(prob, 0.3)), 0.99)
    save_model(odd / "model.pt", model.state_dict(),
               replace(meta, threshold=cut, train_share_max=0.1))  # limit: 40 %
    out = tmp_path / "sugg"
    assert suggest_cli.main([str(odd), str(data), "--out", str(out), "--top-k", "3",
                             "--min-area", "4", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "1 image(s) called far more cell than any training image (nuclei_003)" in err
    rows = list(csv.DictReader((out / "suggestions.csv").open()))
    assert rows[0]["image"] == "nuclei_003" and rows[0]["source"] == "unusual"
    assert {r["source"] for r in rows if r["image"] != "nuclei_003"} <= {"store"}
    assert read_rois(out / "nuclei_003_suggestions.zip")  # regions of it, as Fiji ROIs
    # the same model without the record: no such image
    save_model(odd / "model.pt", model.state_dict(), replace(meta, threshold=cut))
    assert suggest_cli.main([str(odd), str(data), "--out", str(out), "--device", "cpu"]) == 0
    assert "called far more cell" not in capsys.readouterr().err
    rows = list(csv.DictReader((out / "suggestions.csv").open()))
    assert {r["source"] for r in rows if r["image"] == "nuclei_003"} <= {"prediction"}


def test_image_outlined_not_called_gets_regions_on_those_cells(runs, tmp_path, capsys,
                                                              monkeypatch):
    """An image without scribbles where the network outlines far more cells than it calls:
    its regions lie on those cells, come first, and the command says so. The network's map
    of that image is drawn (a faint ring on each of its nuclei, as a network that misses
    them makes): the tiny model's own map saturates at 1.0 in places that change with the
    machine it trained on."""
    from scipy import ndimage as ndi

    import s2l_tools.inference.predict as predict_module
    from s2l_tools.inference.postprocess import under_called
    from s2l_tools.io.images import read_image, read_labels

    data, run, _ = runs
    truth = read_labels(data / "masks" / "nuclei_003.tif") > 0
    ring = truth & ~ndi.binary_erosion(truth, iterations=2)
    drawn = np.where(ring, 0.3, np.where(truth, 0.05, 0.01)).astype(np.float32)
    assert under_called(drawn, 0.5)
    image, real = read_image(data / "images" / "nuclei_003.tif"), predict_module.predict_probability

    def network(model, im, meta, **kw):
        return drawn if np.array_equal(im, image) else real(model, im, meta, **kw)

    monkeypatch.setattr(predict_module, "predict_probability", network)
    out = tmp_path / "sugg"
    assert suggest_cli.main([str(run), str(data), "--out", str(out), "--top-k", "3",
                             "--min-area", "4", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert ("1 image(s) where the network outlined far more cells than it called "
            "(nuclei_003)") in err
    rows = list(csv.DictReader((out / "suggestions.csv").open()))
    assert rows[0]["image"] == "nuclei_003" and rows[0]["source"] == "undercalled"
    assert {r["source"] for r in rows if r["image"] != "nuclei_003"} <= {"store"}
    mine = [r for r in rows if r["image"] == "nuclei_003"]
    assert len(mine) == 3
    for r in mine:  # each region's centre on one of its nuclei
        assert truth[round(float(r["y"])), round(float(r["x"]))], r
    assert read_rois(out / "nuclei_003_suggestions.zip")

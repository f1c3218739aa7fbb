"""The Fiji bridge (fiji_bridge/): s2l_fiji driven inside real ImageJ 1 (Jython).

One headless JVM run covers export (ROIs of several types -> DATA/images +
DATA/rois, checked against ImageJ's own masks and s2l-scribbles), import
(label images -> ROIs -> filled back by ImageJ == the labels) and the
probability overlay; a second run under ``xvfb-run`` covers the ROI Manager.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

from s2l_tools.io import roi as R
from s2l_tools.io.images import write_tiff
from s2l_tools.cli.scribbles import main as scribbles_main

from _imagej import IMAGEJ_AVAILABLE, SENTINEL, jython_command, run_jython

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "fiji_bridge" / "jars" / "Lib"
MENU = ROOT / "fiji_bridge" / "scripts" / "Plugins" / "Scribble2Label"
DRIVER = Path(__file__).parent / "imagej_scripts" / "fiji_bridge_driver.py"

pytestmark = [
    pytest.mark.imagej,
    pytest.mark.skipif(not IMAGEJ_AVAILABLE, reason="needs /usr/share/java/ij.jar, jython.jar and java"),
]

W, H = 96, 64  # the scribbled image
LW, LH = 80, 60  # the small label image

COLORS = "#ffff00=fg"

# drawing order; no two ROIs of different classes overlap, all inside the image
ROIS = [
    {"kind": "polyline", "xy": [[3, 3], [20, 8], [12, 18], [28, 20]], "name": "stroke-a", "group": 1},
    {"kind": "freeline", "xy": [[x, 30 + 3 * np.sin(x / 4)] for x in np.arange(5, 41, 1.0)],
     "width": 3, "name": "bg-wave"},
    {"kind": "polygon", "xy": [[45.5, 3.2], [60.3, 5.5], [62.1, 18.7], [50.5, 15.5], [44.2, 20.4]],
     "name": "Cell 3"},
    {"kind": "oval", "rect": [70, 4, 16, 12], "group": 2},
    {"kind": "composite", "outer": [50, 30, 24, 20], "inner": [56, 36, 8, 6], "name": "fg-ring"},
    {"kind": "line", "pts": [6, 44, 36, 58], "width": 5, "name": "stroke-y", "color": "#ffff00"},
    {"kind": "freehand", "xy": [[80, 40], [92, 42], [90, 58], [82, 60], [78, 50]]},
    {"kind": "polyline", "xy": [[78, 22], [92, 28]], "name": "stroke-a", "group": 1, "width": 2},
]
#: class codes in the scribble mask (1 background, 2 foreground); ROI 6 is
#: given background by the driver (as the class dialog would)
CODES = [2, 1, 2, 1, 2, 2, 1, 2]


def _jsonable(rois):
    return json.loads(json.dumps(rois, default=lambda a: np.asarray(a).tolist()))


def _parse(stdout):
    lines = {}
    for ln in stdout.splitlines():
        key, _, rest = ln.partition(" ")
        lines.setdefault(key, []).append(rest)
    return lines


def _report_times(out, label):
    times = [t for t in out.get("TIME", [])]
    print(f"\n[{label}] JVM timings (s): " + ", ".join(times))


def _make_labels():
    """uint16 labels: touching cells, a ring (hole), two pieces, corner contact, > 255."""
    lab = np.zeros((LH, LW), np.uint16)
    lab[5:20, 5:20] = 300
    lab[5:20, 20:32] = 301  # touches 300
    yy, xx = np.mgrid[:LH, :LW]
    d2 = (yy - 40) ** 2 + (xx - 20) ** 2
    lab[(d2 < 100) & (d2 >= 16)] = 1000  # ring with a hole
    lab[30:34, 40:45] = 7
    lab[50:55, 50:58] = 7  # two pieces
    lab[10, 50] = 4000
    lab[11, 51] = 4000  # touching only at a corner
    rng = np.random.default_rng(0)
    lab[2:12, 60:76] = rng.choice([60000, 60001, 1], size=(10, 16))  # ragged, interleaved
    lab[40:58, 66:78] = 65535
    return lab


def _make_big_labels(n=1024, cell=22, seed=1):
    """A n x n uint16 image of ~2000 touching, irregular cells."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    jy = (yy + 3 * np.sin(xx / 7.0) + rng.integers(0, 2, size=(n, n))) // cell
    jx = (xx + 3 * np.cos(yy / 5.0)) // cell
    lab = (jy * (n // cell + 2) + jx + 1).astype(np.int64)
    lab[rng.random((n, n)) < 0.02] = 0
    _, inv = np.unique(lab, return_inverse=True)
    return inv.reshape(n, n).astype(np.uint16)  # 0 stays 0 (smallest)


def _run_xvfb(script, *args, timeout=120):
    cmd = ["xvfb-run", "-a", *[a for a in jython_command(script, *args) if a != "-Djava.awt.headless=true"]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise RuntimeError(f"timed out\n{out}\n{err}") from None
    if proc.returncode != 0 or SENTINEL not in out.splitlines():
        raise RuntimeError(f"exit {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}")
    return out


# ----------------------------------------------------------------------------- headless run


@pytest.fixture(scope="module")
def headless(tmp_path_factory):
    d = tmp_path_factory.mktemp("fiji_bridge")
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(H, W)).astype(np.uint8)
    (d / "in").mkdir()
    tifffile.imwrite(d / "in" / "cells.tif", image, imagej=True)
    (d / "masks").mkdir()
    labels = _make_labels()
    write_tiff(d / "labels16.tif", labels)  # as s2l-predict writes it (zlib)
    lab32 = np.zeros((30, 40), np.int32)
    lab32[2:10, 2:20] = 70000
    lab32[10:20, 2:20] = 123456  # touches 70000
    lab32[22:28, 30:38] = 5
    write_tiff(d / "labels32.tif", lab32)
    big = _make_big_labels()
    write_tiff(d / "big.tif", big)
    prob = np.linspace(0, 1, LH * LW, dtype=np.float32).reshape(LH, LW)
    write_tiff(d / "prob.tif", prob)
    tifffile.imwrite(d / "for_overlay.tif", np.zeros((LH, LW), np.uint8), imagej=True)
    spec = {
        "mode": "headless",
        "export": {
            "image": str(d / "in" / "cells.tif"), "data": str(d / "DATA"), "data2": str(d / "DATA2"),
            "masks": str(d / "masks"), "rois": _jsonable(ROIS), "colors": COLORS,
            "export_script": str(MENU / "Export_Scribbles.py"),
        },
        "imports": [
            {"key": "u16", "path": str(d / "labels16.tif"), "back": str(d / "back16.tif"), "details": True},
            {"key": "i32", "path": str(d / "labels32.tif"), "back": str(d / "back32.tif"), "details": True},
            {"key": "big", "path": str(d / "big.tif"), "back": str(d / "back_big.tif")},
        ],
        "image_for_overlay": str(d / "for_overlay.tif"),
        "prob": str(d / "prob.tif"),
        "menu": str(MENU),
    }
    (d / "spec.json").write_text(json.dumps(spec))
    proc = run_jython(DRIVER, LIB, d / "spec.json", timeout=300)
    out = _parse(proc.stdout)
    _report_times(out, "headless")
    return {"dir": d, "out": out, "stdout": proc.stdout, "image": image, "labels": labels,
            "lab32": lab32, "big": big}


def _one(out, key):
    assert key in out, f"no {key} line"
    return out[key][0]


def test_unclassified_rois_reported_not_dropped(headless):
    out = headless["out"]
    nomap = _one(out, "UNCLASSIFIED-NOMAP")
    assert nomap.startswith("UNCLASSIFIED")
    names = json.loads(nomap.split(" ", 1)[1].split(" | ")[0])
    assert names == ["'stroke-y'", "#7 (unnamed)"]
    assert "2 ROI(s) have no class" in nomap and "Edit > Selection > Properties" in nomap
    withmap = _one(out, "UNCLASSIFIED-MAP")
    assert json.loads(withmap.split(" ", 1)[1].split(" | ")[0]) == ["#7 (unnamed)"]
    assert _one(out, "WROTE-AFTER-ERRORS") == "False False"  # nothing written


def test_export_refusals(headless):
    out = headless["out"]
    stack = _one(out, "STACK")
    assert stack.startswith("ERROR stack.tif: a stack/hyperstack (2 planes)")
    assert "Image > Duplicate" in stack
    assert re.match(r"ERROR .*'fg-label' is a text ROI", _one(out, "TEXT"))
    assert "no ROIs to export" in _one(out, "NOROIS")
    # s2l-suggest's suggestions (group 3) among the scribbles are left out, never asked about
    assert json.loads(_one(out, "SUGGESTION-LEFT-OUT")) == ["stroke-a.roi"]
    assert "no ROIs to export" in _one(out, "ONLY-SUGGESTION")


def test_export_files_and_reexport(headless):
    d, out = headless["dir"], headless["out"]
    data = d / "DATA"
    assert sorted(os.listdir(data / "images")) == ["cells.tif"]  # no temp files left
    assert sorted(os.listdir(data / "rois")) == ["cells.zip"]
    first = json.loads(_one(out, "FIRST-ENTRIES"))
    assert first == ["stroke-a.roi", "bg-wave.roi", "Cell 3.roi"]
    entries = json.loads(_one(out, "ENTRIES"))
    assert len(entries) == len(ROIS)  # the re-export replaced the zip
    assert entries[:3] == first and entries[4:6] == ["fg-ring.roi", "stroke-y.roi"]
    assert entries[7] == "stroke-a-1.roi"  # unique names, as the ROI Manager makes them
    assert re.fullmatch(r"\d{4}-\d{4}\.roi", entries[3]) and re.fullmatch(r"\d{4}-\d{4}\.roi", entries[6])
    exp = _one(out, "EXPORT").split()
    assert exp[0] == str(data / "images" / "cells.tif") and exp[2:] == ["5", "3"]
    # the image: the second export's pixels, without the overlay holding the scribbles
    img = tifffile.imread(data / "images" / "cells.tif")
    assert np.array_equal(img, headless["image"])
    assert R.read_rois(data / "images" / "cells.tif") == []
    # the user's image and ROIs are untouched
    assert _one(out, "TITLE-AFTER") == f"cells.tif {len(ROIS)}"
    assert json.loads(_one(out, "GROUPS-UNCHANGED")) == [1, 0, 0, 2, 0, 0, 2, 1]
    rois = R.read_rois(data / "rois" / "cells.zip")
    assert [r.group for r in rois] == [{2: 1, 1: 2}[c] for c in CODES]
    assert [r.name for r in rois] == [e[:-4] for e in entries]


def test_exported_rois_match_imagej_masks(headless):
    d, out = headless["dir"], headless["out"]
    rois = R.read_rois(d / "DATA" / "rois" / "cells.zip")
    ij = [np.fromfile(d / "masks" / f"{i:02d}.raw", np.uint8).reshape(H, W) > 0 for i in range(len(ROIS))]
    for i, (roi, m) in enumerate(zip(rois, ij)):
        assert m.any(), i
        ours = R.rasterize_roi(roi, (H, W))
        assert np.array_equal(ours, m), f"ROI {i} ({ROIS[i]['kind']}): {np.argwhere(ours ^ m)[:5].tolist()}"
    # roi.getMask() of the area ROIs agrees too
    n_area = 0
    for line in out["GETMASK"]:
        i, x, y, w, h = (int(v) for v in line.split())
        local = np.fromfile(d / "masks" / f"{i:02d}_getmask.raw", np.uint8).reshape(h, w) > 0
        full = np.zeros((H, W), bool)
        full[y:y + h, x:x + w] = local
        assert np.array_equal(full, ij[i]), i
        assert np.array_equal(full, R.rasterize_roi(rois[i], (H, W))), i
        n_area += 1
    assert n_area == 4  # polygon, oval, composite, freehand
    # and s2l-scribbles turns the export into what ImageJ draws
    expected = np.zeros((H, W), np.uint8)
    for m, code in zip(ij, CODES):
        expected[m] = code
    assert set(np.unique(expected)) == {0, 1, 2}
    assert scribbles_main([str(d / "DATA")]) == 0
    got = tifffile.imread(d / "DATA" / "scribbles" / "cells.tif")
    assert np.array_equal(got, expected)
    assert np.array_equal(R.rois_to_scribbles(rois, (H, W)), expected)


def test_export_menu_script(headless):
    d, stdout = headless["dir"], headless["stdout"]
    assert "Export Scribbles: Wrote " in stdout
    data2 = d / "DATA2"
    assert sorted(os.listdir(data2 / "images")) == ["other.tif"]
    with zipfile.ZipFile(data2 / "rois" / "other.zip") as zf:
        assert len(zf.namelist()) == len(ROIS)


def test_import_roundtrip(headless):
    d, out = headless["dir"], headless["out"]
    for key, labels, back in (("u16", headless["labels"], "back16.tif"),
                              ("i32", headless["lab32"], "back32.tif"),
                              ("big", headless["big"], "back_big.tif")):
        values = np.unique(labels)
        values = values[values > 0]
        assert [ln for ln in out["NROIS"] if ln.startswith(key + " ")] == [f"{key} {len(values)}"]
        rebuilt = tifffile.imread(d / back)
        assert rebuilt.shape == labels.shape, key
        assert np.array_equal(rebuilt.astype(np.int64), labels.astype(np.int64)), (
            f"{key}: {np.argwhere(rebuilt.astype(np.int64) != labels)[:5].tolist()}")
    bits = dict(ln.split() for ln in out["BITS"])
    assert bits == {"u16": "16", "i32": "32", "big": "16"}
    rois = [ln.split() for ln in out["ROI"]]
    names16 = [r[1] for r in rois if r[0] == "u16"]
    assert names16 == [f"cell-{v:04d}" for v in (1, 7, 300, 301, 1000, 4000, 60000, 60001, 65535)]
    kinds = {r[1]: r[2] for r in rois if r[0] == "u16"}
    assert kinds["cell-1000"] == "ShapeRoi" and kinds["cell-0007"] == "ShapeRoi"  # hole, two pieces
    assert [r[1] for r in rois if r[0] == "i32"] == ["cell-0005", "cell-70000", "cell-123456"]


def test_import_targets_and_errors(headless):
    out = headless["out"]
    n = len(np.unique(headless["labels"])) - 1
    assert _one(out, "OVERLAY") == f"{n} {n}"
    assert _one(out, "OVERLAY-RESET") == f"{n}"  # replaced, not doubled
    assert "is 80x60 but small.tif is 5x5" in _one(out, "SIZE")
    assert "no such file" in _one(out, "MISSING")
    assert "not labels" in _one(out, "PROBMAP")


def test_probability_overlay(headless):
    out = headless["out"]
    assert _one(out, "PROB") == f"1 ImageRoi 0.40 {LW} {LH} 0 255"
    assert "is 80x60 but small.tif is 5x5" in _one(out, "PROB-SIZE")


def test_import_and_probability_menu_scripts(headless):
    out, stdout = headless["out"], headless["stdout"]
    n = len(np.unique(headless["labels"])) - 1
    assert f"Import Segmentation: {n} cells imported from labels16.tif" in stdout
    assert _one(out, "MENU-OVERLAY") == f"{n + 1} cell-0001 s2l-probability"


# ----------------------------------------------------------------------------- ROI Manager


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs xvfb-run for the ROI Manager window")
def test_roi_manager_under_xvfb(tmp_path):
    labels = _make_labels()
    write_tiff(tmp_path / "labels16.tif", labels)
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((LH, LW), np.uint8), imagej=True)
    spec = {
        "mode": "manager",
        "imports": [{"key": "u16", "path": str(tmp_path / "labels16.tif")}],
        "image_for_overlay": str(tmp_path / "img.tif"),
        "menu": str(MENU),
        "export": {"rois": _jsonable(ROIS), "colors": COLORS, "data": str(tmp_path / "DATA")},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    stdout = _run_xvfb(DRIVER, LIB, tmp_path / "spec.json")
    out = _parse(stdout)
    _report_times(out, "xvfb")
    n = len(np.unique(labels)) - 1
    assert _one(out, "MANAGER") == f"{n} {n}"
    names = json.loads(_one(out, "MANAGER-NAMES"))
    assert names == [f"cell-{v:04d}" for v in np.unique(labels)[1:]]
    # a re-import replaces the earlier cells and keeps the user's other ROIs
    assert _one(out, "MANAGER-RESET") == f"{n + 1} fg-keep"
    assert _one(out, "MANAGER-MENU") == f"{n + 1}"  # the menu command, replacing too
    path, entries = _one(out, "MANAGER-EXPORT").split(" ", 1)
    assert path == str(tmp_path / "DATA" / "rois" / "from_manager.zip")
    assert len(json.loads(entries)) == len(ROIS) - 1  # the unclassified one was left out by the caller
    assert (tmp_path / "DATA" / "images" / "from_manager.tif").is_file()
    # the class dialog: 'stroke-y' -> background (group 2), the unnamed ROI left out
    kept = json.loads(_one(out, "DIALOG"))
    assert len(kept) == len(ROIS) - 1
    assert kept[5] == ["stroke-y", 2]
    assert [k[0] for k in kept] == [d.get("name") for i, d in enumerate(ROIS) if i != 6]
    assert [k[1] for k in kept] == [1, 0, 0, 2, 0, 2, 1]  # only the unclassified one got a group


# ----------------------------------------------------------------------------- Train / Predict

TRAIN_PREDICT_DRIVER = '''
import os, sys
from java.io import File
from ij import IJ
sys.path.insert(0, sys.argv[1])
import s2l_fiji
menu, env, data, other, unusual = sys.argv[2:7]
try:
    s2l_fiji.environment(ask=False)
except s2l_fiji.S2LFijiError as e:
    print("NOENV %s" % e)
s2l_fiji.set_environment(env, save=False)
imp = IJ.openImage(os.path.join(data, "images", "nuclei_000.tif"))
tiny = ("--epochs 2 --encoder resnet18 --crop 32 --batch-size 2 --samples-per-epoch 2 "
        "--warmup-epochs 1 --ensemble-every 1 --tile 64 --panel-images 1 --device cpu")
execfile(os.path.join(menu, "Train.py"),
         {"imp": imp, "run_name": "fiji", "options": tiny, "again": False})
execfile(os.path.join(menu, "Predict.py"),
         {"imp": imp, "run": File(os.path.join(data, "runs", "fiji")), "target": "Overlay",
          "options": "--device cpu --threshold 0.05", "again": False})
ov = imp.getOverlay()
names = [r.getName() for r in ov.toArray()] if ov is not None else []
print("CELLS %d" % len([n for n in names if n.startswith("cell-")]))
# a model that saw at most 1 % of a training image called cell, at a threshold that calls
# most of this image cell: s2l-predict's warning reaches the message, not only the Log
execfile(os.path.join(menu, "Predict.py"),
         {"imp": imp, "run": File(unusual), "target": "Overlay",
          "options": "--device cpu --threshold 0.001 --min-size 0", "again": False})
# an image outside a dataset: Train says what to do, nothing runs
execfile(os.path.join(menu, "Train.py"),
         {"imp": IJ.openImage(other), "run_name": "x", "options": "", "again": False})
print("S2L-DONE")
'''


def test_train_and_predict_menu_commands_run_our_tools(tmp_path):
    """Plugins > Scribble2Label > Train / Predict in real ImageJ: s2l-scribbles + s2l-train on
    the current image's dataset with the epochs in the Log, then s2l-predict and the cells
    as ROIs on the image (issue 17, item 8)."""
    import sys

    from s2l_tools.data.demo_data import make_demo_dataset
    from s2l_tools.training.checkpoint import ModelMeta, save_model
    from s2l_tools.training.model import build_model

    make_demo_dataset(tmp_path / "d", n_train=2, n_val=0, shape=(64, 64), seed=3)
    data = tmp_path / "d" / "train"
    other = tmp_path / "loose.tif"
    tifffile.imwrite(other, np.zeros((32, 32), np.uint8))
    script = tmp_path / "driver.py"
    script.write_text(TRAIN_PREDICT_DRIVER)
    env = Path(sys.executable).parent  # this venv's bin/, where s2l-train is
    unusual = tmp_path / "unusual_run"
    save_model(unusual / "model.pt", build_model(encoder="resnet18", in_channels=1,
                                                 seed=0).state_dict(),
               ModelMeta(encoder="resnet18", in_channels=1, tile=64, overlap=16,
                         train_share_max=0.01))
    proc = run_jython(script, LIB, MENU, env, data, other, unusual, timeout=600)
    out = proc.stdout
    assert "NOENV the s2l-tools environment is not set" in out
    assert "$ s2l-scribbles" in out and "$ s2l-train" in out and "$ s2l-predict" in out
    epochs = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert len(epochs) == 2 and all("L_sp" in ln for ln in epochs), out  # progress in the Log
    run = data / "runs" / "fiji"
    assert (run / "model.pt").is_file() and "Train: Trained: " in out
    labels = tifffile.imread(run / "predictions" / "nuclei_000.tif")
    cells = int(_parse(out)["CELLS"][0])
    assert cells == len(np.unique(labels[labels > 0])) >= 1, out  # a low threshold: some
    assert f"Predict: {cells} cells found in nuclei_000.tif" in out
    # the unusual image: the message says so, wrapped, after the count
    found = out.split("Predict: ")[2]
    assert "cells found in nuclei_000.tif\n\nWarning: 1 image called far more cell" in found, out
    said = found.split("Warning: ", 1)[1].split("\nTrain: ")[0]
    assert "scribble such an image and retrain" in said.replace("\n", " "), out
    assert max(len(line) for line in said.splitlines()) <= 90, said  # wrapped for the box
    assert "loose.tif is not in a dataset's images/ folder" in out

"""s2l-train --from RUN: a retraining round on new strokes, from an earlier run."""

import json
import shutil

import numpy as np
import pytest
import tifffile

from s2l_tools import labels as L
from s2l_tools.cli import train
from s2l_tools.training.config import RETRAIN_LR_SCALE, RETRAIN_SCHEDULE
from s2l_tools.cli.scribbles import main as scribbles_main
from s2l_tools.data.demo_data import make_demo_dataset
from s2l_tools.training.checkpoint import load_checkpoint
from s2l_tools.training.ema import forget_disagreement

TINY = ["--encoder", "resnet18", "--crop", "32", "--batch-size", "2", "--samples-per-epoch",
        "4", "--warmup-epochs", "1", "--ensemble-every", "1", "--tile", "64",
        "--panel-images", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A dataset of three images with scribbles, and a run trained on it."""
    root = tmp_path_factory.mktemp("retrain")
    make_demo_dataset(root, n_train=4, n_val=0, shape=(64, 64), seed=5)
    data = root / "train"
    assert scribbles_main([str(data)]) == 0
    spare = root / "spare"  # the fourth image joins in the second round
    (spare / "scribbles").mkdir(parents=True)
    shutil.move(data / "scribbles" / "nuclei_003.tif", spare / "scribbles" / "nuclei_003.tif")
    (data / "rois" / "nuclei_003.zip").unlink()
    run = root / "run1"
    assert train.main([str(data), "--out", str(run), "--epochs", "2", *TINY]) == 0
    return data, spare, run


def test_forget_disagreement():
    y = np.zeros((40, 40), np.float32)
    y[5:15, 5:15] = 0.9  # a detection: a background stroke crosses it
    y[25:35, 25:35] = 0.95  # a detection nobody contradicts
    scr = np.zeros((40, 40), np.uint8)
    scr[10, 2:18] = L.BACKGROUND
    scr[30, 5:8] = L.FOREGROUND  # a missed cell: foreground stroke on background
    out, n = forget_disagreement(y, scr, radius=2)
    assert (out[5:15, 5:15] == 0.5).all()  # the whole crossed region forgotten
    assert (out[25:35, 25:35] == 0.95).all()  # the other kept
    assert out[30, 6] == 0.5 and out[28, 6] == 0.5 and out[30, 12] == 0.0
    assert n == int((out != y).sum())
    same, n0 = forget_disagreement(y, np.where(scr == L.FOREGROUND, 0, 0).astype(np.uint8))
    assert n0 == 0 and np.array_equal(same, y)


def test_from_run_with_new_strokes_and_a_new_image(first, tmp_path, capsys):
    data, spare, run = first
    new = tmp_path / "data2"
    shutil.copytree(data, new)
    shutil.copy(spare / "scribbles" / "nuclei_003.tif", new / "scribbles")
    shutil.rmtree(new / "rois")
    scr = tifffile.imread(new / "scribbles" / "nuclei_001.tif")
    scr[2, 2:40] = L.BACKGROUND  # a new stroke on the second image
    tifffile.imwrite(new / "scribbles" / "nuclei_001.tif", scr)
    # --resume on the changed data is refused and points to --from
    assert train.main([str(new), "--out", str(run), "--resume", "--epochs", "3"]) == 1
    assert f"--from {run}" in capsys.readouterr().err
    out = tmp_path / "run2"
    assert train.main([str(new), "--out", str(out), "--from", str(run), "--epochs", "3"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "EMA maps of 3 image(s) kept, 1 with changed scribbles" in err, err
    assert "1 image(s) predicted afresh" in err, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["from_run"] == str(run) and cfg["crop"] == 32 and cfg["epochs"] == 3
    assert cfg["warmup_epochs"] == 1 and cfg["fast_start"] == "none"
    assert cfg["ensemble_every"] == RETRAIN_SCHEDULE["ensemble_every"] == 2
    run_cfg = json.loads((run / "config.json").read_text())
    assert cfg["lr"] == pytest.approx(run_cfg["lr"] * RETRAIN_LR_SCALE)
    a, b = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    # Adam's moments carried on: the step count goes on from RUN's
    steps = lambda ck: max(float(v["step"]) for v in ck["optimizer"]["state"].values())
    assert steps(b) > steps(a)
    # the multi-tensor update on any device, the retraining round's too
    assert all(g["foreach"] for ck in (a, b) for g in ck["optimizer"]["param_groups"])
    # a round from a round keeps its rate (no compounding)
    out3 = tmp_path / "run3"
    assert train.main([str(new), "--out", str(out3), "--from", str(out), "--epochs", "1"]) == 0
    assert json.loads((out3 / "config.json").read_text())["lr"] == pytest.approx(cfg["lr"])
    assert b["epoch"] == 3 and len(b["history"]) == 3  # a new schedule, counted from 0
    assert b["ema"]["n_updates"].tolist() == [2, 2, 2, 2]  # kept/predicted + the pass after epoch 2
    stems = [e["stem"] for e in json.loads((out / "inputs.json").read_text())["images"]]
    assert stems == ["nuclei_000", "nuclei_001", "nuclei_002", "nuclei_003"]
    assert len(a["ema"]["n_updates"]) == 3
    # RUN2 resumes as any run
    assert train.main(["--out", str(out), "--resume", "--epochs", "4"]) == 0


@pytest.mark.parametrize("case", ["encoder", "channels", "same_out", "not_a_run", "resume"])
def test_from_refusals_write_nothing(first, tmp_path, capsys, case):
    data, _, run = first
    out = tmp_path / "run2"
    argv = [str(data), "--out", str(out), "--from", str(run)]
    expect = {"encoder": "a resnet18 model", "channels": "takes 1",
              "same_out": "holds a run already", "not_a_run": "no config.json",
              "resume": "give one of them"}[case]
    if case == "encoder":
        argv += ["--encoder", "resnet34"]
    elif case == "channels":
        rgb = tmp_path / "rgb"
        (rgb / "images").mkdir(parents=True)
        (rgb / "scribbles").mkdir()
        im = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        tifffile.imwrite(rgb / "images" / "a.tif", im, photometric="rgb")
        tifffile.imwrite(rgb / "scribbles" / "a.tif",
                         tifffile.imread(data / "scribbles" / "nuclei_000.tif"))
        argv[0] = str(rgb)
    elif case == "same_out":
        argv[2] = str(run)
    elif case == "not_a_run":
        argv[4] = str(tmp_path)
    elif case == "resume":
        argv += ["--resume"]
    before = sorted(p.name for p in run.iterdir())
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert expect in " ".join(err.split()) and err.split("error: ")[-1].count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists() or case == "same_out"
    assert sorted(p.name for p in run.iterdir()) == before

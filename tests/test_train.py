"""s2l-train: the engine end to end on tiny data; resume; reports; bad inputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from s2l_tools.cli import train
from s2l_tools.training.checkpoint import load_checkpoint, load_model
from s2l_tools.data.demo_data import make_demo_dataset
from s2l_tools.cli.scribbles import main as scribbles_main
from _demo import scribbled_demo

TINY = ["--encoder", "resnet18", "--crop", "32", "--batch-size", "2", "--samples-per-epoch",
        "4", "--warmup-epochs", "1", "--ensemble-every", "1", "--checkpoint-every", "2",
        "--tile", "64", "--panel-images", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return scribbled_demo(tmp_path_factory, n_val=2)


def test_run_writes_reports(data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [str(data / "train"), "--out", str(out), "--epochs", "2", "--val",
            str(data / "val"), *TINY]
    assert train.main(argv) == 0
    text = capsys.readouterr()
    assert "epoch    2/2" in text.err and "val IoU" in text.err and "pseudo" in text.err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["epochs"] == 2 and cfg["method"] == "s2l" and cfg["ema_alpha"] == 0.2
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 3 and "val_iou" in rows[0]
    # lr: what the epoch started with (the cosine cycle ends with the run, so the
    # scheduler's value after the last step is the restart's, never shown)
    lrs = [float(dict(zip(rows[0].split(","), r.split(",")))["lr"]) for r in rows[1:]]
    assert lrs[0] == pytest.approx(cfg["lr"]) and lrs[1] < lrs[0]
    # held-out strokes (default 10 %): every ensemble pass and after the last epoch
    assert "holdout_fg" in rows[0] and "held-out fg " in text.err
    assert "held-out strokes (" in text.out and "never trained on" in text.out
    for name in ("curves.png", "model.pt", "checkpoint.pt", "panels/epoch_0001.png"):
        assert (out / name).stat().st_size > 0, name
    ck = load_checkpoint(out / "checkpoint.pt")
    # the pass due after the last epoch is skipped (and made up if the run is resumed)
    assert ck["epoch"] == 2 and all(n == 1 for n in ck["ema"]["n_updates"])
    assert ck["ensemble_pending"]
    # config round trip: --config reads the settings back, flags win
    out2 = tmp_path / "run2"
    threads_before = torch.get_num_threads()
    assert train.main([str(data / "train"), "--out", str(out2), "--config",
                       str(out / "config.json"), "--epochs", "1", "--method", "pce",
                       "--threads", "1", "--mask-threshold", "0.7"]) == 0
    cfg2 = json.loads((out2 / "config.json").read_text())
    assert cfg2["epochs"] == 1 and cfg2["method"] == "pce" and cfg2["crop"] == 32
    # the probability threshold travels in the model, for s2l-predict and CellProfiler
    assert load_model(out2 / "model.pt")[1].threshold == 0.7
    assert load_model(out / "model.pt")[1].threshold == 0.5 == cfg["mask_threshold"]
    # --threads is the run's; torch gets its own count back afterwards
    assert cfg2["threads"] == 1 and cfg["threads"] is None
    assert torch.get_num_threads() == threads_before
    # an existing run is not silently overwritten
    assert train.main([str(data / "train"), "--out", str(out), *TINY]) == 1
    assert "--resume" in capsys.readouterr().err


def test_resume_equals_straight_run(data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    # a fixed thread count (float rounding depends on it; by default it follows the load)
    common = [str(data / "train"), *TINY, "--seed", "7", "--checkpoint-every", "1",
              "--threads", "1"]
    assert train.main([*common, "--out", str(straight), "--epochs", "4"]) == 0
    assert train.main([*common, "--out", str(split), "--epochs", "2"]) == 0
    assert train.main(["--out", str(split), "--resume", "--epochs", "4"]) == 0
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(split / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in ("maps",):
        for x, y in zip(a["ema"][k], b["ema"][k]):
            assert torch.equal(x, y)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    la = [(r["epoch"], r["loss"]) for r in a["history"]]
    lb = [(r["epoch"], r["loss"]) for r in b["history"]]
    assert la == lb


def test_methods_and_full_needs_masks(data, tmp_path, capsys):
    for method in ("pce", "pseudo", "full"):
        out = tmp_path / method
        assert train.main([str(data / "train"), "--out", str(out), "--epochs", "2",
                           "--method", method, *TINY]) == 0, method
        assert (out / "model.pt").exists()
    bare = tmp_path / "bare"
    (bare / "images").mkdir(parents=True)
    (bare / "scribbles").mkdir()
    tifffile.imwrite(bare / "images" / "a.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(bare / "scribbles" / "a.tif", np.ones((64, 64), np.uint8))
    assert train.main([str(bare), "--out", str(tmp_path / "x"), "--method", "full", *TINY]) == 1
    assert "needs DATA/masks" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["channels", "no_fg", "no_scribbles", "size", "resume_nothing",
                                  "bad_crop", "one_crop_step"])
def test_bad_inputs(case, tmp_path, capsys):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "scribbles").mkdir()
    scr = np.zeros((64, 64), np.uint8)
    scr[10, 10:20], scr[40, 10:20] = 1, 2
    tifffile.imwrite(root / "images" / "a.tif", np.random.default_rng(0).random((64, 64)))
    tifffile.imwrite(root / "scribbles" / "a.tif", scr)
    argv = [str(root), "--out", str(tmp_path / "run"), *TINY]
    expect = {"channels": "channel(s) but 'a' has 1", "no_fg": "no foreground scribble",
              "no_scribbles": "no scribble masks", "size": "differs from its image",
              "resume_nothing": "nothing to resume", "bad_crop": "--crop 50",
              "one_crop_step": "--crop 32 with a step of 1 crop"}[case]
    if case == "channels":
        rgb = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        tifffile.imwrite(root / "images" / "b.tif", rgb, photometric="rgb")
        tifffile.imwrite(root / "scribbles" / "b.tif", scr)
    elif case == "no_fg":
        tifffile.imwrite(root / "scribbles" / "a.tif", np.where(scr == 2, 0, scr))
    elif case == "no_scribbles":
        os.remove(root / "scribbles" / "a.tif")
    elif case == "size":
        tifffile.imwrite(root / "scribbles" / "a.tif", scr[:32])
    elif case == "resume_nothing":
        argv = ["--out", str(tmp_path / "run"), "--resume"]
    elif case == "bad_crop":
        argv += ["--crop", "50"]
    elif case == "one_crop_step":  # batches of 2, 2 and then 1: batch norm cannot train
        argv += ["--samples-per-epoch", "5"]
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    if case == "one_crop_step":  # found once the data is loaded: its progress lines come first
        err = err.splitlines()[-1] + "\n"
    assert expect in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_ctrl_c_writes_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "s2l_tools.cli.train", str(data / "train"), "--out", str(out),
           "--epochs", "1000", *TINY]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen += line
            if "epoch    1/1000" in line:
                break
        assert "epoch    1/1000" in seen, seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    ck = load_checkpoint(out / "checkpoint.pt")
    assert 1 <= ck["epoch"] < 1000
    assert train.main(["--out", str(out), "--resume", "--epochs", str(ck["epoch"] + 1)]) == 0


def test_store_owners_and_sharded_epoch_plan(data):
    from s2l_tools.training.config import TrainConfig
    from s2l_tools.training.data import epoch_plan, load_training_data, store_owners
    from s2l_tools.errors import S2LError

    shapes = [(10, 10), (10, 10), (10, 10), (20, 20)]
    sharded = TrainConfig(store="sharded")
    # largest first, to the rank with the fewest pixels: 400 | 100 + 100 + 100
    assert store_owners(sharded, shapes, 2) == [1, 1, 1, 0]
    assert store_owners(sharded, shapes, 1) is None  # one process holds everything
    assert store_owners(TrainConfig(store="replicated"), shapes, 2) is None
    assert store_owners(TrainConfig(), shapes, 2) is None  # auto: 1.4 kB is no reason to shard
    assert store_owners(TrainConfig(), [(40_000, 40_000)] * 2, 2) == [0, 1]  # 6 GiB replicas
    with pytest.raises(S2LError, match="--store replicated"):
        store_owners(sharded, shapes, 5)
    # each rank's crops (positions r, r + W, ...) come from the images it holds
    d = load_training_data(data / "train")
    cfg = TrainConfig(samples_per_epoch=7, crop=32, seed=1)
    owners = [0, 1, 1]
    plan = epoch_plan(cfg, d, 3, owners, 2)
    assert len(plan) == 8 and set(plan[0::2]) == {0} and set(plan[1::2]) <= {1, 2}
    np.testing.assert_array_equal(plan, epoch_plan(cfg, d, 3, owners, 2))
    assert len(epoch_plan(cfg, d, 3)) == 7


def _copy_data(data, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(data / "train", root)
    return root


@pytest.mark.parametrize("weight", ["1e38"])  # "nan" itself is refused up front (test_config)
def test_non_finite_loss_stops_and_keeps_last_checkpoint(data, tmp_path, capsys, weight):
    """A loss that stops being a number (a pseudo-label weight so large that the weights
    diverge) stops the run with one line; the checkpoint of the last good epoch stays as
    it was, not replaced by NaN weights."""
    out = tmp_path / "run"
    argv = [str(data / "train"), "--out", str(out), "--epochs", "4", *TINY,
            "--checkpoint-every", "1", "--pseudo-weight", weight]
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    line = err.split("error: ", 1)[-1]
    assert line.count("\n") == 1 and "Traceback" not in err, err
    assert "not finite" in line or "loss is nan" in line, err
    assert "last good checkpoint (epoch 1)" in err, err
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["epoch"] == 1  # epoch 1 is the warm-up: no pseudo-labels, a finite loss
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    model = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in model.values() if v.is_floating_point())
    assert len((out / "metrics.csv").read_text().splitlines()) == 2  # epoch 1 only


def test_resume_refuses_other_settings_and_changed_scribbles(data, tmp_path, capsys):
    root = _copy_data(data, tmp_path)
    out = tmp_path / "run"
    assert train.main([str(root), "--out", str(out), "--epochs", "1", *TINY]) == 0
    capsys.readouterr()
    inputs = json.loads((out / "inputs.json").read_text())
    assert [e["stem"] for e in inputs["images"]] == ["nuclei_000", "nuclei_001", "nuclei_002"]
    assert all(len(e["image"]) == 64 and len(e["scribbles"]) == 64 for e in inputs["images"])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    # changed settings: refused, naming the setting, config.json not rewritten
    assert train.main(["--out", str(out), "--resume", "--epochs", "2", "--lr", "0.1"]) == 1
    err = capsys.readouterr().err
    assert "--lr 0.0003 -> 0.1" in err and "--from" in err and "Traceback" not in err, err
    # the same scribbles saved again (other file bytes, same strokes): accepted later on;
    # changed strokes: refused, pointing to --from
    scr = tifffile.imread(root / "scribbles" / "nuclei_001.tif")
    scr[5:8, 5:30] = 1
    tifffile.imwrite(root / "scribbles" / "nuclei_001.tif", scr)
    assert train.main([str(root), "--out", str(out), "--resume", "--epochs", "2"]) == 1
    err = capsys.readouterr().err
    assert "scribbles changed: nuclei_001" in err and f"--from {out}" in err, err
    # another dataset of the same sizes: refused too
    other = tmp_path / "other"
    make_demo_dataset(other, n_train=3, n_val=0, shape=(64, 64), seed=9)
    assert scribbles_main([str(other / "train")]) == 0
    capsys.readouterr()
    assert train.main([str(other / "train"), "--out", str(out), "--resume", "--epochs",
                       "2"]) == 1
    assert "images changed: nuclei_000, nuclei_001, nuclei_002" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # the strokes put back (saved again, so the file differs): the resume goes on
    tifffile.imwrite(root / "scribbles" / "nuclei_001.tif",
                     tifffile.imread(data / "train" / "scribbles" / "nuclei_001.tif"),
                     description="saved again")
    assert train.main([str(root), "--out", str(out), "--resume", "--epochs", "2"]) == 0

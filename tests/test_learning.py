"""Scribble2Label learns: on generated nuclei it beats its own warm-up-only model.

A small but real training run (resnet18 U-Net, 64 px crops, 30 epochs of 32
crops; about a minute on 2 CPU cores). The warm-up-only model is the model at
the end of the warm-up (epoch 10), scored in the same run.
"""

import csv

import pytest

from s2l_tools.cli import train
from s2l_tools.data.demo_data import make_demo_dataset
from s2l_tools.cli.scribbles import main as scribbles_main

WARMUP = 10


@pytest.mark.slow
def test_s2l_beats_its_warmup_model(tmp_path):
    make_demo_dataset(tmp_path / "d", n_train=4, n_val=2, shape=(128, 128), seed=5)
    assert scribbles_main([str(tmp_path / "d" / "train")]) == 0
    out = tmp_path / "run"
    argv = [str(tmp_path / "d" / "train"), "--out", str(out), "--val", str(tmp_path / "d" / "val"),
            "--encoder", "resnet18", "--crop", "64", "--batch-size", "8",
            "--samples-per-epoch", "32", "--epochs", "30", "--warmup-epochs", str(WARMUP),
            "--ensemble-every", "2", "--val-every", "2", "--restart-epochs", "30",
            "--lr", "1e-3", "--tile", "128", "--panel-images", "0", "--device", "cpu",
            "--seed", "0", "--threads", "2"]
    # --threads 2 pinned: the count is what the float rounding follows, and without it fit()
    # drops a thread while other programs keep a CPU busy. This tiny run is chaotic in it:
    # seed 0 ends at 0.75 IoU on 2 threads and 0.45 on 1 (2026-12-04, 2-core Xeon); the
    # suite beside benchmarks once ended at 0.68 with the count changing between epochs
    assert train.main(argv) == 0
    rows = {int(r["epoch"]): r for r in csv.DictReader((out / "metrics.csv").open())}
    warm, final = float(rows[WARMUP]["val_iou"]), float(rows[30]["val_iou"])
    assert float(rows[WARMUP]["coverage"]) == 0.0  # no pseudo-labels during warm-up
    assert float(rows[30]["coverage"]) > 0.5       # most unscribbled pixels pseudo-labelled
    assert final >= 0.70, f"S2L val IoU {final:.3f} (warm-up {warm:.3f})"
    assert final >= warm + 0.05, f"S2L val IoU {final:.3f} vs warm-up-only {warm:.3f}"

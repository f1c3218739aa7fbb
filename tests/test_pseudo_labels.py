"""benchmarks/pseudo_labels.py: pseudo-labels scored against the truth, on a made-up run."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from s2l_tools.training.ema import EmaStore

_SPEC = importlib.util.spec_from_file_location(
    "pseudo_labels", Path(__file__).resolve().parents[1] / "benchmarks" / "pseudo_labels.py")
pl = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pl)


def _run(tmp_path, ema, n_updates=1):
    """A 2x8 image; row 0: truth 0 0 0 1 1 1 1 0, pixel 0 scribbled background, pixel 4
    foreground; row 1: background, all scribbled."""
    data = tmp_path / "data"
    for sub in ("images", "scribbles", "masks"):
        (data / sub).mkdir(parents=True)
    tifffile.imwrite(data / "images" / "a.tif", np.arange(16, dtype=np.uint8).reshape(2, 8))
    tifffile.imwrite(data / "scribbles" / "a.tif", np.array([[1, 0, 0, 0, 2, 0, 0, 0], [1] * 8], np.uint8))
    tifffile.imwrite(data / "masks" / "a.tif", np.array([[0, 0, 0, 1, 1, 1, 1, 0], [0] * 8], np.uint16))
    run = tmp_path / "fluo" / "n1_v1" / "e1" / "s2l_r1.0_s0"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text(
        json.dumps({"data": str(data), "threshold": 0.8, "method": "s2l"}))
    store = EmaStore([(2, 8)], dtype="float32")
    if n_updates:
        store.update(0, np.array([ema, [0.9] * 8], np.float32))  # row 1 is scribbled: ignored
    torch.save({"ema": store.state_dict()}, run / "model" / "checkpoint.pt")
    return run


def test_counts_only_unscribbled_pixels_against_the_truth(tmp_path):
    # unscribbled: 1 2 3 5 6 7; pseudo-fg (> 0.8): 2 3 5 (2 is background: a halo); 6 undecided;
    # pseudo-bg (< 0.2): 1 7
    run = _run(tmp_path, [0.0, 0.1, 0.9, 0.95, 0.9, 0.9, 0.5, 0.0])
    r = pl.check(run)
    assert r["fg_precision"] == pytest.approx(2 / 3)
    assert r["fg_area"] == pytest.approx(3 / 3)  # true fg unscribbled: 3 5 6
    assert r["bg_precision"] == 1.0
    assert r["fg_covered"] == pytest.approx(2 / 3) and r["bg_covered"] == pytest.approx(2 / 3)
    assert "| s2l | 0.667 | 1.00x | 1.000 | 0.667 | 0.667 |" in pl.markdown({"s2l": r})


def test_a_run_without_ensemble_passes_is_refused(tmp_path):
    run = _run(tmp_path, None, n_updates=0)
    with pytest.raises(SystemExit, match="no EMA store was filled"):
        pl.check(run)


def test_the_margin_leaves_out_the_pixels_beside_the_maps_outline():
    # one row, nothing scribbled: cells at 2-4 in the map and in the truth
    ema = [[0.0, 0.0, 0.9, 0.9, 0.9, 0.0, 0.0, 0.0]]
    args = ([np.array(ema, np.float32)], [np.zeros((1, 8), np.uint8)],
            [np.array([[0, 0, 1, 1, 1, 0, 0, 0]])], 0.8)
    plain, margin = pl.label_counts(*args), pl.label_counts(*args, margin=1)
    assert plain["fg_covered"] == 1.0 and plain["bg_covered"] == 1.0
    # margin 1: pixels 1-5 each see both values in their 3-wide window; 3 alone stays cell
    assert margin["fg_covered"] == pytest.approx(1 / 3)
    assert margin["bg_covered"] == pytest.approx(3 / 5) and margin["fg_precision"] == 1.0

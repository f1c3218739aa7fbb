"""What a run draws for a biologist: panels with a legend in the Fiji docs' colours, the
last epoch's panel, long names that stay out of the headings, curves in words, and the
epoch line that stays one line in a log file (issue 17, items 4 and 6)."""

import re
from pathlib import Path

import numpy as np
import pytest

from s2l_tools.training import reports
from s2l_tools.training.data import TrainingData
from s2l_tools.training.ema import EmaStore
from _demo import scribbled_demo

ROOT = Path(__file__).parents[1]


def _data(stems, shape=(32, 40)):
    rng = np.random.default_rng(0)
    images = [rng.random((1, *shape), dtype=np.float32) for _ in stems]
    scr = np.zeros(shape, np.uint8)
    scr[5, 5:20] = 2   # a cell stroke
    scr[25, 5:20] = 1  # a background stroke
    return TrainingData(list(stems), images, [scr.copy() for _ in stems], [None] * len(stems))


def _store(n, shape=(32, 40)):
    store = EmaStore([shape] * n, alpha=1.0, dtype="float32")
    y = np.full(shape, 0.5, np.float32)
    y[:10] = 0.95   # sure cell
    y[20:] = 0.02   # sure background
    for i in range(n):
        store.update(i, y)
    return store


def _rgb(ax):
    return np.asarray(ax.get_images()[0].get_array())


def test_panel_colours_match_the_fiji_docs_and_have_a_legend():
    fiji = (ROOT / "fiji_bridge" / "README.md").read_text()
    assert "#ffff00=fg" in fiji and "#00ffff=bg" in fiji  # the docs' colour map
    assert reports.CELL_COLOR == (1.0, 1.0, 0.0) and reports.BACKGROUND_COLOR == (0.0, 1.0, 1.0)
    fig = reports._panel_figure(_data(["a"]), _store(1), threshold=0.8, n=1, epoch=4)
    axes = fig.axes
    scr, pl = _rgb(axes[1]), _rgb(axes[2])
    assert np.allclose(scr[5, 10], reports.CELL_COLOR)
    assert np.allclose(scr[25, 10], reports.BACKGROUND_COLOR)
    assert np.allclose(pl[2, 2], reports.CELL_COLOR)
    assert np.allclose(pl[30, 2], reports.BACKGROUND_COLOR)
    assert np.allclose(pl[15, 2], reports.IGNORED_COLOR)  # 0.5: less sure than tau
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "cell" in legend and "background" in legend and "ignored" in legend and "0.8" in legend


def test_long_names_stay_out_of_the_headings():
    long = "2024-03-11_HeLa_H2B-GFP_plate7_wellC04_field0012_z03_t017_ch1_deconvolved_max"
    fig = reports._panel_figure(_data([long, "b"]), _store(2), threshold=0.8, n=2, epoch=1)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for row in range(2):
        boxes = [fig.axes[3 * row + c].title.get_window_extent(renderer) for c in range(3)]
        for left, right in zip(boxes, boxes[1:]):
            assert left.x1 < right.x0, "headings overlap"
    title = fig.axes[0].get_title()
    assert title.startswith("2024-03-11") and title.endswith("max") and "..." in title


def test_panel_without_pseudo_labels_says_so():
    fig = reports._panel_figure(_data(["a"]), EmaStore([(32, 40)]), threshold=0.8, n=1, epoch=1)
    assert any("no pseudo-label map" in t.get_text() for t in fig.axes[2].texts)


def test_curves_are_labelled_in_words_with_the_warmup_marked():
    history = [{"epoch": e, "loss": 1.0 / e, "l_sp": 0.5 / e, "l_up": 0.1 * (e > 2),
                "coverage": 0.1 * e} for e in range(1, 6)]
    fig = reports._curves_figure(history, warmup_epochs=2)
    words = " ".join(t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts())
    for label in ("loss on strokes", "loss on pseudo-labels", "share of pixels pseudo-labelled",
                  "end of warm-up"):
        assert label in words
    assert "l_sp" not in words and "coverage" not in words


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return scribbled_demo(tmp_path_factory, n_train=2, n_val=1)


def test_last_panel_written_and_epoch_line_is_one_line(data_dir, tmp_path, capsys):
    from s2l_tools.cli import train

    out = tmp_path / "run"
    argv = [str(data_dir / "train"), "--out", str(out), "--epochs", "2", "--val",
            str(data_dir / "val"), "--encoder", "resnet18", "--crop", "32", "--batch-size", "2",
            "--samples-per-epoch", "2", "--warmup-epochs", "1", "--ensemble-every", "1",
            "--tile", "64", "--panel-images", "1", "--device", "cpu"]
    assert train.main(argv) == 0
    err = capsys.readouterr().err  # not a terminal: rich would wrap at 80 columns
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2, err
    for line in lines:
        assert "L_sp" in line and "val IoU" in line and re.search(r"\d+\.\ds$", line), line
    # every other message of the run (held-out strokes, thread changes) is one line too
    held = [line for line in err.splitlines() if line.startswith("held-out strokes")]
    assert held and all(line.rstrip().endswith(("right", ")")) for line in held), err
    # the ensemble pass after the last epoch is skipped; its panel is still written
    assert (out / "panels" / "epoch_0001.png").stat().st_size > 0
    assert (out / "panels" / "epoch_0002.png").stat().st_size > 0

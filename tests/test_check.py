"""s2l-check runs the checks of s2l-scribbles and s2l-train: it passes a dataset they take
and names what they would stop at (issue 17, item 2)."""

import numpy as np
import pytest
import roifile
import tifffile

from s2l_tools.cli import check, scribbles
from s2l_tools.data.dataset import check_dataset
from s2l_tools.data.demo_data import make_demo_dataset
from s2l_tools.errors import S2LError
from s2l_tools.training.data import load_training_data


def _line(points, *, group=0, name=""):
    roi = roifile.ImagejRoi.frompoints(np.asarray(points, float))
    roi.roitype = roifile.ROI_TYPE.POLYLINE
    roi.options &= ~roifile.ROI_OPTIONS.SUB_PIXEL_RESOLUTION
    roi.group, roi.name = group, name
    return roi


def _folder(tmp_path, rois):
    (tmp_path / "images").mkdir()
    (tmp_path / "rois").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((40, 40), np.uint16))
    roifile.roiwrite(tmp_path / "rois" / "a.zip", rois)
    return tmp_path


@pytest.fixture
def data(tmp_path):
    make_demo_dataset(tmp_path / "d", n_train=2, n_val=0, shape=(96, 128), seed=1)
    return tmp_path / "d" / "train"


def test_unconverted_rois_are_a_problem_with_counts(data, capsys):
    # s2l-train stops at "ROIs not converted yet": s2l-check said "no problems found"
    with pytest.raises(S2LError, match="not converted"):
        load_training_data(data)
    assert check.main([str(data)]) == 1
    out = capsys.readouterr().out
    assert "nuclei_000.zip: ROIs not converted to a scribble mask yet" in out
    assert f"run s2l-scribbles {data}" in out and "no problems found" not in out
    report = check_dataset(data)
    assert [r["strokes"] for r in report.rows] == ["ROIs", "ROIs"]
    assert all(r["bg_px"] > 0 and r["fg_px"] > 0 for r in report.rows)  # counted from the ROIs
    # converted: both tools take it, and so does s2l-check
    assert scribbles.main([str(data)]) == 0
    load_training_data(data)
    capsys.readouterr()
    assert check.main([str(data)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_no_background_stroke_in_rois_is_a_problem(tmp_path, capsys):
    root = _folder(tmp_path, [_line([[5, 5], [20, 20]], group=1)])
    assert scribbles.main([str(root)]) == 1
    assert "no background scribble" in capsys.readouterr().err
    assert check.main([str(root)]) == 1
    assert "no background scribble in any image" in capsys.readouterr().out


def test_roi_refused_by_s2l_scribbles_is_a_problem(tmp_path, capsys):
    root = _folder(tmp_path, [_line([[5, 5], [20, 20]], group=1),
                              _line([[30, 5], [30, 30]], name="mystery")])
    assert check.main([str(root)]) == 1
    out = capsys.readouterr().out
    assert "mystery" in out and "has no class" in out


def test_partly_outside_is_a_note_not_a_problem(tmp_path, capsys):
    root = _folder(tmp_path, [_line([[5, 5], [20, 20]], group=1),
                              _line([[30, 5], [30, 80]], group=2)])
    report = check_dataset(root)
    assert any("partly outside" in n for n in report.notes)
    assert not any("partly outside" in p for p in report.problems)


def test_unconverted_overlay_is_a_problem(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    rois = [_line([[5, 5], [20, 20]], group=1), _line([[30, 5], [30, 30]], group=2)]
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((40, 40), np.uint16), imagej=True,
                     metadata={"Overlays": [r.tobytes() for r in rois]})
    report = check_dataset(tmp_path)
    assert report.rows[0]["strokes"] == "overlay"
    assert any("overlay's 2 ROI(s) not converted" in p for p in report.problems)
    assert scribbles.main([str(tmp_path)]) == 0
    assert check_dataset(tmp_path).problems == []


def test_no_scribbles_at_all(tmp_path):
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((40, 40), np.uint16))
    with pytest.raises(S2LError, match="no scribble masks"):
        load_training_data(tmp_path)
    assert any("no scribbles and no ROIs" in p for p in check_dataset(tmp_path).problems)
    # full masks for every image: a validation set, fine (a note, not a problem)
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "masks" / "a.tif", np.ones((40, 40), np.uint16))
    report = check_dataset(tmp_path)
    assert report.problems == [] and any("--val" in n for n in report.notes)


def test_columns_have_a_legend(data, capsys):
    check.main([str(data)])
    out = capsys.readouterr().out
    assert "(rois)" not in out
    for col in ("strokes:", "bg_px / fg_px:", "objects:"):
        assert col in out
    assert "'-' = no mask" in out

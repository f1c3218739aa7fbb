"""Tests of s2l-eval (s2l_tools.cli.evaluate) and s2l_tools.evaluation.evaluate."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from s2l_tools.errors import S2LError, S2LWarning
from s2l_tools.cli.evaluate import main
from s2l_tools.evaluation.evaluate import (
    check_outputs,
    evaluate_folders,
    output_paths,
    write_scores,
)

KEYS = {"iou", "mdice", "f1_50", "ap_50", "n_images",
        "iou_std", "mdice_std", "f1_50_std", "ap_50_std"}


def _square_labels(shift=0, shape=(20, 20)):
    lab = np.zeros(shape, np.uint16)
    lab[2:12, 2 + shift : 12 + shift] = 1
    return lab


@pytest.fixture()
def dirs(tmp_path):
    """a: perfect prediction; b: square shifted by 2 (IoU 80/120, Dice 0.8)."""
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    tifffile.imwrite(truth / "a.tif", _square_labels())
    imsave(truth / "b.png", _square_labels().astype(np.uint8), check_contrast=False)
    tifffile.imwrite(pred / "a.tif", (_square_labels() * 300).astype(np.uint16))
    tifffile.imwrite(pred / "b_labels.tif", _square_labels(shift=2).astype(np.int32))
    return pred, truth


def test_scores_json_and_csv(dirs, tmp_path, capsys):
    pred, truth = dirs
    out = tmp_path / "out" / "scores.json"
    assert main(["--pred", str(pred), "--truth", str(truth), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert KEYS <= set(summary)
    assert summary["n_images"] == 2
    assert summary["iou"] == pytest.approx((1 + 80 / 120) / 2)
    assert summary["mdice"] == pytest.approx((1 + 0.8) / 2)
    assert summary["mdice_std"] == pytest.approx(0.1)
    assert summary["f1_50"] == 1.0 and summary["ap_50"] == 1.0 and summary["f1_50_std"] == 0.0
    with open(out.with_suffix(".csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["stem"] for r in rows] == ["a", "b"]
    assert float(rows[1]["iou"]) == pytest.approx(80 / 120, abs=1e-6)
    assert rows[1]["tp"] == "1" and rows[1]["n_true"] == "1"
    captured = capsys.readouterr()
    assert "mdice" in captured.out and "0.9000" in captured.out
    assert "warning" not in captured.err
    assert not list(tmp_path.glob("out/*.part"))


def test_default_outputs_in_pred_folder(dirs):
    pred, truth = dirs
    assert main(["--pred", str(pred), "--truth", str(truth)]) == 0
    assert (pred / "scores.json").exists() and (pred / "scores.csv").exists()
    # a second run ignores its own outputs
    assert main(["--pred", str(pred), "--truth", str(truth)]) == 0


def test_explicit_csv(dirs, tmp_path):
    pred, truth = dirs
    csv_path = tmp_path / "per_image.csv"
    json_path = tmp_path / "s.json"
    assert main(["--pred", str(pred), "--truth", str(truth), "--json", str(json_path),
                 "--csv", str(csv_path)]) == 0
    assert csv_path.exists() and json_path.exists()
    assert not (tmp_path / "s.csv").exists()


def test_evaluate_folders_api(dirs):
    rows, summary = evaluate_folders(*dirs)
    assert [r["stem"] for r in rows] == ["a", "b"]
    assert rows[0]["mdice"] == 1.0 and rows[1]["mdice"] == pytest.approx(0.8)
    assert summary["n_images"] == 2 and summary["tp"] == 2


def test_missing_pred_folder(tmp_path, dirs, capsys):
    _, truth = dirs
    assert main(["--pred", str(tmp_path / "nope"), "--truth", str(truth)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and "does not exist" in err
    assert err.count("\n") == 1


def test_missing_truth_folder(tmp_path, dirs, capsys):
    pred, _ = dirs
    assert main(["--pred", str(pred), "--truth", str(tmp_path / "gone")]) == 1
    err = capsys.readouterr().err
    assert "gone" in err and "--truth" in err


def test_empty_pred_folder(tmp_path, dirs, capsys):
    _, truth = dirs
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    assert main(["--pred", str(empty), "--truth", str(truth)]) == 1
    err = capsys.readouterr().err
    assert "empty" in err and "no label images" in err


def test_no_common_stems(tmp_path, dirs, capsys):
    _, truth = dirs
    other = tmp_path / "other"
    other.mkdir()
    tifffile.imwrite(other / "zzz.tif", _square_labels())
    assert main(["--pred", str(other), "--truth", str(truth)]) == 1
    err = capsys.readouterr().err
    assert "no image in common" in err and "zzz" in err and "a, b" in err


def test_stems_on_one_side_warn(dirs, capsys):
    pred, truth = dirs
    tifffile.imwrite(truth / "c.tif", _square_labels())
    tifffile.imwrite(pred / "d_labels.tif", _square_labels())
    assert main(["--pred", str(pred), "--truth", str(truth)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "(c)" in err and "(d)" in err
    assert json.loads((pred / "scores.json").read_text())["n_images"] == 2


def test_stems_on_one_side_api_warns(dirs):
    pred, truth = dirs
    tifffile.imwrite(truth / "c.tif", _square_labels())
    with pytest.warns(S2LWarning, match="no prediction for 1"):
        rows, _ = evaluate_folders(pred, truth)
    assert len(rows) == 2


def test_shape_mismatch(dirs, capsys):
    pred, truth = dirs
    tifffile.imwrite(pred / "a.tif", np.zeros((20, 21), np.uint16))
    assert main(["--pred", str(pred), "--truth", str(truth)]) == 1
    err = capsys.readouterr().err
    assert "a.tif" in err and "(20, 21)" in err and "(20, 20)" in err
    assert not (pred / "scores.json").exists()


def test_unreadable_tiff(dirs, capsys):
    pred, truth = dirs
    (pred / "a.tif").write_bytes(b"this is not a tiff")
    assert main(["--pred", str(pred), "--truth", str(truth)]) == 1
    err = capsys.readouterr().err
    assert "a.tif" in err and "cannot read" in err
    assert err.count("\n") == 1


def test_not_2d(dirs, capsys):
    pred, truth = dirs
    tifffile.imwrite(pred / "a.tif", np.zeros((3, 20, 20), np.uint16), photometric="minisblack")
    assert main(["--pred", str(pred), "--truth", str(truth)]) == 1
    assert "a.tif: label image must be 2-D" in capsys.readouterr().err


def test_ambiguous_pred_names(dirs, capsys):
    pred, truth = dirs
    tifffile.imwrite(pred / "a_labels.tif", _square_labels())
    assert main(["--pred", str(pred), "--truth", str(truth)]) == 1
    err = capsys.readouterr().err
    assert "a.tif" in err and "a_labels.tif" in err and "keep only one" in err


def test_float_labels_rejected_unless_integral(dirs, capsys):
    pred, truth = dirs
    tifffile.imwrite(pred / "a.tif", _square_labels().astype(np.float32))
    assert main(["--pred", str(pred), "--truth", str(truth)]) == 0
    tifffile.imwrite(pred / "a.tif", _square_labels().astype(np.float32) * 0.5)
    assert main(["--pred", str(pred), "--truth", str(truth)]) == 1
    assert "non-integer" in capsys.readouterr().err


def test_output_would_overwrite_input(dirs, capsys):
    pred, truth = dirs
    assert main(["--pred", str(pred), "--truth", str(truth),
                 "--csv", str(truth / "a.tif")]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert tifffile.imread(truth / "a.tif").max() == 1


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "example" in capsys.readouterr().out


def test_api_raises_s2lerror(tmp_path):
    with pytest.raises(S2LError, match="does not exist"):
        evaluate_folders(tmp_path / "x", tmp_path / "y")


def test_library_writes_scores_without_the_cli(dirs, tmp_path):
    pred, truth = dirs
    assert output_paths(pred) == (pred / "scores.json", pred / "scores.csv")
    json_path, csv_path = output_paths(pred, json_path=tmp_path / "s.json")
    assert csv_path == tmp_path / "s.csv"
    with pytest.raises(S2LError, match="same file"):
        output_paths(pred, json_path=tmp_path / "x.json", csv_path=tmp_path / "x.json")
    with pytest.raises(S2LError, match="overwrite"):
        check_outputs(json_path, truth / "a.tif", inputs=(pred, truth))
    with pytest.raises(S2LError, match="is a folder"):
        check_outputs(tmp_path, csv_path, inputs=(pred, truth))
    rows, summary = evaluate_folders(pred, truth)
    check_outputs(json_path, csv_path, inputs=(pred, truth))
    write_scores(rows, summary, json_path=json_path, csv_path=csv_path)
    assert json.loads(json_path.read_text()) == summary
    with open(csv_path, newline="") as fh:
        assert [r["stem"] for r in csv.DictReader(fh)] == ["a", "b"]


def test_prob_maps_of_s2l_predict_are_skipped(dirs, capsys):
    """s2l-predict --prob writes <stem>_prob.tif beside the labels: not a label image."""
    pred, truth = dirs
    tifffile.imwrite(pred / "a_prob.tif", np.full((20, 20), 0.3, np.float32))
    assert main(["--pred", str(pred), "--truth", str(truth)]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "a_prob" not in err
    assert json.loads((pred / "scores.json").read_text())["n_images"] == 2

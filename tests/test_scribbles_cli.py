"""s2l-scribbles and s2l-check on a dataset folder, with every bad input."""

import numpy as np
import pytest
import roifile
import tifffile

from s2l_tools.cli import check, scribbles
from s2l_tools.data.demo_data import make_demo_dataset
from s2l_tools.io.images import read_labels
from s2l_tools.io.roi import read_rois, rois_to_scribbles


@pytest.fixture
def data(tmp_path):
    make_demo_dataset(tmp_path / "d", n_train=2, n_val=0, shape=(96, 128), seed=1)
    return tmp_path / "d" / "train"


def _line(points, *, group=0, name="", width=1):
    roi = roifile.ImagejRoi.frompoints(np.asarray(points, float))
    roi.roitype = roifile.ROI_TYPE.POLYLINE
    roi.options &= ~roifile.ROI_OPTIONS.SUB_PIXEL_RESOLUTION
    roi.group, roi.name, roi.stroke_width = group, name, width
    return roi


def test_converts_dataset_like_roi_module(data, capsys):
    assert scribbles.main([str(data)]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 scribble mask(s)" in out
    for stem in ("nuclei_000", "nuclei_001"):
        mask = read_labels(data / "scribbles" / f"{stem}.tif")
        expected = rois_to_scribbles(read_rois(data / "rois" / f"{stem}.zip"), mask.shape)
        assert mask.dtype == np.uint8 and np.array_equal(mask, expected)
        assert set(np.unique(mask)) == {0, 1, 2}
    # a second run replaces our own files without --overwrite
    assert scribbles.main([str(data)]) == 0


def test_refuses_to_replace_foreign_mask(data, capsys):
    (data / "scribbles").mkdir()
    tifffile.imwrite(data / "scribbles" / "nuclei_000.tif", np.zeros((96, 128), np.uint8))
    assert scribbles.main([str(data)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nuclei_000.tif: exists and was not written" in err
    assert "--overwrite" in err
    assert scribbles.main([str(data), "--overwrite"]) == 0


def test_no_background_anywhere_writes_nothing(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "rois").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((40, 40), np.uint16))
    roifile.roiwrite(tmp_path / "rois" / "a.zip", [_line([[5, 5], [20, 20]], group=1)])
    assert scribbles.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no background scribble in any image" in err and err.count("\n") == 1
    assert not (tmp_path / "scribbles").exists()


def test_unclassified_roi_named_in_error(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "rois").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((40, 40), np.uint16))
    roifile.roiwrite(tmp_path / "rois" / "a.zip", [
        _line([[5, 5], [20, 20]], group=1), _line([[30, 5], [30, 30]], name="mystery")])
    assert scribbles.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "mystery" in err and err.count("\n") == 1
    assert scribbles.main([str(tmp_path), "--skip-unclassified", "--bg-name", "^myst"]) == 0


def test_scribble_outside_image_is_clipped_with_warning(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "rois").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((40, 40), np.uint16))
    roifile.roiwrite(tmp_path / "rois" / "a.zip", [
        _line([[5, 5], [20, 20]], group=1), _line([[30, 5], [30, 80]], group=2)])
    assert scribbles.main([str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "outside" in err
    mask = read_labels(tmp_path / "scribbles" / "a.tif")
    assert (mask == 1).sum() == 35  # rows 5..39 of column 30


def test_mismatched_names_and_single_image_mode(data, tmp_path, capsys):
    (data / "rois" / "nuclei_000.zip").rename(data / "rois" / "nuclei_00.zip")
    assert scribbles.main([str(data)]) == 1
    err = capsys.readouterr().err
    assert "nuclei_00.zip: no image named 'nuclei_00'" in err
    out = tmp_path / "one.tif"
    assert scribbles.main(["--images", str(data / "images" / "nuclei_001.tif"), "--rois",
                           str(data / "rois" / "nuclei_001.zip"), "--out", str(out)]) == 0
    assert read_labels(out).shape == (96, 128)


def test_text_roi_is_refused(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "rois").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((40, 40), np.uint16))
    text = _line([[5, 5], [20, 20]], group=1)
    text.roitype = roifile.ROI_TYPE.RECT
    text.subtype = roifile.ROI_SUBTYPE.TEXT
    roifile.roiwrite(tmp_path / "rois" / "a.zip", [text, _line([[30, 5], [30, 30]], group=2)])
    assert scribbles.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "text" in err.lower() and err.count("\n") == 1 and "Traceback" not in err


def test_check_reports_problems(data, capsys):
    assert scribbles.main([str(data)]) == 0
    capsys.readouterr()
    assert check.main([str(data)]) == 0
    assert "no problems found" in capsys.readouterr().out
    tifffile.imwrite(data / "scribbles" / "nuclei_001.tif", np.zeros((10, 10), np.uint8))
    tifffile.imwrite(data / "scribbles" / "orphan.tif", np.zeros((10, 10), np.uint8))
    assert check.main([str(data)]) == 1
    out = capsys.readouterr().out
    assert "differs from its image" in out and "no image named 'orphan'" in out


def test_check_missing_folder(tmp_path, capsys):
    assert check.main([str(tmp_path / "nope")]) == 1
    assert "no such dataset folder" in capsys.readouterr().err


def test_help_has_example(capsys):
    for mod in (scribbles, check):
        assert mod.main(["--help"]) == 0
        assert "example:" in capsys.readouterr().out


def test_overlay_inside_imagej_tiff(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    rois = [_line([[5, 5], [20, 20]], group=1), _line([[30, 5], [30, 30]], group=2)]
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((40, 40), np.uint16), imagej=True,
                     metadata={"Overlays": [r.tobytes() for r in rois]})
    assert scribbles.main([str(tmp_path)]) == 0
    mask = read_labels(tmp_path / "scribbles" / "a.tif")
    assert np.array_equal(mask, rois_to_scribbles(rois, (40, 40)))
    assert (mask == 2).sum() == 16 and (mask == 1).sum() == 26


def test_damaged_roiset_and_huge_roi_end_as_one_line(tmp_path, capsys):
    """Issue 16: a damaged zip (zlib error) was an internal error (exit 3); a 1 KB ROI with
    huge sub-pixel coordinates asked for terabytes. Now: one line, exit 1, nothing written;
    and the huge ROI is clipped to the image like any other."""
    (tmp_path / "images").mkdir()
    (tmp_path / "rois").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((40, 40), np.uint16))
    huge = roifile.ImagejRoi.frompoints(np.array([[0.5, 0.5], [3e8, 1.5], [1.5, 2e8]]))
    huge.roitype = roifile.ROI_TYPE.POLYGON
    huge.group, huge.name = 1, "fg-huge"
    bg = _line([[30, 5], [30, 30]], group=2)
    roifile.roiwrite(tmp_path / "rois" / "a.zip", [huge, bg])
    assert scribbles.main([str(tmp_path)]) == 0
    assert "partly outside" in capsys.readouterr().err
    mask = read_labels(tmp_path / "scribbles" / "a.tif")
    assert (mask == 2).sum() > 0 and (mask == 1).sum() == 26
    # now damage the deflate stream of the zip
    import zipfile

    with zipfile.ZipFile(tmp_path / "rois" / "a.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fg-huge.roi", huge.tobytes())
    data = bytearray((tmp_path / "rois" / "a.zip").read_bytes())
    data[30 + len("fg-huge.roi")] = 0xFF
    (tmp_path / "rois" / "a.zip").write_bytes(bytes(data))
    before = (tmp_path / "scribbles" / "a.tif").read_bytes()
    assert scribbles.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a.zip: member 'fg-huge.roi': unreadable" in err
    assert (tmp_path / "scribbles" / "a.tif").read_bytes() == before


def test_long_lists_of_files_are_cut_to_five(data, tmp_path, capsys):
    rois = tmp_path / "rois"
    rois.mkdir()
    roiset = (data / "rois" / "nuclei_001.zip").read_bytes()
    for i in range(7):  # seven RoiSets named like no image: the first five, then " ..."
        (rois / f"other_{i}.zip").write_bytes(roiset)
    out = tmp_path / "masks"
    assert scribbles.main(["--images", str(data / "images"), "--rois", str(rois),
                           "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists()
    assert "other_0, other_1, other_2, other_3, other_4 ... match no image" in err
    # an image without ROIs is skipped with a note naming it
    for i in range(7):
        (rois / f"other_{i}.zip").unlink()
    (rois / "nuclei_001.zip").write_bytes(roiset)
    assert scribbles.main(["--images", str(data / "images"), "--rois", str(rois),
                           "--out", str(out)]) == 0
    assert "1 image(s) without ROIs or overlay skipped: nuclei_000\n" in capsys.readouterr().out

"""benchmarks/accuracy.py's seed-by-seed comparison: the numbers docs/benchmarks.md reports."""

import importlib.util
from pathlib import Path

import pytest
from scipy.stats import ttest_ind, ttest_rel

_SPEC = importlib.util.spec_from_file_location(
    "accuracy_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py")
accuracy = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(accuracy)


def _r(method, ratio, seed, iou):
    return {"modality": "fluo", "method": method, "ratio": ratio, "seed": seed, "iou": iou}


def test_paired_differences_are_taken_seed_by_seed():
    # seeds move both methods together: S2L is ahead in every seed by 0.01-0.02,
    # although the seed-to-seed spread (0.1) is much larger
    s2l = [0.71, 0.62, 0.83]
    pce = [0.70, 0.60, 0.82]
    results = [_r("s2l", 0.1, s, v) for s, v in enumerate(s2l)]
    results += [_r("pce", 0.1, s, v) for s, v in enumerate(pce)]
    results += [_r("pseudo", 0.1, 0, 0.5)]  # one seed in common: no comparison
    results += [_r("full", None, s, 0.9) for s in range(3)]  # no ratio: no comparison
    results += [_r("pce", 0.3, 7, 0.7)]  # no S2L run at that seed and ratio
    rows = accuracy.paired(results)
    assert [(r["method"], r["ratio"]) for r in rows] == [("pce", 0.1)]
    row = rows[0]
    assert row["seeds"] == [0, 1, 2]
    assert row["diffs"] == pytest.approx([0.01, 0.02, 0.01])
    assert row["diff_mean"] == pytest.approx(0.04 / 3)
    assert row["wins"] == 3
    assert row["p_value"] == pytest.approx(ttest_rel(s2l, pce).pvalue)
    # pairing is what makes the gain visible: unpaired, the seed spread would hide it
    assert row["p_value"] < 0.1 < 0.5 < ttest_ind(s2l, pce).pvalue
    table = accuracy.paired_markdown(rows)
    assert "| DSB-fluo | 10 % | pCE only | +0.0133 ± 0.0058 | 3 of 3 seeds |" in table


def test_seeds_zero_is_refused_not_an_empty_run():
    with pytest.raises(SystemExit, match="--seeds 1 runs seed 0"):
        accuracy.main(["--seeds", "0", "--cached-only"])


def test_seeds_count_list_and_single_seed():
    assert accuracy.parse_seeds("3") == [0, 1, 2]
    assert accuracy.parse_seeds("0,3") == [0, 3]
    assert accuracy.parse_seeds("4,") == [4]


def test_seeds_not_a_number_is_one_line_not_a_traceback():
    with pytest.raises(SystemExit, match="--seeds 3"):
        accuracy.main(["--seeds", "two", "--cached-only"])


def _fake_dsb(root, modality, split, n):
    folder = root / modality / split / "images"
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"img{i:02d}.png").write_bytes(b"")


def test_rest_is_the_val_split_minus_the_chosen_images(tmp_path, monkeypatch):
    # --rest scores on the val images --val-images left out: never one of the chosen
    _fake_dsb(tmp_path, "fluo", "val", 12)
    monkeypatch.setattr(accuracy, "DSB", tmp_path)
    chosen = accuracy.split_files("fluo", "val", 5)
    every = accuracy.split_files("fluo", "val", 0)
    rest = accuracy.rest_of(every, chosen)
    assert len(chosen) == 5 and len(rest) == 7
    assert not set(rest) & set(chosen) and sorted(rest + chosen) == every
    assert rest == sorted(rest)


def test_rest_without_a_val_split_is_refused(tmp_path, monkeypatch):
    # brightfield's held-out images come from its train split: nothing is left to score on
    _fake_dsb(tmp_path / "dsb", "brightfield", "train", 6)
    monkeypatch.setattr(accuracy, "DSB", tmp_path / "dsb")
    with pytest.raises(SystemExit, match="--rest: brightfield has no val images"):
        accuracy.main(["--modality", "brightfield", "--rest", "--cached-only", "--seeds", "1",
                       "--workdir", str(tmp_path / "work")])


def test_unused_train_is_that_size_and_never_a_training_or_scored_image(tmp_path, monkeypatch):
    # --unused-train HxW: the train split's images of that size no run trained on (nor, where
    # the held-out images come from the train split, was scored on)
    (tmp_path / "manifest.csv").write_text(
        "id,modality,split,height,width,channels,nuclei,overlap_px\n"
        "a,fluo,train,512,640,1,9,0\nb,fluo,train,256,256,1,9,0\nc,fluo,train,512,640,1,9,0\n"
        "d,fluo,val,512,640,1,9,0\ne,histo,train,512,640,3,9,0\nf,fluo,train,512,640,1,9,0\n")
    monkeypatch.setattr(accuracy, "DSB", tmp_path)
    assert accuracy.unused_of("fluo", "train", "512x640", {"c"}) == ["a", "f"]
    assert accuracy.unused_of("fluo", "train", "640x512", set()) == []
    (tmp_path / "manifest.csv").unlink()
    with pytest.raises(SystemExit, match="manifest.csv is missing"):
        accuracy.unused_of("fluo", "train", "512x640", set())


def test_unused_train_of_no_image_is_refused(tmp_path, monkeypatch):
    _fake_dsb(tmp_path / "dsb", "fluo", "train", 4)
    _fake_dsb(tmp_path / "dsb", "fluo", "val", 2)
    (tmp_path / "dsb" / "manifest.csv").write_text(
        "id,modality,split,height,width,channels,nuclei,overlap_px\n"
        "img00,fluo,train,512,640,1,9,0\n")
    monkeypatch.setattr(accuracy, "DSB", tmp_path / "dsb")
    work = ["--cached-only", "--seeds", "1", "--workdir", str(tmp_path / "work")]
    # its one 512 x 640 image is a training image
    with pytest.raises(SystemExit, match="--unused-train 512x640: fluo's train split has no"):
        accuracy.main(["--unused-train", "512x640"] + work)
    with pytest.raises(SystemExit, match="give one of them"):
        accuracy.main(["--unused-train", "512x640", "--rest"] + work)

"""benchmarks/threshold_sweep.py: the table docs/benchmarks.md quotes, and a clear error."""

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "threshold_sweep", Path(__file__).resolve().parents[1] / "benchmarks" / "threshold_sweep.py")
sweep = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sweep)


def _res(ious):
    return {t: {"iou": v, "mdice": v, "f1_50": v - 0.1, "area": 1.0} for t, v in ious.items()}


def test_markdown_names_the_threshold_with_the_best_iou():
    table = sweep.markdown({"pce_r1.0_s0": _res({0.5: 0.65, 0.9: 0.76, 0.95: 0.74})})
    assert table.splitlines()[0].startswith("| run | t=0.5 | t=0.9 | t=0.95 |")
    assert table.splitlines()[2].endswith("| 0.9: IoU 0.760, F1 0.660 |")


def test_a_missing_run_says_how_to_make_it(tmp_path):
    with pytest.raises(SystemExit, match="run benchmarks/accuracy.py first"):
        sweep.main(["--workdir", str(tmp_path), "--runs", "pce_r0.1_s0"])


@pytest.mark.parametrize("bad", ["0.5,x", "0.5,1.2"])
def test_bad_thresholds_say_what_to_give(tmp_path, bad):
    with pytest.raises(SystemExit, match="--thresholds"):
        sweep.main(["--workdir", str(tmp_path), "--runs", "pce_r0.1_s0", "--thresholds", bad])


@pytest.mark.parametrize("bad", ["0.5,x", "0,0.5"])
def test_declump_checks_its_thresholds_the_same_way(tmp_path, monkeypatch, bad):
    spec = importlib.util.spec_from_file_location(
        "declump", Path(__file__).resolve().parents[1] / "benchmarks" / "declump.py")
    declump = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(declump)
    monkeypatch.setattr("sys.argv", ["declump.py", "--workdir", str(tmp_path), "--runs", "r",
                                     "--thresholds", bad])
    with pytest.raises(SystemExit, match="--thresholds"):
        declump.main()

"""Shared test set-up.

Under CI (``CI`` set), tests that need real ImageJ or CellProfiler must run:
a skip of such a test (the tool missing) is turned into a failure, so a
broken install step cannot pass CI silently.
"""

import os

import pytest

REQUIRED_IN_CI = ("imagej", "cellprofiler")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail")
            and any(item.get_closest_marker(m) for m in REQUIRED_IN_CI)):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, but this test must run there: {report.longrepr}"


@pytest.fixture(scope="module")
def demo_train(tmp_path_factory):
    """Three small demo images (64 x 64) with their ROI scribbles converted: a training folder."""
    from s2l_tools.cli.scribbles import main as scribbles_main
    from s2l_tools.data.demo_data import make_demo_dataset

    root = tmp_path_factory.mktemp("ds")
    make_demo_dataset(root, n_train=3, n_val=0, shape=(64, 64), seed=3)
    assert scribbles_main([str(root / "train")]) == 0
    return root / "train"

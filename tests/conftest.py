"""Shared test set-up.

Under CI (``CI`` set), tests that need real ImageJ or CellProfiler must run:
a skip of such a test (the tool missing) is turned into a failure, so a
broken install step cannot pass CI silently.
"""

import os

import pytest

from _demo import scribbled_demo

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
    """Three small demo images with their scribbles: a training folder."""
    return scribbled_demo(tmp_path_factory) / "train"

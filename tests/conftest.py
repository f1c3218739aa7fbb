"""Shared test set-up.

Under CI (``CI`` set), tests that need real ImageJ or CellProfiler must run:
a skip of such a test (the tool missing) is turned into a failure, so a
broken install step cannot pass CI silently.
"""

import os
import shutil

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


@pytest.fixture(scope="module", autouse=True)
def _free_module_folders(request, tmp_path_factory):
    """Delete what a test module made under pytest's base folder once it ends, unless one
    of its tests failed (kept for a look, as ``tmp_path_retention_policy`` does).

    The module fixtures' trained runs (checkpoints of ~0.2 GB each) otherwise stay until
    the session ends: 2.4 GB at the end of a passing suite, and a CI machine with little
    free disk failed the last module with "cannot write checkpoint.pt".
    """
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed == failed:
        for path in set(base.iterdir()) - before:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_train(tmp_path_factory):
    """Three small demo images with their scribbles: a training folder."""
    return scribbled_demo(tmp_path_factory) / "train"

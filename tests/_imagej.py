"""Run Jython scripts inside real ImageJ 1 (Debian's ij.jar + jython.jar), headless.

Tests import :data:`IMAGEJ_AVAILABLE` to decide whether to run and
:func:`run_jython` to run a script. Scripts must print the sentinel line
``S2L-DONE`` as their last act: ImageJ can swallow errors (or wait on a dialog),
so a zero exit status alone proves nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

IJ_JAR = Path(os.environ.get("S2L_IJ_JAR", "/usr/share/java/ij.jar"))
JYTHON_JAR = Path(os.environ.get("S2L_JYTHON_JAR", "/usr/share/java/jython.jar"))
SENTINEL = "S2L-DONE"

#: True when java, ij.jar and jython.jar are all present.
IMAGEJ_AVAILABLE: bool = IJ_JAR.is_file() and JYTHON_JAR.is_file() and shutil.which("java") is not None


def jython_command(script_path: str | os.PathLike, *args: str | os.PathLike) -> list[str]:
    """The headless ``java ... org.python.util.jython -S script ARGS`` command line."""
    return [
        "java",
        "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        "-Dpython.cachedir.skip=true",
        "-cp",
        f"{IJ_JAR}{os.pathsep}{JYTHON_JAR}",
        "org.python.util.jython",
        "-S",
        os.fspath(script_path),
        *(os.fspath(a) for a in args),
    ]


def run_jython(
    script_path: str | os.PathLike, *args: str | os.PathLike, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a Jython script in real ImageJ 1; return the finished process.

    The JVM runs in its own process group, killed as a whole on timeout.

    Raises
    ------
    RuntimeError
        On a timeout, a non-zero exit status or a missing ``S2L-DONE`` line,
        with the script's stdout and stderr in the message.
    """
    cmd = jython_command(script_path, *args)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        raise RuntimeError(
            f"{script_path}: timed out after {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}"
        ) from None
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if proc.returncode != 0 or SENTINEL not in out.splitlines():
        raise RuntimeError(
            f"{script_path}: exit status {proc.returncode}"
            f"{'' if SENTINEL in out.splitlines() else f', no {SENTINEL} line'}"
            f"\n--- stdout\n{out}\n--- stderr\n{err}"
        )
    return result

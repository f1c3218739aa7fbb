"""Install the RunScribble2Label module into CellProfiler 4.2 (the work of
``s2l-cellprofiler``, whose command line is :mod:`s2l_tools.cli.cellprofiler`).

:func:`install_plugin` (``s2l-cellprofiler install --plugins-dir DIR``) copies
the module (``cellprofiler_plugin/runscribble2label.py``) and its helpers into
``DIR``: ``s2l_tools/inference/onnx.py``, ``tiling.py`` and ``postprocess.py``
become ``_s2l_onnx_inference.py``, ``_s2l_tiling.py`` and ``_s2l_postprocess.py``
(CellProfiler imports every ``*.py`` file of its plugins folder that does not
start with ``_`` as a module). The plugin segments with
:func:`s2l_tools.inference.onnx.segment`; ``s2l-predict`` loads ``.onnx``
models with the same session loader and metadata reader and runs them through
:func:`s2l_tools.inference.predict.predict_image`, with the same tiling and
post-processing modules (the tests check that the results agree).

:func:`write_pipeline` (``s2l-cellprofiler pipeline --model model.onnx --out
example.cppipe``) writes a ready-to-run pipeline. Building it needs
``cellprofiler_core``, which lives in CellProfiler's own Python (3.9), so this
runs ``cellprofiler_plugin/examples/make_pipeline.py`` with that Python
(``--python``; default: ``$CP_VENV/bin/python``, else ``.cpvenv/bin/python``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from s2l_tools.io.atomic import atomic_path
from s2l_tools.errors import S2LError

__all__ = ["PLUGIN_FILE", "HELPERS", "plugin_source_dir", "install_plugin", "write_pipeline"]

PLUGIN_FILE = "runscribble2label.py"
#: package module -> name of the copy beside the plugin
HELPERS = {
    "inference/onnx.py": "_s2l_onnx_inference.py",
    "inference/tiling.py": "_s2l_tiling.py",
    "inference/postprocess.py": "_s2l_postprocess.py",
}
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # s2l_tools/


def plugin_source_dir() -> Path:
    """The folder holding ``runscribble2label.py`` and ``examples/make_pipeline.py``.

    Looked up as package data (``s2l_tools/cellprofiler_plugin``, for a wheel
    that ships it) and then in the source checkout (``cellprofiler_plugin``
    beside ``s2l_tools``, for an editable install).

    Raises
    ------
    S2LError
        Neither exists (a wheel built without the plugin).
    """
    candidates = [_PACKAGE_DIR / "cellprofiler_plugin", _PACKAGE_DIR.parent / "cellprofiler_plugin"]
    for folder in candidates:
        if (folder / PLUGIN_FILE).is_file():
            return folder
    raise S2LError(f"{candidates[-1] / PLUGIN_FILE}: the CellProfiler plugin is not part of this "
                   "installation; install s2l-tools from its source checkout (pip install -e .)")


def install_plugin(plugins_dir: str | os.PathLike) -> list[Path]:
    """Copy the plugin and its helper files into a CellProfiler plugins folder.

    Parameters
    ----------
    plugins_dir : path-like
        CellProfiler's plugins folder; created if missing. Earlier copies of
        these four files are replaced; nothing else there is touched.

    Returns
    -------
    written : list of Path
        The four files, plugin first.
    """
    plugins_dir = Path(plugins_dir)
    if plugins_dir.exists() and not plugins_dir.is_dir():
        raise S2LError(f"--plugins-dir {plugins_dir}: exists and is not a folder; give "
                       "CellProfiler's plugins folder")
    sources = [(plugin_source_dir() / PLUGIN_FILE, PLUGIN_FILE)]
    sources += [(_PACKAGE_DIR / src, dst) for src, dst in HELPERS.items()]
    for src, _ in sources:
        if not src.is_file():
            raise S2LError(f"{src}: missing from this installation; reinstall s2l-tools")
    # helpers first, the plugin last: the plugin never appears without them
    for src, dst in sources[1:] + sources[:1]:
        with atomic_path(plugins_dir / dst) as tmp:
            tmp.write_bytes(src.read_bytes())
            tmp.chmod(0o644)  # mkstemp makes 0600; a shared plugins folder needs readable files
    return [plugins_dir / dst for _, dst in sources]


def _cellprofiler_python(python: str | os.PathLike | None) -> Path:
    if python:
        path = Path(python)
    else:
        venv = os.environ.get("CP_VENV", ".cpvenv")
        path = Path(venv) / "bin" / "python"
    if not path.is_file():
        raise S2LError(f"{path}: no CellProfiler Python here; give CellProfiler's Python with "
                       "--python (build one with scripts/build_cellprofiler_venv.sh)")
    return path


def write_pipeline(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    python: str | os.PathLike | None = None,
    threshold: float | None = None,
    min_size: int | None = None,
    watershed: bool = False,
    save_labels: bool = False,
    save_probability: bool = False,
) -> Path:
    """Write an example CellProfiler pipeline (``.cppipe``) that runs RunScribble2Label.

    The pipeline is built by ``examples/make_pipeline.py`` run with
    CellProfiler's own Python (it needs ``cellprofiler_core``).

    Parameters
    ----------
    model : path-like
        The ``.onnx`` file written by ``s2l-export``; it is checked first.
    out : path-like
        The pipeline to write; its name must end in ``.cppipe``.
    python : path-like, optional
        CellProfiler's Python; default ``$CP_VENV/bin/python``, else
        ``.cpvenv/bin/python``.
    threshold : float, optional
        Probability threshold in [0, 1); default: the model's.
    min_size : int, optional
        Objects smaller than this (pixels) are removed; default: the model's.
    watershed, save_labels, save_probability : bool
        Split touching cells; also save each label matrix / probability map
        as ``.npy``.

    Returns
    -------
    out : Path

    Raises
    ------
    S2LError
        A setting is out of range, the model is not an s2l-tools ONNX file,
        there is no CellProfiler Python, or building the pipeline failed.
    """
    from s2l_tools.inference.onnx import read_meta

    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise S2LError(f"--threshold {threshold:g}: must be in [0, 1) (a probability; "
                       "0.5 is the usual choice)")
    if min_size is not None and min_size < 0:
        raise S2LError(f"--min-size {min_size}: must be 0 or more (pixels)")
    read_meta(model)  # ModelLoadError, an S2LError: one line
    out = Path(out)
    if out.suffix.lower() not in (".cppipe", ".cp"):
        raise S2LError(f"--out {out}: the file name must end in .cppipe (e.g. example.cppipe)")
    python = _cellprofiler_python(python)
    script = plugin_source_dir() / "examples" / "make_pipeline.py"
    cmd = [str(python), "-W", "ignore", str(script), "--model", str(Path(model).resolve()),
           "--out", str(out)]
    if threshold is not None:
        cmd += ["--threshold", repr(threshold)]
    if min_size is not None:
        cmd += ["--min-size", str(min_size)]
    cmd += [flag for flag, on in (("--watershed", watershed),
                                  ("--save-labels", save_labels),
                                  ("--save-probability", save_probability)) if on]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise S2LError(f"{script}: failed with CellProfiler's Python {python} ({last})")
    return out

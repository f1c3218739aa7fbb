"""``s2l-cellprofiler``: install the RunScribble2Label module into CellProfiler 4.2.

``s2l-cellprofiler install --plugins-dir DIR`` copies the module
(``cellprofiler_plugin/runscribble2label.py``) and its helpers into ``DIR``:
``s2l_tools/inference/onnx.py``, ``tiling.py`` and ``postprocess.py`` become
``_s2l_onnx_inference.py``, ``_s2l_tiling.py`` and ``_s2l_postprocess.py``
(CellProfiler imports every ``*.py`` file of its plugins folder that does not
start with ``_`` as a module). The plugin segments with
:func:`s2l_tools.inference.onnx.segment`; ``s2l-predict`` loads ``.onnx``
models with the same session loader and metadata reader and runs them through
:func:`s2l_tools.inference.predict.predict_image`, with the same tiling and
post-processing modules (the tests check that the results agree).

``s2l-cellprofiler pipeline --model model.onnx --out example.cppipe`` writes a
ready-to-run pipeline. Building it needs ``cellprofiler_core``, which lives in
CellProfiler's own Python (3.9), so this runs
``cellprofiler_plugin/examples/make_pipeline.py`` with that Python
(``--python``; default: ``$CP_VENV/bin/python``, else ``.cpvenv/bin/python``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from s2l_tools.cli import _common as _cli
from s2l_tools.io.atomic import atomic_path
from s2l_tools.errors import S2LError

__all__ = ["PLUGIN_FILE", "HELPERS", "plugin_source_dir", "install_plugin", "get_parser", "main"]

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


def _cellprofiler_python(python: str | None) -> Path:
    if python:
        path = Path(python)
    else:
        venv = os.environ.get("CP_VENV", ".cpvenv")
        path = Path(venv) / "bin" / "python"
    if not path.is_file():
        raise S2LError(f"{path}: no CellProfiler Python here; give CellProfiler's Python with "
                       "--python (build one with scripts/build_cellprofiler_venv.sh)")
    return path


# --------------------------------------------------------------------------- CLI
def get_parser():
    parser = _cli.make_parser(
        "s2l-cellprofiler",
        "Install the RunScribble2Label module into CellProfiler 4.2, or write an example "
        "pipeline that uses it.",
        "  s2l-cellprofiler install --plugins-dir ~/cellprofiler-plugins\n"
        "  s2l-cellprofiler pipeline --model exp1.onnx --out exp1.cppipe "
        "--python .cpvenv/bin/python",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    inst = sub.add_parser("install", help="copy the module and its helpers into a plugins folder")
    inst.add_argument("--plugins-dir", required=True, metavar="DIR",
                      help="CellProfiler's plugins folder (created if missing)")
    pipe = sub.add_parser("pipeline", help="write an example .cppipe using RunScribble2Label "
                          "(runs CellProfiler's Python)")
    pipe.add_argument("--model", required=True, metavar="FILE",
                      help="the .onnx file written by s2l-export")
    pipe.add_argument("--out", required=True, metavar="FILE", help="the .cppipe file to write")
    pipe.add_argument("--python", default=None, metavar="PY",
                      help="CellProfiler's Python (default: $CP_VENV/bin/python or "
                           ".cpvenv/bin/python)")
    pipe.add_argument("--threshold", type=float, default=None, metavar="T",
                      help="probability threshold (default: the model's)")
    pipe.add_argument("--min-size", type=int, default=None, metavar="N",
                      help="remove objects smaller than N pixels (default: the model's)")
    pipe.add_argument("--watershed", action="store_true", help="split touching cells")
    pipe.add_argument("--save-labels", action="store_true",
                      help="also save each label matrix as <image>_labels.npy")
    pipe.add_argument("--save-probability", action="store_true",
                      help="also save each probability map as <image>_probability.npy")
    return parser


def _install(args) -> int:
    written = install_plugin(args.plugins_dir)
    names = ", ".join(p.name for p in written)
    print(f"s2l-cellprofiler: installed {names} into {args.plugins_dir}; start CellProfiler "
          f"with --plugins-directory {args.plugins_dir} (or set it in File > Preferences)")
    return 0


def _pipeline(args) -> int:
    from s2l_tools.inference.onnx import read_meta

    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        raise S2LError(f"--threshold {args.threshold:g}: must be in [0, 1) (a probability; "
                       "0.5 is the usual choice)")
    if args.min_size is not None and args.min_size < 0:
        raise S2LError(f"--min-size {args.min_size}: must be 0 or more (pixels)")
    read_meta(args.model)  # ModelLoadError, an S2LError: one line
    out = Path(args.out)
    if out.suffix.lower() not in (".cppipe", ".cp"):
        raise S2LError(f"--out {out}: the file name must end in .cppipe (e.g. example.cppipe)")
    python = _cellprofiler_python(args.python)
    script = plugin_source_dir() / "examples" / "make_pipeline.py"
    cmd = [str(python), "-W", "ignore", str(script), "--model", str(Path(args.model).resolve()),
           "--out", str(out)]
    if args.threshold is not None:
        cmd += ["--threshold", repr(args.threshold)]
    if args.min_size is not None:
        cmd += ["--min-size", str(args.min_size)]
    cmd += [flag for flag, on in (("--watershed", args.watershed),
                                  ("--save-labels", args.save_labels),
                                  ("--save-probability", args.save_probability)) if on]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise S2LError(f"{script}: failed with CellProfiler's Python {python} ({last})")
    print(f"s2l-cellprofiler: wrote {out}")
    return 0


def _main(args) -> int:
    if args.command == "install":
        return _install(args)
    return _pipeline(args)


def main(argv=None) -> int:
    """``s2l-cellprofiler``: install the CellProfiler module / write a pipeline."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

"""``s2l-cellprofiler``: install the RunScribble2Label module into CellProfiler 4.2,
or write an example pipeline that uses it.

The work is :mod:`s2l_tools.interop.cellprofiler`; this module parses the
command line and says what was written.
"""

from __future__ import annotations

import sys

from s2l_tools.cli import _common as _cli
from s2l_tools.interop.cellprofiler import install_plugin, write_pipeline

__all__ = ["get_parser", "main"]


def get_parser():
    """The argument parser of ``s2l-cellprofiler`` (sub-commands ``install``, ``pipeline``)."""
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
    out = write_pipeline(
        args.model, args.out, python=args.python, threshold=args.threshold,
        min_size=args.min_size, watershed=args.watershed, save_labels=args.save_labels,
        save_probability=args.save_probability,
    )
    print(f"s2l-cellprofiler: wrote {out}")
    return 0


def _main(args) -> int:
    if args.command == "install":
        return _install(args)
    return _pipeline(args)


def main(argv=None) -> int:
    """Entry point of ``s2l-cellprofiler``; returns the exit status."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

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
        "pipeline that uses it. Each command has its own --help "
        "(s2l-cellprofiler pipeline --help).",
        "  s2l-cellprofiler install --plugins-dir ~/cellprofiler-plugins\n"
        "  s2l-cellprofiler pipeline --model exp1.onnx --out exp1.cppipe --save-labels",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    inst = _cli.add_subcommand(
        sub, "install", "copy the module and its helpers into a plugins folder",
        "  s2l-cellprofiler install --plugins-dir ~/cellprofiler-plugins\n"
        "  # then in CellProfiler: File > Preferences > CellProfiler plugins directory",
        "Copy RunScribble2Label (runscribble2label.py) and its helper files (_s2l_*.py) "
        "into CellProfiler's plugins folder. Earlier copies are replaced; nothing else "
        "there is touched.",
    )
    inst.add_argument("--plugins-dir", required=True, metavar="DIR",
                      help="CellProfiler's plugins folder (created if missing)")
    pipe = _cli.add_subcommand(
        sub, "pipeline", "write an example .cppipe that runs RunScribble2Label",
        "  s2l-cellprofiler pipeline --model exp1.onnx --out exp1.cppipe\n"
        "  s2l-cellprofiler pipeline --model exp1.onnx --out exp1.cppipe --save-labels "
        "--declump none\n"
        "  cellprofiler -c -r -p exp1.cppipe -i images/ -o out/ --plugins-directory "
        "~/cellprofiler-plugins",
        "Write a CellProfiler 4.2 pipeline: Images -> NamesAndTypes (every image is DNA) -> "
        "RunScribble2Label (objects Cells) -> ExportToSpreadsheet (MyExpt_Image.csv with "
        "Count_Cells). No CellProfiler is needed to write it; --python builds it with "
        "that CellProfiler's own modules instead.",
    )
    pipe.add_argument("--model", required=True, metavar="FILE",
                      help="the .onnx file written by s2l-export")
    pipe.add_argument("--out", required=True, metavar="FILE", help="the .cppipe file to write")
    pipe.add_argument("--python", default=None, metavar="PY",
                      help="build the pipeline with this CellProfiler's Python (the one "
                           "CellProfiler runs in, with cellprofiler_core; e.g. "
                           ".cpvenv/bin/python) instead of writing it directly (default: "
                           "written directly, no CellProfiler needed)")
    pipe.add_argument("--threshold", type=float, default=None, metavar="T",
                      help="foreground probability threshold (default: the model's)")
    pipe.add_argument("--min-size", type=int, default=None, metavar="N",
                      help="remove objects smaller than N pixels (default: the model's)")
    _cli.add_declump_arguments(pipe)
    pipe.add_argument("--no-flips", dest="flips", action="store_false",
                      help="one network call per tile (4x faster; the module's default "
                           "averages each tile over its four flips, as s2l-predict does)")
    pipe.add_argument("--gains", type=_cli.gains, default=(1.0,), metavar="G[,G...]",
                      help="the module's \"Brightness gains to average\": " + _cli.GAINS_HELP)
    pipe.add_argument("--save-labels", action="store_true",
                      help="also save each label image as <image>_labels.tiff (32-bit "
                           "integer labels, 0 = background; opens in Fiji)")
    pipe.add_argument("--save-probability", action="store_true",
                      help="also save each foreground probability as "
                           "<image>_probability.tiff (32-bit float)")
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
        min_size=args.min_size, watershed=args.declump == "watershed", flips=args.flips,
        gains=args.gains, save_labels=args.save_labels, save_probability=args.save_probability,
    )
    how = f"with {args.python}" if args.python else "for CellProfiler 4.2"
    print(f"s2l-cellprofiler: wrote {out} ({how}); run it with RunScribble2Label installed "
          "(s2l-cellprofiler install --plugins-dir DIR)")
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

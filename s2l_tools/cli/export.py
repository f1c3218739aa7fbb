"""``s2l-export``: a trained model as a self-describing ONNX file.

The export is :func:`s2l_tools.inference.export.export_onnx` (see its module
for the file's format); this module parses the command line, checks the
output name and says what was written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from s2l_tools.cli import _common as _cli
from s2l_tools.errors import S2LError
from s2l_tools.inference.export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    MAX_OPSET,
    MIN_OPSET,
    OUTPUT_NAME,
    export_onnx,
)

__all__ = ["get_parser", "main"]


def get_parser():
    """The argument parser of ``s2l-export``."""
    parser = _cli.make_parser(
        "s2l-export",
        "Export a model trained by s2l-train to ONNX (softmax probabilities, dynamic "
        "batch/height/width, metadata inside) for CellProfiler or any ONNX runtime.",
        "  s2l-export runs/exp1 --out exp1.onnx\n"
        "  s2l-export runs/exp1/model.pt --out exp1.onnx --opset 17",
    )
    parser.add_argument("model", metavar="RUN",
                        help="run folder written by s2l-train (model.pt inside) or a model file")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET})")
    return parser


def _main(args) -> int:
    from s2l_tools.training.checkpoint import load_model
    from s2l_tools.training.rundir import resolve_model_path

    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise S2LError(f"--opset {args.opset}: must be {MIN_OPSET} to {MAX_OPSET} (default "
                       f"{DEFAULT_OPSET}; CellProfiler's onnxruntime 1.19 runs up to 21)")
    out = Path(args.out)
    if out.is_dir():
        raise S2LError(f"--out {out}: is a folder; give the file to write, e.g. "
                       f"--out {out / 'model.onnx'}")
    if out.suffix.lower() != ".onnx":
        raise S2LError(f"--out {out}: the file name must end in .onnx (e.g. model.onnx)")
    model_path = resolve_model_path(args.model)
    if out.resolve() == model_path.resolve():
        raise S2LError(f"--out {out}: is the model file itself; choose another name")
    model, meta = load_model(model_path, device="cpu")
    export_onnx(model, meta, out, opset=args.opset)
    size = out.stat().st_size / 2**20
    print(f"s2l-export: wrote {out} ({size:.1f} MiB, opset {args.opset}, {meta.encoder}, "
          f"{meta.in_channels} channel(s) in, '{INPUT_NAME}' -> '{OUTPUT_NAME}'; checked with "
          "onnx.checker and ONNX Runtime)")
    return 0


def main(argv=None) -> int:
    """Entry point of ``s2l-export``; returns the exit status."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

"""``s2l-export``: a trained model as a self-describing ONNX file or a bioimage.io package.

The exports are :func:`s2l_tools.inference.export.export_onnx` (the default,
``--format onnx``; see its module for the file's format) and
:func:`s2l_tools.inference.bioimageio.export_bioimageio` (``--format
bioimageio``: a BioImage Model Zoo package for deepImageJ, ilastik, QuPath,
BiaPy, ...); this module parses the command line, checks the output name and
says what was written.
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
        "batch/height/width, metadata inside) for CellProfiler or any ONNX runtime, or "
        "(--format bioimageio) to a BioImage Model Zoo package for deepImageJ (Fiji), "
        "ilastik, QuPath and BiaPy.",
        "  s2l-export runs/exp1 --out exp1.onnx\n"
        "  s2l-export runs/exp1/model.pt --out exp1.onnx --opset 17\n"
        "  s2l-export runs/exp1 --format bioimageio --out exp1.zip --author 'A. Biologist'",
    )
    parser.add_argument("model", metavar="RUN",
                        help="run folder written by s2l-train (model.pt inside) or a model file")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the file to write: .onnx, or .zip with --format bioimageio")
    parser.add_argument("--format", default="onnx", choices=("onnx", "bioimageio"),
                        help="onnx: one ONNX file (CellProfiler); bioimageio: a BioImage Model "
                        "Zoo package (model spec 0.5; state dict, TorchScript and ONNX "
                        "weights), validated with bioimageio.core")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET}; --format onnx)")
    parser.add_argument("--test-image", default=None, metavar="FILE",
                        help="--format bioimageio: image for the package's test tensors "
                        "(default: the run's first training image)")
    parser.add_argument("--name", default=None,
                        help="--format bioimageio: the model's name (default: from the run folder)")
    parser.add_argument("--author", action="append", default=None, metavar="NAME",
                        help="--format bioimageio: an author of the model (repeat for several)")
    return parser


def _main(args) -> int:
    from s2l_tools.training.checkpoint import load_model
    from s2l_tools.training.rundir import resolve_model_path

    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise S2LError(f"--opset {args.opset}: must be {MIN_OPSET} to {MAX_OPSET} (default "
                       f"{DEFAULT_OPSET}; CellProfiler's onnxruntime 1.19 runs up to 21)")
    out = Path(args.out)
    suffix = ".zip" if args.format == "bioimageio" else ".onnx"
    if out.is_dir():
        raise S2LError(f"--out {out}: is a folder; give the file to write, e.g. "
                       f"--out {out / ('model' + suffix)}")
    if out.suffix.lower() != suffix:
        raise S2LError(f"--out {out}: the file name must end in {suffix} (e.g. "
                       f"model{suffix}){' with --format ' + args.format}")
    model_path = resolve_model_path(args.model)
    if out.resolve() == model_path.resolve():
        raise S2LError(f"--out {out}: is the model file itself; choose another name")
    if args.format == "bioimageio":
        return _export_bioimageio(args, model_path, out)
    model, meta = load_model(model_path, device="cpu")
    export_onnx(model, meta, out, opset=args.opset)
    size = out.stat().st_size / 2**20
    print(f"s2l-export: wrote {out} ({size:.1f} MiB, opset {args.opset}, {meta.encoder}, "
          f"{meta.in_channels} channel(s) in, '{INPUT_NAME}' -> '{OUTPUT_NAME}'; checked with "
          "onnx.checker and ONNX Runtime)")
    return 0


def _export_bioimageio(args, model_path: Path, out: Path) -> int:
    from s2l_tools.inference.bioimageio import (
        WEIGHT_FORMATS,
        export_bioimageio,
        require_bioimageio,
        run_info,
    )
    from s2l_tools.io.images import read_raw
    from s2l_tools.training.checkpoint import load_model

    require_bioimageio()
    info, image = run_info(model_path, name=args.name, authors=args.author)
    if args.test_image is not None:
        image = Path(args.test_image)
    if image is None:
        raise S2LError(f"{model_path}: no training image found for the package's test "
                       "tensors (no run folder beside it, or its data moved); pass "
                       "--test-image FILE")
    model, meta = load_model(model_path, device="cpu")
    raw = read_raw(image, channel=meta.channel)
    if raw.shape[0] != meta.in_channels:
        raise S2LError(f"--test-image {image}: {raw.shape[0]} channel(s), the model takes "
                       f"{meta.in_channels}; give an image like the training images")
    export_bioimageio(model, meta, out, test_image=raw, info=info)
    size = out.stat().st_size / 2**20
    print(f"s2l-export: wrote {out} ({size:.1f} MiB, bioimage.io model spec 0.5, "
          f"{meta.encoder}; test tensors from {image.name}; bioimageio.core test passed on "
          f"the CPU for {', '.join(WEIGHT_FORMATS)})")
    return 0


def main(argv=None) -> int:
    """Entry point of ``s2l-export``; returns the exit status."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

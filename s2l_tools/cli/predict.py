"""``s2l-predict``: segment images with a trained model.

The prediction is :mod:`s2l_tools.inference.predict` (see its docstring for
what is written per image); this module parses the command line, checks the
options, loads the model and calls
:func:`~s2l_tools.inference.predict.predict_files`, which segments the images
and writes the results.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from s2l_tools.cli import _common as _cli
from s2l_tools.device import select_device, torch_prob_fn
from s2l_tools.errors import S2LError, first_names
from s2l_tools.inference.onnx import PAD_MULTIPLE, threshold_problem
from s2l_tools.inference.predict import (
    _check_tiling,
    input_files,
    onnx_prob_fn,
    plan_outputs,
    predict_files,
    table_path,
)

__all__ = ["get_parser", "main"]


def get_parser():
    """The argument parser of ``s2l-predict``."""
    parser = _cli.make_parser(
        "s2l-predict",
        "Segment images with a model trained by s2l-train: writes OUT/<stem>.tif "
        "(instance labels, 0 = background), optionally <stem>_prob.tif (foreground "
        "probability) and <stem>_rois.zip (ImageJ ROIs, one per cell), and "
        "OUT/predictions.csv: per image, the number of objects, the share of the image inside "
        "them, the two flags below, or why it was skipped.\n\n"
        "Files in OUT that s2l-predict did not write are never replaced without --overwrite. "
        "Options, inputs and outputs are checked before anything is written; an image that "
        "then cannot be read or does not fit the model is skipped, the others are segmented, "
        "and the run ends with the list of skipped images and exit status 1. Images whose "
        "masks cover far more of them than the network called cell on any training image "
        "(models trained with --auto-threshold record it) are named in a warning: they may be "
        "unlike the images you scribbled. Images where the network outlined far more cells "
        "than it called are named in another: their masks may miss cells.",
        "  s2l-predict runs/exp1 data/new_images --out predictions --rois\n"
        "  s2l-predict runs/exp1/model.pt cell.tif --out pred --threshold 0.6 --declump none",
    )
    parser.add_argument("model", metavar="RUN_OR_MODEL",
                        help="run folder written by s2l-train (model.pt inside), a model file, "
                        "or an ONNX file written by s2l-export")
    parser.add_argument("images", metavar="IMAGES", help="an image file or a folder of images")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to run the network")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="foreground probability threshold (default: the model's)")
    parser.add_argument("--min-size", type=int, default=None, metavar="N",
                        help="remove objects smaller than N pixels (default: the model's)")
    parser.add_argument("--no-fill-holes", dest="fill_holes", action="store_false",
                        help="keep holes inside objects")
    _cli.add_declump_arguments(parser)
    parser.add_argument("--prob", action="store_true",
                        help="also write OUT/<stem>_prob.tif (float32 foreground probability)")
    parser.add_argument("--rois", action="store_true",
                        help="also write OUT/<stem>_rois.zip (ImageJ ROI set, one ROI per cell)")
    parser.add_argument("--channel", type=int, default=None, metavar="N",
                        help="channel to segment, 0-based (default: the model's)")
    parser.add_argument("--tile", type=int, default=None, metavar="N",
                        help="tile size in pixels, a multiple of 32 (default: the model's)")
    parser.add_argument("--overlap", type=int, default=None, metavar="N",
                        help="overlap between tiles in pixels (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N",
                        help="tiles per network call (more is faster on a GPU)")
    parser.add_argument("--no-flips", dest="flips", action="store_false",
                        help="run the network once per tile: 4x faster, slightly worse masks "
                        "(by default each tile is predicted with its four flips and the "
                        "results averaged, test-time augmentation)")
    parser.add_argument("--gains", type=_cli.gains, default=(1.0,), metavar="G[,G...]",
                        help=_cli.GAINS_HELP)
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision: bf16/fp16 on a GPU; bf16 on a CPU that has it natively "
                             "(AVX512-BF16/AMX; ~1.8x faster there). Probabilities differ by "
                             "up to ~1e-2")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in OUT that s2l-predict did not write (its own "
                        "earlier results are always replaced)")
    return parser


def _main(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from s2l_tools.training.checkpoint import load_model
    from s2l_tools.training.rundir import resolve_model_path

    # validate the options, the inputs and the outputs before loading anything heavy
    if args.threshold is not None and (why := threshold_problem(args.threshold)):
        raise S2LError(f"--threshold {args.threshold:g}: {why}")
    if args.min_size is not None and args.min_size < 0:
        raise S2LError(f"--min-size {args.min_size}: must be 0 or more (pixels)")
    if args.channel is not None and args.channel < 0:
        raise S2LError(f"--channel {args.channel}: must be 0 or more (0-based)")
    if args.batch_size < 1:
        raise S2LError(f"--batch-size {args.batch_size}: must be 1 or more")
    if args.tile is not None and (args.tile < PAD_MULTIPLE or args.tile % PAD_MULTIPLE):
        raise S2LError(f"--tile {args.tile}: must be a multiple of {PAD_MULTIPLE} "
                       "(e.g. 256 or 512)")
    if args.overlap is not None and args.overlap < 0:
        raise S2LError(f"--overlap {args.overlap}: must be 0 or more (pixels)")
    out = Path(args.out)
    files = input_files(args.images)
    plans = plan_outputs(files, out, prob=args.prob, rois=args.rois, overwrite=args.overwrite)
    model_path = resolve_model_path(args.model)
    device = select_device(args.device)
    if args.rois:
        try:
            from s2l_tools.io import roi  # noqa: F401 - checked before the model is loaded
        except ImportError as exc:
            raise S2LError(f"--rois: cannot import s2l_tools.io.roi ({exc}); run without "
                           "--rois") from None

    if model_path.suffix.lower() == ".onnx":
        fn, meta = onnx_prob_fn(model_path, device)
    elif model_path.suffix.lower() == ".zip":  # a bioimage.io model package
        from s2l_tools.inference.bioimageio import load_bioimageio

        fn, meta = load_bioimageio(model_path, device=device)
    else:
        model, meta = load_model(model_path, device=device)
        fn = torch_prob_fn(model, device=device, amp=True if args.amp else None)
    if args.tile is not None:
        meta.tile = args.tile
    if args.overlap is not None:
        meta.overlap = args.overlap
    if args.tile is not None and args.overlap is None and meta.overlap >= meta.tile:
        meta.overlap = meta.tile // 4
    if meta.overlap >= meta.tile:
        raise S2LError(f"--overlap {meta.overlap}: must be less than the tile size "
                       f"{meta.tile}; lower --overlap or raise --tile")
    _check_tiling(meta.tile, meta.overlap)
    threshold = meta.threshold if args.threshold is None else args.threshold

    console = Console(stderr=True)
    start = time.perf_counter()
    with Progress(console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task("predicting", total=len(files))
        result = predict_files(
            fn, meta, files, plans, channel=args.channel, threshold=args.threshold,
            min_size=args.min_size, fill_holes=args.fill_holes,
            declump=args.declump, batch_size=args.batch_size, flips=args.flips,
            on_image=lambda path: progress.update(task, advance=1, description=path.name),
            table=table_path(out), gains=args.gains,
        )

    n, k, n_objects = len(result.done), len(result.failed), result.n_objects
    gain_note = ("" if args.gains == (1.0,) else
                 ", gains " + ",".join(f"{g:g}" for g in args.gains) + " averaged")
    if n:
        print(f"s2l-predict: {n} image{'s' if n != 1 else ''}, {n_objects} object"
              f"{'s' if n_objects != 1 else ''} -> {out} (threshold {threshold:g}, "
              f"{device.type}{', 4 flips averaged' if args.flips else ''}{gain_note}, "
              f"{time.perf_counter() - start:.1f} s)")
    if result.unusual:
        print(_unusual_line(result.unusual, meta.train_share_max), file=sys.stderr)
    if result.under:
        print(_under_line(result.under, args.gains), file=sys.stderr)
    if k == 1:
        raise S2LError(result.failed[0][1] + ("" if not n else f" (skipped; the other {n} "
                                              "image(s) are segmented)"))
    if k:
        for _path, reason in result.failed:
            print(f"skipped: {reason}", file=sys.stderr)
        names = first_names([p.name for p, _ in result.failed], 10)
        raise S2LError(f"{k} of {len(files)} images skipped ({names}; reasons above); fix or "
                       "remove them and run again (the results of the others are written)")
    return 0


def _unusual_line(unusual, train_max: float) -> str:
    """The warning about images whose masks cover far more of them than the model's
    training images' did (:func:`s2l_tools.inference.predict.unusual_share`)."""
    n = len(unusual)
    names = first_names([f"{p.name} {share * 100:.0f} %" for p, share in unusual], 5)
    return (f"s2l-predict: warning: {n} image{'s' if n != 1 else ''} called far more cell "
            f"than any training image ({names}; the most on a training image "
            f"{train_max * 100:.0f} %): {'they' if n != 1 else 'it'} may be unlike the images you "
            "scribbled (grainy, dim, another stain); look at the masks, and if they are "
            "wrong, scribble such an image and retrain (s2l-train DATA --out RUN2 --from RUN; "
            "grainy images: --noise-aug 0.05)")


def _under_line(under, gains: tuple[float, ...] = (1.0,)) -> str:
    """The warning about images where the network outlined far more cells than it called
    (:func:`s2l_tools.inference.postprocess.under_called`); predicted at ``gains`` 1 alone,
    it names ``--gains`` too (what mended models of about five images that called dim
    nuclei background: docs/benchmarks.md, "Prediction at several gains")."""
    n = len(under)
    hint = ("; a model trained on about five images: predict again with --gains 1,1.5,2"
            if tuple(gains) == (1.0,) else "")
    return (f"s2l-predict: warning: {n} image{'s' if n != 1 else ''} where the network "
            f"outlined far more cells than it called ({first_names([p.name for p in under], 5)})"
            f": {'their masks' if n != 1 else 'its mask'} may miss cells; look at "
            f"{'them' if n != 1 else 'it'} (--prob shows the faint outlines), and if cells are "
            "missing, scribble such an image and retrain (s2l-train DATA --out RUN2 --from RUN)"
            + hint)


def main(argv=None) -> int:
    """Entry point of ``s2l-predict``; returns the exit status."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

"""``s2l-predict``: segment images with a trained model.

Each image is read as stored (:func:`s2l_tools.io.images.read_raw`), normalised
the way the model was trained (``ModelMeta.normalization``), run through the
network on overlapping tiles (:func:`s2l_tools.inference.tiling.predict_tiled`, tile
size and overlap from the model), and the foreground probability is turned
into instance labels (:func:`s2l_tools.inference.postprocess.instances_from_probability`).

For every input ``<stem>.<ext>`` the tool writes ``OUT/<stem>.tif``
(instance labels: 0 background, 1..N cells; uint16, or int32 beyond 65535
objects) and, on request, ``OUT/<stem>_prob.tif`` (float32 foreground
probability) and ``OUT/<stem>_rois.zip`` (one ImageJ ROI per cell). Inputs are
never overwritten; outputs are written atomically. Options, inputs and the
model are checked before anything is written; the run then stops at the first
image that cannot be read or does not fit the model (the results already
written are complete files).

``RUN_OR_MODEL`` may also be an ``.onnx`` file written by ``s2l-export``; it
then runs in ONNX Runtime (its CUDA provider where available) instead of
torch, loaded by :func:`s2l_tools.inference.onnx.load_session` (the loader and
metadata reader of the CellProfiler module).

The same functions (:func:`predict_probability`, :func:`predict_image`) take
either a torch model or any numpy batch function, e.g. an ONNX Runtime
session's ``run``: the torch and ONNX paths of ``s2l-predict`` share this code.
The CellProfiler module calls :func:`s2l_tools.inference.onnx.segment`,
which runs the same tiling and post-processing modules.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from s2l_tools.cli import _common as _cli
from s2l_tools.training.checkpoint import ModelMeta
from s2l_tools.device import select_device, torch_prob_fn
from s2l_tools.errors import S2LError
from s2l_tools.inference.onnx import PAD_MULTIPLE

__all__ = [
    "select_device",
    "torch_prob_fn",
    "predict_probability",
    "predict_image",
    "get_parser",
    "main",
]

#: suffixes of the files written per image
LABELS_SUFFIX, PROB_SUFFIX, ROIS_SUFFIX = ".tif", "_prob.tif", "_rois.zip"
DESCRIPTION = "s2l-predict instance labels: 0 background, 1..N cells"


# --------------------------------------------------------------------------- prediction
def _check_tiling(tile: int, overlap: int) -> None:
    if tile < PAD_MULTIPLE or tile % PAD_MULTIPLE:
        raise S2LError(f"tile size {tile}: must be a positive multiple of {PAD_MULTIPLE} "
                       "(e.g. --tile 512)")
    if not 0 <= overlap < tile:
        raise S2LError(f"tile overlap {overlap}: must be 0 or more and less than the tile "
                       f"size {tile} (e.g. --overlap 64)")


def predict_probability(
    model_or_fn, image: np.ndarray, meta: ModelMeta, *, device=None, amp=None,
    batch_size: int = 4, progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Foreground probability of a normalised image.

    Parameters
    ----------
    model_or_fn : torch.nn.Module or callable
        A model returning logits (wrapped with :func:`torch_prob_fn`), or a
        function mapping a float32 ``(N, C, h, w)`` batch to ``(N, K, h, w)``
        probabilities (e.g. an ONNX Runtime session's ``run``).
    image : (C, H, W) float32 ndarray
        Normalised as ``meta.normalization`` says (:func:`s2l_tools.io.images.normalize`);
        any ``H``, ``W``.
    meta : ModelMeta
        ``tile`` and ``overlap`` set the tiling; ``in_channels`` is checked.
    device : str or torch.device, optional
        For a model: where to run (None: where it is). Unused for a function.
    amp : optional
        Mixed precision on CUDA, see :func:`torch_prob_fn`.
    batch_size : int, optional
        Tiles per network call.
    progress : callable, optional
        ``progress(done, total)`` in tiles.

    Returns
    -------
    prob : (H, W) float32 ndarray
        Probability of the foreground (the sum of classes 1..K-1; class 1
        for the usual two classes).
    """
    from s2l_tools.inference.tiling import predict_tiled

    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    if image.shape[0] != meta.in_channels:
        raise ValueError(f"image has {image.shape[0]} channel(s), the model takes "
                         f"{meta.in_channels}")
    _check_tiling(int(meta.tile), int(meta.overlap))
    fn = model_or_fn
    if not _is_module(model_or_fn):
        if not callable(model_or_fn):
            raise TypeError("model_or_fn must be a torch.nn.Module or a callable")
    else:
        fn = torch_prob_fn(model_or_fn, device=device, amp=amp)
    prob = predict_tiled(fn, image.astype(np.float32, copy=False), tile=int(meta.tile),
                         overlap=int(meta.overlap), batch_size=batch_size,
                         pad_multiple=PAD_MULTIPLE, progress=progress)
    fg = prob[1] if prob.shape[0] == 2 else prob[1:].sum(0)
    return np.ascontiguousarray(fg, dtype=np.float32)


def _is_module(obj) -> bool:
    if "torch" not in sys.modules:
        return False
    import torch

    return isinstance(obj, torch.nn.Module)


def predict_image(
    model_or_fn, image: np.ndarray, meta: ModelMeta, *, device=None, amp=None,
    threshold: float | None = None, min_size: int | None = None, fill_holes: bool = True,
    declump: str = "none", batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels (and the probability) of a normalised image.

    Parameters
    ----------
    model_or_fn, image, meta, device, amp, batch_size, progress
        As in :func:`predict_probability`.
    threshold : float, optional
        Foreground where ``prob > threshold``; None: ``meta.threshold``.
    min_size : int, optional
        Smallest object kept, in pixels; None: ``meta.min_size``.
    fill_holes : bool, optional
        Fill holes inside each object.
    declump : {'none', 'watershed'}, optional
        Split touching cells with a distance-transform watershed.

    Returns
    -------
    labels : (H, W) int32 ndarray
        0 background, cells 1..N.
    prob : (H, W) float32 ndarray
        Foreground probability.
    """
    from s2l_tools.inference.postprocess import instances_from_probability

    prob = predict_probability(model_or_fn, image, meta, device=device, amp=amp,
                               batch_size=batch_size, progress=progress)
    labels = instances_from_probability(
        prob,
        threshold=float(meta.threshold if threshold is None else threshold),
        min_size=int(meta.min_size if min_size is None else min_size),
        fill_holes=fill_holes,
        declump=declump,
    )
    return labels, prob


# --------------------------------------------------------------------------- CLI
def get_parser():
    parser = _cli.make_parser(
        "s2l-predict",
        "Segment images with a model trained by s2l-train: writes OUT/<stem>.tif "
        "(instance labels, 0 = background), optionally <stem>_prob.tif (foreground "
        "probability) and <stem>_rois.zip (ImageJ ROIs, one per cell).",
        "  s2l-predict runs/exp1 data/new_images --out predictions --rois\n"
        "  s2l-predict runs/exp1/model.pt cell.tif --out pred --threshold 0.6 --watershed",
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
    parser.add_argument("--watershed", action="store_true",
                        help="split touching cells (distance-transform watershed)")
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
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision: bf16/fp16 on a GPU; bf16 on a CPU that has it natively "
                             "(AVX512-BF16/AMX; ~1.8x faster there). Probabilities differ by "
                             "up to ~1e-2")
    return parser


def _input_files(images: Path) -> list[Path]:
    from s2l_tools.io.images import list_images

    if images.is_dir():
        files = list_images(images)
        if not files:
            raise S2LError(f"{images}: no images (.tif, .tiff, .png, .jpg) in this folder; "
                           "check the IMAGES path")
        return files
    if images.is_file():
        return [images]
    raise S2LError(f"{images}: no such image file or folder; check the IMAGES path")


def _plan_outputs(files: list[Path], out: Path, *, prob: bool, rois: bool) -> list[dict]:
    """Output paths per input; refuse name clashes and writing over an input."""
    from s2l_tools.io.images import image_stem

    if out.exists() and not out.is_dir():
        raise S2LError(f"--out {out}: exists and is not a folder; give a folder for the results")
    inputs = {p.resolve(): p for p in files}
    seen: dict[str, Path] = {}
    plans = []
    for path in files:
        stem = image_stem(path)
        if stem in seen:
            raise S2LError(f"{path}: same name as {seen[stem].name}, so both would be written "
                           f"to {stem}{LABELS_SUFFIX}; rename one of them")
        seen[stem] = path
        plan = {"labels": out / f"{stem}{LABELS_SUFFIX}"}
        if prob:
            plan["prob"] = out / f"{stem}{PROB_SUFFIX}"
        if rois:
            plan["rois"] = out / f"{stem}{ROIS_SUFFIX}"
        for target in plan.values():
            clash = inputs.get(target.resolve())
            if clash is not None:
                raise S2LError(f"{clash}: --out {out} would overwrite this input image with "
                               f"the results for {path.name}; choose another --out folder")
        plans.append(plan)
    return plans


def _onnx_prob_fn(path: Path, device):
    """A batch function and the ModelMeta of a model exported by ``s2l-export``."""
    from s2l_tools.inference.onnx import load_session, model_meta

    # on a GPU: CUDA where onnxruntime offers it (load_session's default), else the CPU
    session = load_session(path, providers=None if device.type == "cuda"
                           else ["CPUExecutionProvider"])
    info = model_meta(session)
    input_name, output_name = info["input"], info["output"]

    def fn(batch: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: batch})[0]

    return fn, ModelMeta.from_dict(info)


def _label_dtype(labels: np.ndarray) -> np.ndarray:
    """uint16 when it fits (Fiji opens it as 16-bit), else int32."""
    if labels.size == 0 or int(labels.max()) <= np.iinfo(np.uint16).max:
        return labels.astype(np.uint16)
    return labels.astype(np.int32)


def _main(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from s2l_tools.training.checkpoint import load_model, resolve_model_path
    from s2l_tools.io.images import normalize, read_raw, write_tiff

    # validate the options, the inputs and the outputs before loading anything heavy
    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        raise S2LError(f"--threshold {args.threshold:g}: must be in [0, 1) (a probability; "
                       "0.5 is the usual choice)")
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
    images, out = Path(args.images), Path(args.out)
    files = _input_files(images)
    plans = _plan_outputs(files, out, prob=args.prob, rois=args.rois)
    model_path = resolve_model_path(args.model)
    device = select_device(args.device)
    roi_module = None
    if args.rois:
        try:
            from s2l_tools.io import roi as roi_module
        except ImportError as exc:
            raise S2LError(f"--rois: cannot import s2l_tools.io.roi ({exc}); run without "
                           "--rois") from None

    if model_path.suffix.lower() == ".onnx":
        fn, meta = _onnx_prob_fn(model_path, device)
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
    channel = args.channel if args.channel is not None else meta.channel
    norm = dict(meta.normalization or {})
    norm_kw = {"method": norm.get("method", "percentile")}
    for key in ("low", "high"):
        if key in norm:
            norm_kw[key] = float(norm[key])
    threshold = meta.threshold if args.threshold is None else args.threshold
    min_size = meta.min_size if args.min_size is None else args.min_size

    console = Console(stderr=True)
    n_objects, start = 0, time.perf_counter()
    with Progress(console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task("predicting", total=len(files))
        for path, plan in zip(files, plans):
            progress.update(task, description=path.name)
            raw = read_raw(path, channel=channel)
            if raw.shape[0] != meta.in_channels:
                raise S2LError(
                    f"{path}: {raw.shape[0]} channel(s), but the model was trained on "
                    f"{meta.in_channels}; pick the channel with --channel N or train a model "
                    f"on {raw.shape[0]}-channel images"
                )
            image = normalize(raw, **norm_kw, source=str(path))
            labels, prob = predict_image(
                fn, image, meta, threshold=threshold, min_size=min_size,
                fill_holes=args.fill_holes,
                declump="watershed" if args.watershed else "none",
                batch_size=args.batch_size,
            )
            write_tiff(plan["labels"], _label_dtype(labels), description=DESCRIPTION)
            if "prob" in plan:
                write_tiff(plan["prob"], prob.astype(np.float32),
                           description="s2l-predict foreground probability")
            if "rois" in plan:
                roi_module.labels_to_roiset(labels, plan["rois"], name_prefix="cell")
            n_objects += int(labels.max())
            progress.advance(task)

    n = len(files)
    print(f"s2l-predict: {n} image{'s' if n != 1 else ''}, {n_objects} object"
          f"{'s' if n_objects != 1 else ''} -> {out} (threshold {threshold:g}, "
          f"{device.type}, {time.perf_counter() - start:.1f} s)")
    return 0


def main(argv=None) -> int:
    """``s2l-predict``: segment images with a trained model."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

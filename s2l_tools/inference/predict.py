"""``s2l-predict``: segment images with a trained model.

Each image is read as stored (:func:`s2l_tools.io.images.read_raw`), normalised
the way the model was trained (``ModelMeta.normalization``), run through the
network on overlapping tiles (:func:`s2l_tools.inference.tiling.predict_tiled`, tile
size and overlap from the model), and the foreground probability is turned
into instance labels (:func:`s2l_tools.inference.postprocess.instances_from_probability`).

For every input ``<stem>.<ext>`` the tool writes ``OUT/<stem>.tif``
(instance labels: 0 background, 1..N cells; uint16, or int32 beyond 65535
objects) and, on request, ``OUT/<stem>_prob.tif`` (float32 foreground
probability) and ``OUT/<stem>_rois.zip`` (one ImageJ ROI per cell), and after the
last image ``OUT/predictions.csv``, a row per image (:func:`write_table`). Inputs are
never overwritten, and neither are files in ``OUT`` that ``s2l-predict`` did
not write (unless ``overwrite``); outputs are written atomically. Options,
inputs, outputs and the model are checked before anything is written; an image
that then cannot be read or does not fit the model is skipped and reported
(:func:`predict_files`), and the others are segmented.

``RUN_OR_MODEL`` may also be an ``.onnx`` file written by ``s2l-export``; it
then runs in ONNX Runtime (its CUDA provider where available) instead of
torch, loaded by :func:`s2l_tools.inference.onnx.load_session` (the loader and
metadata reader of the CellProfiler module).

The same functions (:func:`predict_probability`, :func:`predict_image`) take
either a torch model or any numpy batch function, e.g. an ONNX Runtime
session's ``run``: the torch and ONNX paths of ``s2l-predict`` share this code,
and so do training's EMA ensemble pass and validation
(:mod:`s2l_tools.training.engine`) and ``benchmarks/accuracy.py``.
The CellProfiler module calls :func:`s2l_tools.inference.onnx.segment`,
which runs the same tiling and post-processing modules.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from s2l_tools.training.checkpoint import ModelMeta
from s2l_tools.device import select_device, torch_prob_fn
from s2l_tools.errors import S2LError
from s2l_tools.inference.onnx import PAD_MULTIPLE, mask_share, tiling_problem, unusual_limit
from s2l_tools.inference.postprocess import DEFAULT_DECLUMP, under_called

__all__ = [
    "select_device",
    "torch_prob_fn",
    "predict_probability",
    "predict_image",
    "input_files",
    "plan_outputs",
    "onnx_prob_fn",
    "label_dtype",
    "predict_files",
    "FilesResult",
    "unusual_share",
    "table_path",
    "write_table",
]

#: suffixes of the files written per image
LABELS_SUFFIX, PROB_SUFFIX, ROIS_SUFFIX = ".tif", "_prob.tif", "_rois.zip"
DESCRIPTION = "s2l-predict instance labels: 0 background, 1..N cells"
PROB_DESCRIPTION = "s2l-predict foreground probability"
#: the per-image table written beside the labels (:func:`write_table`), and its columns
TABLE_NAME = "predictions.csv"
TABLE_COLUMNS = ("image", "labels", "objects", "foreground_share", "unusual", "under_called",
                 "error")
#: the table's header before ``under_called`` (an older s2l-predict's, still ours to replace)
_OLD_COLUMNS = ("image", "labels", "objects", "foreground_share", "unusual", "error")


# --------------------------------------------------------------------------- prediction
def _check_tiling(tile: int, overlap: int) -> None:
    if (why := tiling_problem(tile, overlap)):
        raise S2LError(why)


def predict_probability(
    model_or_fn, image: np.ndarray, meta: ModelMeta, *, device=None, amp=None,
    batch_size: int = 4, flips: bool = False,
    progress: Callable[[int, int], None] | None = None, scale: float | None = None,
    gains: Sequence[float] = (1.0,),
) -> np.ndarray:
    """Foreground probability of a normalised image.

    Parameters
    ----------
    model_or_fn : torch.nn.Module or callable
        A model returning logits (wrapped with :func:`torch_prob_fn`: it runs in
        eval mode, and a model in training mode is put back into it after), or a
        function mapping a float32 ``(N, C, h, w)`` batch to ``(N, K, h, w)``
        probabilities (e.g. an ONNX Runtime session's ``run``).
    image : (C, H, W) float32 ndarray
        Normalised as ``meta.normalization`` says (:func:`s2l_tools.io.images.normalize`);
        any ``H``, ``W``.
    meta : ModelMeta
        ``tile`` and ``overlap`` set the tiling; ``in_channels`` is checked; a
        ``diameter`` resizes the image so its objects have that diameter
        (:func:`s2l_tools.inference.postprocess.at_diameter`: two passes).
    device : str or torch.device, optional
        For a model: where to run (None: where it is). Unused for a function.
    amp : optional
        Mixed precision on CUDA, see :func:`torch_prob_fn`.
    batch_size : int, optional
        Tiles per network call.
    flips : bool, optional
        Average the prediction over the image's four flips (test-time
        augmentation, :func:`s2l_tools.inference.tiling.flip_averaged`): four
        times the network calls for a slightly better map. ``s2l-predict``
        and the CellProfiler module do this by default.
    progress : callable, optional
        ``progress(done, total)`` in tiles; with a ``diameter`` the second pass's
        tiles count on from the first's (the total grows when it starts).
    scale : float, optional
        With a ``diameter``: the factor to resize the image by, instead of a first
        pass's estimate: one pass (for an image a run trained on, the ``scale`` its
        ``inputs.json`` records). Ignored without a ``diameter``.
    gains : sequence of float, optional
        Average the prediction over the normalised image multiplied by each gain
        (test-time intensity augmentation; each gain one more prediction, with its own
        ``diameter`` first pass). ``(1, 1.5, 2)`` mends models trained on a handful of
        images that call dim nuclei background; with 40 training images it costs
        (docs/benchmarks.md, "Prediction at several gains"). ``(1,)``: the image as it is.

    Returns
    -------
    prob : (H, W) float32 ndarray
        Probability of the foreground (the sum of classes 1..K-1; class 1
        for the usual two classes).
    """
    from s2l_tools.inference.tiling import PassProgress, gain_averaged, predict_tiled

    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    if image.shape[0] != meta.in_channels:
        raise ValueError(f"image has {image.shape[0]} channel(s), the model takes "
                         f"{meta.in_channels}")
    _check_tiling(int(meta.tile), int(meta.overlap))
    fn = model_or_fn
    was_training = None
    if not _is_module(model_or_fn):
        if not callable(model_or_fn):
            raise TypeError("model_or_fn must be a torch.nn.Module or a callable")
    else:
        was_training = model_or_fn.training  # a model in training goes back to training
        fn = torch_prob_fn(model_or_fn, device=device, amp=amp)

    passes = PassProgress(progress)  # with a diameter the second pass counts on

    def foreground(im: np.ndarray) -> np.ndarray:
        prob = predict_tiled(fn, im.astype(np.float32, copy=False), tile=int(meta.tile),
                             overlap=int(meta.overlap), batch_size=batch_size,
                             pad_multiple=PAD_MULTIPLE, flips=flips,
                             progress=passes.next_pass())
        fg = prob[1] if prob.shape[0] == 2 else prob[1:].sum(0)
        return np.ascontiguousarray(fg, dtype=np.float32)

    def one(im: np.ndarray) -> np.ndarray:
        if float(meta.diameter or 0) > 0:  # a first pass finds the scale, a second predicts
            from s2l_tools.inference.postprocess import at_diameter

            return at_diameter(foreground, im, float(meta.diameter), scale=scale)[0]
        return foreground(im)

    try:
        return gain_averaged(one, image, gains)
    finally:
        if was_training:
            model_or_fn.train()


def _is_module(obj) -> bool:
    if "torch" not in sys.modules:
        return False
    import torch

    return isinstance(obj, torch.nn.Module)


def predict_image(
    model_or_fn, image: np.ndarray, meta: ModelMeta, *, device=None, amp=None,
    threshold: float | None = None, min_size: int | None = None, fill_holes: bool = True,
    declump: str = DEFAULT_DECLUMP, batch_size: int = 4, flips: bool = False,
    progress: Callable[[int, int], None] | None = None, gains: Sequence[float] = (1.0,),
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels (and the probability) of a normalised image.

    Parameters
    ----------
    model_or_fn, image, meta, device, amp, batch_size, flips, progress, gains
        As in :func:`predict_probability`.
    threshold : float, optional
        Foreground where ``prob > threshold``; None: ``meta.threshold``.
    min_size : int, optional
        Smallest object kept, in pixels; None: ``meta.min_size``.
    fill_holes : bool, optional
        Fill holes inside each object.
    declump : {'watershed', 'none'}, optional
        Split touching cells with a distance-transform watershed (the
        default, :data:`s2l_tools.inference.postprocess.DEFAULT_DECLUMP`) or not.

    Returns
    -------
    labels : (H, W) int32 ndarray
        0 background, cells 1..N.
    prob : (H, W) float32 ndarray
        Foreground probability.
    """
    from s2l_tools.inference.postprocess import instances_from_probability

    prob = predict_probability(model_or_fn, image, meta, device=device, amp=amp,
                               batch_size=batch_size, flips=flips, progress=progress,
                               gains=gains)
    labels = instances_from_probability(
        prob,
        threshold=float(meta.threshold if threshold is None else threshold),
        min_size=int(meta.min_size if min_size is None else min_size),
        fill_holes=fill_holes,
        declump=declump,
    )
    return labels, prob


# --------------------------------------------------------------------------- files
def input_files(images: str | os.PathLike) -> list[Path]:
    """The image files to segment: ``images`` itself, or the images in that folder.

    Raises
    ------
    S2LError
        No such file or folder, or a folder without images.
    """
    from s2l_tools.io.images import list_images

    images = Path(images)
    if images.is_dir():
        files = list_images(images)
        if not files:
            raise S2LError(f"{images}: no images (.tif, .tiff, .png, .jpg) in this folder; "
                           "check the IMAGES path")
        return files
    if images.is_file():
        return [images]
    raise S2LError(f"{images}: no such image file or folder; check the IMAGES path")


def table_path(out: str | os.PathLike) -> Path:
    """The per-image table of an output folder: ``OUT/predictions.csv``."""
    return Path(out) / TABLE_NAME


def write_table(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write the per-image table atomically: one row per image, in input order.

    Columns (:data:`TABLE_COLUMNS`): the input's file name, the labels file written, the
    number of objects, the share of the image inside them, ``unusual`` (1 over
    :func:`unusual_share`, 0 under it, empty for a model without the record),
    ``under_called`` (1 where :func:`s2l_tools.inference.postprocess.under_called` names
    the image: the network outlined far more cells than it called) and, for an image that
    was skipped, the reason (the other columns empty).
    """
    from s2l_tools.io.atomic import write_csv_atomic

    write_csv_atomic(path, TABLE_COLUMNS, ({k: row.get(k, "") for k in TABLE_COLUMNS}
                                           for row in rows), lineterminator="\n")


def _ours(path: Path) -> bool:
    """Whether an existing output was written by ``s2l-predict`` (ours to replace)."""
    import re
    import zipfile

    if path.name == TABLE_NAME:  # the table: its header line is ours
        try:
            with open(path, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n") in (",".join(TABLE_COLUMNS),
                                                        ",".join(_OLD_COLUMNS))
        except (OSError, UnicodeDecodeError):
            return False

    if path.suffix.lower() == ".zip":  # ROI sets: only members named cell-<n>[-<k>].roi
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return False
        return all(re.fullmatch(r"cell-\d+(-\d+)?\.roi", n) for n in names)
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            desc = tif.pages[0].description or ""
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return desc.startswith("s2l-predict")


def plan_outputs(files: list[Path], out: str | os.PathLike, *, prob: bool = False,
                 rois: bool = False, overwrite: bool = False) -> list[dict[str, Path]]:
    """Output paths per input image, checked before anything is written.

    Parameters
    ----------
    files : list of Path
        The inputs (:func:`input_files`).
    out : path-like
        Output folder (need not exist).
    prob, rois : bool
        Also plan ``<stem>_prob.tif`` / ``<stem>_rois.zip``.
    overwrite : bool
        Allow replacing existing files that ``s2l-predict`` did not write
        (its own earlier results are always replaced).

    Returns
    -------
    plans : list of dict
        Per input: ``{"labels": path[, "prob": path][, "rois": path]}``.

    Raises
    ------
    S2LError
        ``out`` is a file, two inputs share a name, an output would replace
        an input image, or (without ``overwrite``) a file not written by
        ``s2l-predict``, or a folder, is in the way.
    """
    from s2l_tools.io.images import image_stem

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise S2LError(f"--out {out}: exists and is not a folder; give a folder for the results")
    inputs = {p.resolve(): p for p in files}
    seen: dict[str, Path] = {}
    plans, foreign = [], []
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
            if target.is_dir():
                raise S2LError(f"{target}: a folder is in the way of the results for "
                               f"{path.name}; move it away or choose another --out folder")
            if target.exists() and not overwrite and not _ours(target):
                foreign.append(target)
        plans.append(plan)
    table = table_path(out)
    if table.is_dir():
        raise S2LError(f"{table}: a folder is in the way of the per-image table; move it away "
                       "or choose another --out folder")
    if table.exists() and not overwrite and not _ours(table):
        foreign.append(table)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise S2LError(f"{foreign[0]}: exists and was not written by s2l-predict{more}; pass "
                       "--overwrite to replace such files, or choose another --out folder")
    return plans


def onnx_prob_fn(path: str | os.PathLike, device) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                           ModelMeta]:
    """A batch function and the :class:`ModelMeta` of a model exported by ``s2l-export``.

    Parameters
    ----------
    path : path-like
        The ``.onnx`` file.
    device : torch.device
        ``cuda``: ONNX Runtime's CUDA provider where offered; else the CPU.
    """
    from s2l_tools.inference.onnx import load_session, model_meta

    # on a GPU: CUDA where onnxruntime offers it (load_session's default), else the CPU
    session = load_session(path, providers=None if device.type == "cuda"
                           else ["CPUExecutionProvider"])
    info = model_meta(session)
    input_name, output_name = info["input"], info["output"]

    def fn(batch: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: batch})[0]

    return fn, ModelMeta.from_dict(info)


def label_dtype(labels: np.ndarray) -> np.ndarray:
    """uint16 when it fits (Fiji opens it as 16-bit), else int32."""
    if labels.size == 0 or int(labels.max()) <= np.iinfo(np.uint16).max:
        return labels.astype(np.uint16)
    return labels.astype(np.int32)


def unusual_share(meta: ModelMeta) -> float | None:
    """The share of an image's pixels in its mask above which :func:`predict_files` names
    the image as unlike the model's training images, or None (not measured in training):
    :func:`s2l_tools.inference.onnx.unusual_limit` of ``meta.train_share_max``.

    Examples
    --------
    >>> unusual_share(ModelMeta(train_share_max=0.3)), unusual_share(ModelMeta())
    (0.45, None)
    """
    return unusual_limit(meta.train_share_max)


class FilesResult(NamedTuple):
    """What :func:`predict_files` did."""

    done: list[Path]
    failed: list[tuple[Path, str]]
    n_objects: int
    #: (path, share of its pixels in the mask) of the images over :func:`unusual_share`
    unusual: tuple = ()
    #: the images :func:`s2l_tools.inference.postprocess.under_called` names (the network
    #: outlined far more cells than it called)
    under: tuple = ()


def predict_files(
    model_or_fn, meta: ModelMeta, files: list[Path], plans: list[dict[str, Path]], *,
    channel: int | None = None, threshold: float | None = None, min_size: int | None = None,
    fill_holes: bool = True, declump: str = DEFAULT_DECLUMP, batch_size: int = 4, device=None,
    amp=None, flips: bool = False, on_image: Callable[[Path], None] | None = None,
    table: str | os.PathLike | None = None, gains: Sequence[float] = (1.0,),
) -> FilesResult:
    """Segment image files and write the planned outputs, going on past bad images.

    Each image is read (:func:`s2l_tools.io.images.read_raw`), checked against
    the model's channels, normalised as ``meta.normalization`` says and
    segmented (:func:`predict_image`); its outputs are written atomically. An
    image that cannot be read or does not fit the model is recorded in
    ``failed`` and the next one is done.

    Parameters
    ----------
    model_or_fn, meta, threshold, min_size, fill_holes, declump, batch_size, device, amp
        As in :func:`predict_image`.
    flips, gains
        As in :func:`predict_image`.
    files, plans : list
        Inputs and their outputs (:func:`input_files`, :func:`plan_outputs`).
    channel : int, optional
        Channel to segment (None: ``meta.channel``).
    on_image : callable, optional
        Called with each input path when it is done (or failed).
    table : path-like, optional
        Where to write the per-image table (:func:`write_table`; ``s2l-predict``:
        :func:`table_path` of its output folder), after the last image, unless no image
        was segmented.

    Returns
    -------
    FilesResult
        ``done`` and ``failed`` (path, one-line reason) inputs, the number of
        objects found, and the images whose masks cover more than
        :func:`unusual_share` of them (path, share).
    """
    from s2l_tools.io.images import normalize, read_raw, write_tiff

    channel = meta.channel if channel is None else channel
    norm = dict(meta.normalization or {})
    norm_kw = {"method": norm.get("method", "percentile")}
    for key in ("low", "high"):
        if key in norm:
            norm_kw[key] = float(norm[key])
    roi_module = None
    if any("rois" in plan for plan in plans):
        from s2l_tools.io import roi as roi_module
    done, failed, n_objects, unusual, under, rows = [], [], 0, [], [], []
    limit = unusual_share(meta)
    for path, plan in zip(files, plans):
        try:
            raw = read_raw(path, channel=channel)
            if raw.shape[0] != meta.in_channels:
                raise S2LError(
                    f"{path}: {raw.shape[0]} channel(s), but the model was trained on "
                    f"{meta.in_channels}; pick the channel with --channel N or train a model "
                    f"on {raw.shape[0]}-channel images"
                )
            image = normalize(raw, **norm_kw, source=str(path))
        except S2LError as exc:
            failed.append((path, str(exc)))
            rows.append({"image": path.name, "error": str(exc)})
            if on_image is not None:
                on_image(path)
            continue
        labels, prob = predict_image(
            model_or_fn, image, meta, device=device, amp=amp, threshold=threshold,
            min_size=min_size, fill_holes=fill_holes, declump=declump, batch_size=batch_size,
            flips=flips, gains=gains,
        )
        write_tiff(plan["labels"], label_dtype(labels), description=DESCRIPTION)
        if "prob" in plan:
            write_tiff(plan["prob"], prob.astype(np.float32), description=PROB_DESCRIPTION)
        if "rois" in plan:
            roi_module.labels_to_roiset(labels, plan["rois"], name_prefix="cell")
        objects = int(labels.max()) if labels.size else 0
        n_objects += objects
        share = mask_share(labels)
        over = limit is not None and share > limit
        if over:
            unusual.append((path, share))
        missed = under_called(prob, float(meta.threshold if threshold is None else threshold))
        if missed:
            under.append(path)
        rows.append({"image": path.name, "labels": plan["labels"].name,
                     "objects": objects,
                     "foreground_share": f"{share:.6f}",
                     "unusual": "" if limit is None else int(over),
                     "under_called": int(missed)})
        done.append(path)
        if on_image is not None:
            on_image(path)
    if table is not None and done:  # when every image failed, nothing is written
        write_table(table, rows)
    return FilesResult(done, failed, n_objects, tuple(unusual), tuple(under))


# names of before the public ones (kept for code that imported them)
_input_files, _plan_outputs, _onnx_prob_fn, _label_dtype = (
    input_files, plan_outputs, onnx_prob_fn, label_dtype)

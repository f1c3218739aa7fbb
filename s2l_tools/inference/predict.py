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
session's ``run``: the torch and ONNX paths of ``s2l-predict`` share this code,
and so do training's EMA ensemble pass and validation
(:mod:`s2l_tools.training.engine`) and ``benchmarks/accuracy.py``.
The CellProfiler module calls :func:`s2l_tools.inference.onnx.segment`,
which runs the same tiling and post-processing modules.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from s2l_tools.training.checkpoint import ModelMeta
from s2l_tools.device import select_device, torch_prob_fn
from s2l_tools.errors import S2LError
from s2l_tools.inference.onnx import PAD_MULTIPLE

__all__ = [
    "select_device",
    "torch_prob_fn",
    "predict_probability",
    "predict_image",
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
        A model returning logits (wrapped with :func:`torch_prob_fn`: it runs in
        eval mode, and a model in training mode is put back into it after), or a
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
    was_training = None
    if not _is_module(model_or_fn):
        if not callable(model_or_fn):
            raise TypeError("model_or_fn must be a torch.nn.Module or a callable")
    else:
        was_training = model_or_fn.training  # a model in training goes back to training
        fn = torch_prob_fn(model_or_fn, device=device, amp=amp)
    try:
        prob = predict_tiled(fn, image.astype(np.float32, copy=False), tile=int(meta.tile),
                             overlap=int(meta.overlap), batch_size=batch_size,
                             pad_multiple=PAD_MULTIPLE, progress=progress)
    finally:
        if was_training:
            model_or_fn.train()
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


# --------------------------------------------------------------------------- files
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

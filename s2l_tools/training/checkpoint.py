"""Checkpoints (to resume training) and model bundles (to predict and export).

Both are plain dicts of tensors, numbers and strings saved with
``torch.save`` and loaded with ``torch.load(weights_only=True)``: loading one
never runs code from the file. Writes are atomic.

A *checkpoint* (``RUN/checkpoint.pt``) holds everything training needs to
continue exactly: model, optimiser, scheduler, grad scaler, EMA store, RNG
state, config and the number of finished epochs.

A *model bundle* (``RUN/model.pt``) holds what inference needs: the weights
and :class:`ModelMeta` (encoder, channels, normalisation, tile size,
suggested threshold, s2l-tools version).

Where these files lie in a run folder, and their names, is
:mod:`s2l_tools.training.rundir`'s business.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from s2l_tools import __version__
from s2l_tools.io.atomic import atomic_path
from s2l_tools.errors import S2LError
from s2l_tools.inference.onnx import meta_problem

CHECKPOINT_FORMAT = "s2l-tools-checkpoint"
MODEL_FORMAT = "s2l-tools-model"
#: 2: a model with a ``diameter`` (ModelMeta; older versions would predict it at the wrong
#: scale, so they refuse it); checkpoints and models without one are written as 1
FORMAT_VERSION = 2
#: the smallest object kept by default (pixels). DSB2018's nuclei annotations have 10-13 %
#: of their nuclei under 64 px (the default until 2026-12-03, which deleted them) and 2-3 %
#: under 32: on the val splits 32 gains on fluo and H&E (docs/benchmarks.md, "The smallest
#: object kept"). Model files keep the size they were saved with.
DEFAULT_MIN_SIZE = 32


@dataclass
class ModelMeta:
    """What a trained model needs at inference time."""

    encoder: str = "resnet34"
    in_channels: int = 1
    classes: int = 2
    normalization: dict = field(default_factory=lambda: {"method": "percentile", "low": 1.0,
                                                         "high": 99.8})
    channel: int | None = None
    tile: int = 1024
    overlap: int = 128
    threshold: float = 0.5
    min_size: int = DEFAULT_MIN_SIZE
    #: the median object diameter (pixels) the model was trained at (s2l-train --diameter):
    #: prediction resizes each image so (s2l_tools.inference.postprocess.at_diameter);
    #: 0: images at their own scale
    diameter: float = 0.0
    #: the largest share of one training image's pixels the network gave a foreground
    #: probability of the saved threshold or more, measured by ``s2l-train
    #: --auto-threshold`` (None: not measured): s2l-predict and the CellProfiler module
    #: name the images whose masks cover far more (s2l_tools.inference.onnx.unusual_limit)
    train_share_max: float | None = None
    s2l_version: str = __version__

    @classmethod
    def from_dict(cls, d: dict) -> ModelMeta:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def problem(self) -> str | None:
        """What is wrong with these values (a damaged file's metadata), or None
        (:func:`s2l_tools.inference.onnx.meta_problem`, the exported model's check too)."""
        return meta_problem(asdict(self), python=True)


def _save(obj: dict, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load(path: str | os.PathLike, expected: str, what: str) -> dict:
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise S2LError(f"{path}: no such {what} file; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError,
            IndexError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise S2LError(
            f"{path}: not an s2l-tools {what} ({first[:120]}); give a file written by "
            "s2l-train (RUN/model.pt or RUN/checkpoint.pt)"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") not in (CHECKPOINT_FORMAT, MODEL_FORMAT):
        raise S2LError(
            f"{path}: not an s2l-tools {what} (no s2l-tools format tag); give a file "
            "written by s2l-train (RUN/model.pt or RUN/checkpoint.pt)"
        )
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise S2LError(f"{path}: written by a newer s2l-tools (format "
                       f"{obj.get('format_version')}); upgrade s2l-tools")
    if expected == CHECKPOINT_FORMAT and obj["format"] != CHECKPOINT_FORMAT:
        raise S2LError(f"{path}: a model bundle, not a training checkpoint; resume from "
                       "RUN/checkpoint.pt")
    return obj


def _format_version(meta: dict) -> int:
    """The version a file with this metadata is written as: the newest only where it
    needs it (a ``diameter``), so that older s2l-tools still read the others."""
    return FORMAT_VERSION if meta.get("diameter") else 1


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Atomically save a training checkpoint (see module docstring)."""
    _save({"format": CHECKPOINT_FORMAT,
           "format_version": _format_version(state.get("meta") or {}), **state}, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training checkpoint safely (``weights_only=True``)."""
    return _load(path, CHECKPOINT_FORMAT, "checkpoint")


def save_model(path: str | os.PathLike, state_dict: dict, meta: ModelMeta) -> None:
    """Atomically save a model bundle: weights + :class:`ModelMeta`."""
    _save({"format": MODEL_FORMAT, "format_version": _format_version(asdict(meta)),
           "state_dict": state_dict, "meta": asdict(meta)}, path)


def load_model(path: str | os.PathLike, *, device="cpu"):
    """Load a model bundle (or a checkpoint, or a run folder) for inference.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on ``device``.
    meta : ModelMeta
    """
    from s2l_tools.training.model import build_model
    from s2l_tools.training.rundir import resolve_model_path  # rundir imports this module

    path = resolve_model_path(path)
    obj = _load(path, MODEL_FORMAT, "model")
    weights_key = "model" if obj["format"] == CHECKPOINT_FORMAT else "state_dict"
    state_dict, meta_d = obj.get(weights_key), obj.get("meta")
    damaged = f"{path}: damaged s2l-tools {obj['format'].rsplit('-', 1)[-1]} file"
    fix = "train again or take another copy of the run's model.pt"
    if not isinstance(state_dict, dict):
        raise S2LError(f"{damaged} (no weights); {fix}")
    if not isinstance(meta_d, dict):
        raise S2LError(f"{damaged} (no model metadata); {fix}")
    try:
        meta = ModelMeta.from_dict(meta_d)
    except TypeError as exc:  # a required field missing
        raise S2LError(f"{damaged} (metadata: {exc}); {fix}") from None
    problem = meta.problem()
    if problem:
        raise S2LError(f"{damaged} (metadata: {problem}); {fix}")
    try:
        model = build_model(encoder=meta.encoder, in_channels=meta.in_channels,
                            classes=meta.classes)
    except S2LError as exc:
        raise S2LError(f"{path}: {exc}") from None
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise S2LError(f"{path}: weights do not fit a {meta.encoder} U-Net "
                       f"({str(exc).splitlines()[0][:100]}); the file is damaged") from None
    return model.to(device).eval(), meta

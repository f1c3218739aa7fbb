"""Exported ONNX models: the file format, reading it, and segmentation with it.

This module owns the ONNX format that ``s2l-export`` writes (the tensor names,
the ``metadata_props`` keys, :data:`PAD_MULTIPLE`), the one reader of its
metadata (:func:`read_meta`, :func:`meta_from_props`) and the one ONNX Runtime
session loader (:func:`load_session`: cached per file version, CPU threads from
``S2L_ORT_THREADS``, a CUDA memory arena that grows only as needed). Every
front end uses them: ``s2l-export`` writes the keys defined here,
``s2l-predict`` loads ``.onnx`` models with :func:`load_session` and runs the
session through :func:`s2l_tools.inference.predict.predict_image`, and the CellProfiler
module (``cellprofiler_plugin/runscribble2label.py``) calls :func:`segment`.
:func:`segment` does what ``predict_image`` does after percentile
normalisation (as stored in the model): tiled prediction with smooth blending
(:mod:`s2l_tools.inference.tiling`) and instance labels from the foreground probability
(:mod:`s2l_tools.inference.postprocess`), with the same two modules.

This module runs inside CellProfiler 4.2's own Python 3.9 (numpy 1.23,
scipy 1.9, onnxruntime 1.19, no torch). It therefore imports only numpy, the
standard library, the two modules above (:mod:`~s2l_tools.inference.postprocess`
lazily, in :func:`segment`, so that reading a model's metadata stays cheap)
and onnxruntime (lazily, in :func:`load_session`), and avoids Python
3.10-only runtime syntax. User errors are :class:`ValueError`; a model that
cannot be loaded raises :class:`ModelLoadError`, a ValueError that inside
s2l-tools is also an :class:`~s2l_tools.errors.S2LError` (the command-line
tools print it as one line). ``s2l-cellprofiler install`` copies this module
next to the plugin as ``_s2l_onnx_inference.py``, with ``_s2l_tiling.py`` and
``_s2l_postprocess.py``; the imports below work in both layouts.

The model's metadata (``s2l.meta`` in the ONNX file's ``metadata_props``,
written by ``s2l-export``) is read by :func:`read_meta` without onnxruntime or
the ``onnx`` package, skipping over the weights: cheap enough for
CellProfiler's settings validation, which runs on every change.
"""

from __future__ import annotations

import json
import numbers
import os
import threading
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

if __package__:  # s2l_tools.inference.onnx
    from s2l_tools.errors import S2LError
    from s2l_tools.inference.tiling import PassProgress, gain_averaged, parse_gains, predict_tiled

    _LOAD_ERROR_BASES: Tuple[type, ...] = (S2LError, ValueError)
else:  # _s2l_onnx_inference.py, copied beside the CellProfiler plugin
    from _s2l_tiling import (  # type: ignore[no-redef]
        PassProgress, gain_averaged, parse_gains, predict_tiled)

    _LOAD_ERROR_BASES = (ValueError,)

__all__ = [
    "ModelLoadError",
    "read_props",
    "meta_from_props",
    "read_meta",
    "meta_problem",
    "load_session",
    "model_meta",
    "normalize_percentile",
    "parse_gains",
    "segment",
    "threshold_problem",
    "tiling_problem",
    "unusual_limit",
    "mask_share",
    "under_called",
    "clear_cache",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "PAD_MULTIPLE",
]

#: the graph's input ``(N, C, H, W)`` and output ``(N, classes, H, W)`` tensors
INPUT_NAME, OUTPUT_NAME = "image", "probability"
#: ``metadata_props`` keys (and values) written by ``s2l-export``: the format
#: marker, its version, the JSON of the whole ``ModelMeta`` and the tensor names
FORMAT_KEY, FORMAT = "s2l.format", "s2l-tools-onnx"
#: version 2: a model with a ``diameter`` (older readers would predict it at the wrong
#: scale, so they refuse it); a model without one is still written as version 1
FORMAT_VERSION_KEY, FORMAT_VERSION = "s2l.format_version", 2
META_KEY = "s2l.meta"
INPUT_KEY, OUTPUT_KEY = "s2l.input", "s2l.output"
#: height and width given to the network are multiples of this (five poolings)
PAD_MULTIPLE = 32
DECLUMP = ("none", "watershed")
_FIX = "export the model with: s2l-export RUN --out model.onnx"
#: environment variable: CPU threads per ONNX Runtime session (unset or 0: one per core)
THREADS_ENV = "S2L_ORT_THREADS"


class ModelLoadError(*_LOAD_ERROR_BASES):  # type: ignore[misc]
    """A model that cannot be loaded; the one-line message names the file and the fix.

    Missing file, not an ONNX file, an ONNX model not written by s2l-export
    (or by a newer version), one ONNX Runtime refuses, or a bad
    ``S2L_ORT_THREADS``. A :class:`ValueError`; inside s2l-tools also an
    :class:`~s2l_tools.errors.S2LError`.
    """


# --------------------------------------------------------------------------- metadata


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    """Decode a protobuf varint at ``data[pos:]``; return (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or invalid varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _read_varint(f) -> Optional[int]:
    """Read a varint from a file; None at a clean end of file."""
    value = shift = 0
    first = True
    while True:
        b = f.read(1)
        if not b:
            if first:
                return None
            raise ValueError("truncated varint")
        first = False
        value |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("invalid varint")


def _string_pair(data: bytes) -> Tuple[str, str]:
    """Decode an ONNX ``StringStringEntryProto`` (key = 1, value = 2)."""
    key = value = ""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        if tag & 7 != 2:
            raise ValueError("unexpected field in a metadata entry")
        length, pos = _varint(data, pos)
        text = data[pos:pos + length].decode("utf-8")
        pos += length
        if tag >> 3 == 1:
            key = text
        elif tag >> 3 == 2:
            value = text
    return key, value


def _metadata_props(path: str) -> Dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read without loading the graph.

    Walks the top-level fields of the ``ModelProto`` protobuf message and
    seeks over everything but field 14 (``metadata_props``); raises
    ValueError when the file is not a protobuf message with an ``ir_version``.
    """
    size = os.path.getsize(path)
    props: Dict[str, str] = {}
    seen_ir_version = False
    with open(path, "rb") as f:
        while True:
            tag = _read_varint(f)
            if tag is None:
                break
            field, wire = tag >> 3, tag & 7
            if field == 0:
                raise ValueError("field number 0")
            if wire == 0:
                value = _read_varint(f)
                if value is None:
                    raise ValueError("truncated")
                if field == 1:
                    seen_ir_version = True
            elif wire == 1:
                f.seek(8, os.SEEK_CUR)
            elif wire == 5:
                f.seek(4, os.SEEK_CUR)
            elif wire == 2:
                length = _read_varint(f)
                if length is None or f.tell() + length > size:
                    raise ValueError("length beyond the end of the file")
                if field == 14:
                    key, value = _string_pair(f.read(length))
                    props[key] = value
                else:
                    f.seek(length, os.SEEK_CUR)
            else:
                raise ValueError(f"wire type {wire}")
            if f.tell() > size:
                raise ValueError("truncated")
    if not seen_ir_version:
        raise ValueError("no ir_version")
    return props


def _check_file(path) -> str:
    path = os.fspath(path)
    if not path or not os.path.isfile(path):
        raise ModelLoadError(f"{path or '(empty path)'}: no such model file; give the .onnx "
                             "file written by s2l-export")
    return path


def read_props(path) -> Dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read without loading the graph.

    Only the file's top-level protobuf fields are walked; the weights are
    skipped with seeks, so this takes milliseconds even for large models and
    needs neither onnxruntime nor the ``onnx`` package.

    Parameters
    ----------
    path : str or path-like
        An ONNX file.

    Returns
    -------
    props : dict of str to str
        ``{key: value}`` of every metadata property.

    Raises
    ------
    ModelLoadError
        Missing file or not an ONNX file.
    """
    return _read_props(_check_file(path))


def _read_props(path: str) -> Dict[str, str]:
    try:
        return _metadata_props(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not an ONNX model ({exc}); {_FIX}") from None


def meta_from_props(props: Mapping[str, str], *, source: str = "model") -> Dict[str, Any]:
    """The ``ModelMeta`` fields stored in an exported model's metadata properties.

    Parameters
    ----------
    props : mapping of str to str
        ``{key: value}``: :func:`read_props`, or ONNX Runtime's
        ``session.get_modelmeta().custom_metadata_map``.
    source : str, optional
        File name used in error messages.

    Returns
    -------
    meta : dict
        The :class:`~s2l_tools.training.checkpoint.ModelMeta` fields (``encoder``,
        ``in_channels``, ``classes``, ``normalization``, ``channel``,
        ``tile``, ``overlap``, ``threshold``, ``min_size``, ``diameter``, ``s2l_version``);
        ``ModelMeta.from_dict(meta)`` rebuilds it.

    Raises
    ------
    ModelLoadError
        The properties were not written by ``s2l-export``, are damaged, or
        were written by a newer version.
    """
    props = dict(props)
    if props.get(FORMAT_KEY) != FORMAT or META_KEY not in props:
        raise ModelLoadError(f"{source}: an ONNX model without s2l-tools metadata (not "
                             f"written by s2l-export); {_FIX}")
    try:
        version = int(props.get(FORMAT_VERSION_KEY, "0"))
        meta = json.loads(props[META_KEY])
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{source}: damaged s2l-tools metadata ({exc}); {_FIX}") from None
    if version > FORMAT_VERSION:
        raise ModelLoadError(f"{source}: written by a newer s2l-tools (format {version}); "
                             "update s2l-tools, then the CellProfiler plugin with: "
                             "s2l-cellprofiler install --plugins-dir DIR")
    if not isinstance(meta, dict) or "in_channels" not in meta:
        raise ModelLoadError(f"{source}: damaged s2l-tools metadata (s2l.meta has no "
                             f"in_channels); {_FIX}")
    problem = meta_problem(meta)
    if problem:
        raise ModelLoadError(f"{source}: damaged s2l-tools metadata ({problem}); {_FIX}")
    for key in (INPUT_KEY, OUTPUT_KEY):
        if key in props and not props[key]:
            raise ModelLoadError(f"{source}: damaged s2l-tools metadata ({key} is empty); {_FIX}")
    return meta


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and bool(np.isfinite(value)))


def threshold_problem(threshold) -> Optional[str]:
    """Why ``threshold`` cannot be a foreground probability threshold, or None.

    The one range check of every place that takes the threshold (``s2l-train
    --mask-threshold``, ``s2l-predict --threshold``, the metadata of ``model.pt`` and
    of an exported model, the CellProfiler module): foreground is
    ``prob > threshold``, so a number in [0, 1); at 1 or more nothing would be
    foreground.

    Examples
    --------
    >>> threshold_problem(0.5) is None
    True
    >>> threshold_problem(1.0)
    'must be in [0, 1) (a probability; 0.5: the more likely class)'
    """
    ok = (isinstance(threshold, numbers.Real) and not isinstance(threshold, bool)
          and 0.0 <= threshold < 1.0)  # NaN fails the comparison
    return None if ok else "must be in [0, 1) (a probability; 0.5: the more likely class)"


def meta_problem(meta: Mapping[str, Any], *, python: bool = False) -> Optional[str]:
    """What is wrong with the values of a model's metadata, or None.

    The one check of both model files: an exported model's JSON metadata (values shown
    as JSON) and, with ``python``, the metadata of an s2l-train ``model.pt`` (values
    shown as Python writes them). A key that is missing is not checked here.

    Examples
    --------
    >>> meta_problem({"tile": 100}), meta_problem({"tile": "512"}, python=True)
    ('tile 100 is not a multiple of 32', "tile is '512', not a whole number >= 32")
    """
    show = repr if python else json.dumps
    for key, low in (("in_channels", 1), ("classes", 2), ("tile", PAD_MULTIPLE),
                     ("overlap", 0), ("min_size", 0)):
        if key in meta and not (_is_int(meta[key]) and meta[key] >= low):
            return f"{key} is {show(meta[key])}, not a whole number >= {low}"
    if "tile" in meta and meta["tile"] % PAD_MULTIPLE:
        return f"tile {meta['tile']} is not a multiple of {PAD_MULTIPLE}"
    if "tile" in meta and "overlap" in meta and meta["overlap"] >= meta["tile"]:
        return f"overlap {meta['overlap']} is not less than tile {meta['tile']}"
    if "threshold" in meta and (why := threshold_problem(meta["threshold"])):
        return f"threshold is {show(meta['threshold'])}: {why}"
    if "diameter" in meta and not (_is_number(meta["diameter"]) and meta["diameter"] >= 0):
        return f"diameter is {show(meta['diameter'])}, not a number >= 0 (pixels; 0: off)"
    share = meta.get("train_share_max")
    if share is not None and not (_is_number(share) and 0 <= share <= 1):
        return f"train_share_max is {show(share)[:40]}, not a share in [0, 1]"
    if meta.get("channel") is not None and not (_is_int(meta["channel"])
                                                and meta["channel"] >= 0):
        return f"channel is {show(meta['channel'])}, not a whole number >= 0"
    if "encoder" in meta and not isinstance(meta["encoder"], str):
        return f"encoder is {show(meta['encoder'])[:40]}, not a name"
    norm = meta.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict):
            kind = "a mapping" if python else "an object"
            return f"normalization is {show(norm)[:40]}, not {kind}"
        if norm.get("method", "percentile") not in ("percentile", "none"):
            return f"normalization method {show(norm.get('method'))[:40]} is unknown"
        if norm.get("method", "percentile") == "percentile":
            low, high = norm.get("low", 1.0), norm.get("high", 99.8)
            if not (_is_number(low) and _is_number(high) and 0 <= low < high <= 100):
                return (f"normalization percentiles {show(low)[:20]}, "
                        f"{show(high)[:20]} are not 0 <= low < high <= 100")
    return None


#: :func:`unusual_limit`: an image is unlike the model's training images when its mask
#: covers more than this many times the largest share of any training image's pixels the
#: network called cell (``train_share_max``, recorded by ``s2l-train --auto-threshold``),
#: and more than :data:`UNUSUAL_FLOOR` of the image. On DSB-fluo (docs/benchmarks.md,
#: "Images called far more cell than any training image") the laptop preset's training
#: images had at most 31-33 % called cell, 435 usual val images' masks cover at most 32 %,
#: and the masks of the grainy images it fails on 44-92 % (5 of those 6 named, no usual one).
UNUSUAL_FACTOR = 1.5
UNUSUAL_FLOOR = 0.4


def unusual_limit(train_share_max) -> Optional[float]:
    """The share of an image's pixels in its mask above which the image is unlike the
    model's training images, or None (``train_share_max`` not recorded).

    A network trained on strokes that meets a kind of image its strokes did not cover
    (grainy, dim, another stain) tends to call much of its background cell; the mask then
    covers far more of the image than it did of any training image. ``s2l-predict`` names
    such images in a warning, the CellProfiler module flags them (``Scribble2Label_Unusual``).

    Examples
    --------
    >>> unusual_limit(0.3), unusual_limit(None)
    (0.45, None)
    >>> unusual_limit(0.1)  # never below UNUSUAL_FLOOR
    0.4
    """
    if train_share_max is None:
        return None
    return round(max(UNUSUAL_FLOOR, UNUSUAL_FACTOR * float(train_share_max)), 6)


def mask_share(labels: np.ndarray) -> float:
    """The share of an image's pixels inside its objects (labels > 0), 0 for no pixels.

    >>> mask_share(np.array([[0, 1], [2, 0]]))
    0.5
    """
    labels = np.asarray(labels)
    return float(np.count_nonzero(labels)) / max(1, labels.size)


def under_called(prob: np.ndarray, threshold: float) -> bool:
    """Whether the network outlined far more cells in an image than it called at
    ``threshold``: :func:`s2l_tools.inference.postprocess.under_called`, for the front ends
    that use this module (``s2l-predict`` warns, the CellProfiler module flags it)."""
    return bool(_postprocess().under_called(prob, float(threshold)))


def _graph_problem(session, meta: Mapping[str, Any]) -> Optional[str]:
    """How a session's graph disagrees with its s2l-tools metadata, or None."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    name_in, name_out = str(meta.get("input", INPUT_NAME)), str(meta.get("output", OUTPUT_NAME))
    if name_in not in inputs:
        return f"the graph has no input {name_in!r} (it has {', '.join(map(repr, inputs))})"
    if name_out not in outputs:
        return f"the graph has no output {name_out!r} (it has {', '.join(map(repr, outputs))})"
    for what, arg, key in (("input", inputs[name_in], "in_channels"),
                           ("output", outputs[name_out], "classes")):
        shape = list(arg.shape or [])
        if len(shape) != 4:
            return f"the graph's {what} {arg.name!r} has shape {shape}, not (N, C, H, W)"
        if isinstance(shape[1], int) and key in meta and shape[1] != int(meta[key]):
            return (f"the graph's {what} has {shape[1]} channel(s), the metadata says "
                    f"{key} {meta[key]}")
        if "float" not in str(arg.type):
            return f"the graph's {what} {arg.name!r} is {arg.type}, not float"
    return None


def _with_tensor_names(meta: Dict[str, Any], props: Mapping[str, str]) -> Dict[str, Any]:
    """``meta`` plus ``input`` and ``output``, the graph's tensor names."""
    meta = dict(meta)
    meta.setdefault("input", props.get(INPUT_KEY, INPUT_NAME))
    meta.setdefault("output", props.get(OUTPUT_KEY, OUTPUT_NAME))
    return meta


def read_meta(path) -> Dict[str, Any]:
    """Read the s2l-tools metadata of an exported model, cheaply.

    :func:`read_props` and :func:`meta_from_props`: the weights are skipped,
    so this takes milliseconds even for large models and needs neither
    onnxruntime nor the ``onnx`` package.

    Parameters
    ----------
    path : str or path-like
        An ONNX file written by ``s2l-export``.

    Returns
    -------
    meta : dict
        The ``ModelMeta`` fields (``encoder``, ``in_channels``, ``classes``,
        ``normalization``, ``tile``, ``overlap``, ``threshold``, ``min_size``,
        ...) plus ``input`` and ``output``, the graph's tensor names.

    Raises
    ------
    ModelLoadError
        Missing file, not an ONNX file, or an ONNX model without s2l-tools
        metadata; the one-line message names the file and the fix.
    """
    path = _check_file(path)
    props = _read_props(path)
    return _with_tensor_names(meta_from_props(props, source=path), props)


# --------------------------------------------------------------------------- sessions

_CACHE: "OrderedDict[tuple, Any]" = OrderedDict()
_CACHE_SIZE = 2
_LOCK = threading.Lock()


def _default_providers(ort) -> list:
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        # grow GPU memory only as needed: several CellProfiler workers may share a GPU
        return [("CUDAExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"}),
                "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def load_session(path, *, providers: Optional[Sequence] = None):
    """An ONNX Runtime session for an exported model, cached per file version.

    Parameters
    ----------
    path : str or path-like
        An ONNX file written by ``s2l-export``.
    providers : sequence, optional
        ONNX Runtime execution providers; default: CUDA when onnxruntime
        offers it (``onnxruntime-gpu``), else the CPU. The environment
        variable ``S2L_ORT_THREADS`` sets the CPU threads per session
        (default: one per core; set it to 1 when CellProfiler runs one worker
        per core).

    Returns
    -------
    session : onnxruntime.InferenceSession
        Its s2l-tools metadata is available through :func:`model_meta`.
        The same object is returned while the file's path, modification time
        and size stay the same (the two most recent models are kept).

    Raises
    ------
    ModelLoadError
        Missing file, not an ONNX model, an ONNX model not written by
        s2l-export, one ONNX Runtime cannot load, or a bad
        ``S2L_ORT_THREADS`` (one line naming the file or setting and the fix).
    ImportError
        onnxruntime is not installed.
    """
    path = os.path.abspath(_check_file(path))
    meta = read_meta(path)  # cheap, and a clear error before onnxruntime sees the file
    threads = os.environ.get(THREADS_ENV, "").strip()
    if threads and not threads.isdigit():
        raise ModelLoadError(f"{THREADS_ENV}={threads}: must be a whole number of CPU "
                             "threads (0: ONNX Runtime's default, one per core)")
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size, repr(providers), threads)
    with _LOCK:
        session = _CACHE.get(key)
        if session is not None:
            _CACHE.move_to_end(key)
            return session
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("onnxruntime is not installed in this Python; install it with: "
                          "python -m pip install onnxruntime") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        # several CellProfiler workers each running one thread per core would
        # oversubscribe the CPU; e.g. S2L_ORT_THREADS=1 with one worker per core
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(
            path, sess_options=options,
            providers=list(providers) if providers is not None else _default_providers(ort))
    except Exception as exc:  # onnxruntime raises its own exception types
        msg = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ModelLoadError(f"{path}: ONNX Runtime cannot load this model ({msg}); "
                             f"{_FIX}") from None
    problem = _graph_problem(session, meta)
    if problem:
        raise ModelLoadError(f"{path}: the model's graph disagrees with its s2l-tools "
                             f"metadata ({problem}); {_FIX}")
    session._s2l_meta = meta  # the file's metadata, read once
    with _LOCK:
        _CACHE[key] = session
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return session


def clear_cache() -> None:
    """Forget the cached sessions (their memory is freed when unused)."""
    with _LOCK:
        _CACHE.clear()


def model_meta(session) -> Dict[str, Any]:
    """The s2l-tools metadata of a session's model.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        From :func:`load_session`, or any session of an exported model.

    Returns
    -------
    meta : dict
        As :func:`read_meta` (a copy).

    Raises
    ------
    ModelLoadError
        A session of a model not written by ``s2l-export``.
    """
    meta = getattr(session, "_s2l_meta", None)
    if meta is None:
        props = dict(session.get_modelmeta().custom_metadata_map)
        meta = _with_tensor_names(meta_from_props(props), props)
    return dict(meta)


# --------------------------------------------------------------------------- inference


def normalize_percentile(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Scale each channel so that its ``low`` and ``high`` percentiles map to 0 and 1.

    The same as :func:`s2l_tools.io.images.normalize` with ``method='percentile'``:
    ``(x - p_low) / (p_high - p_low)`` per channel, not clipped; a constant
    channel becomes 0. Affine changes of the input (CellProfiler's 0..1
    scaling of 16-bit images, say) do not change the result beyond float
    rounding.

    Parameters
    ----------
    image : (C, H, W) ndarray
    low, high : float
        Percentiles, ``0 <= low < high <= 100``.

    Returns
    -------
    out : (C, H, W) float32 ndarray
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {low}, {high}")
    out = np.array(image, dtype=np.float32)  # a copy
    if out.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {out.shape}")
    for c in range(out.shape[0]):
        lo, hi = np.percentile(out[c], [low, high])
        if hi - lo <= 1e-12:
            out[c] = 0.0
        else:
            out[c] = (out[c] - lo) / (hi - lo)
    return out


def _normalize(image: np.ndarray, normalization: Optional[dict]) -> np.ndarray:
    norm = dict(normalization or {})
    method = norm.get("method", "percentile")
    if method == "percentile":
        return normalize_percentile(image, float(norm.get("low", 1.0)),
                                    float(norm.get("high", 99.8)))
    if method == "none":
        return np.ascontiguousarray(image, dtype=np.float32)
    raise ValueError(f"the model asks for normalisation {method!r}, which this version does "
                     "not know; update s2l-tools and reinstall the plugin")


def _tiling(meta: dict, tile: Optional[int]) -> Tuple[int, int]:
    overlap = int(meta.get("overlap", 64))
    if tile is None or int(tile) == 0:
        tile = int(meta.get("tile", 512))
    else:
        tile = int(tile)
        if overlap >= tile:
            overlap = tile // 4
    if (why := tiling_problem(tile, overlap)):
        raise ValueError(why)
    return tile, overlap


def tiling_problem(tile: int, overlap: int) -> Optional[str]:
    """What is wrong with a tile size and overlap for tiled prediction, or None.

    The one check of ``s2l-predict``, :func:`s2l_tools.inference.predict.predict_image` and
    :func:`segment` (the CellProfiler module).

    Examples
    --------
    >>> tiling_problem(512, 64) is None
    True
    >>> tiling_problem(100, 16)
    'tile size 100: must be a positive multiple of 32 (e.g. 512)'
    """
    if tile < PAD_MULTIPLE or tile % PAD_MULTIPLE:
        return f"tile size {tile}: must be a positive multiple of {PAD_MULTIPLE} (e.g. 512)"
    if not 0 <= overlap < tile:
        return (f"tile overlap {overlap}: must be 0 or more and less than the tile size {tile} "
                "(e.g. 64)")
    return None


def _postprocess():
    """The post-processing module, imported on first use.

    It imports scikit-image, which takes most of a second; reading a model's
    metadata (``s2l-predict``, ``s2l-export``, CellProfiler's settings
    validation) does not need it.
    """
    if __package__:
        from s2l_tools.inference import postprocess

        return postprocess
    try:
        import _s2l_postprocess
    except ImportError as exc:
        raise ImportError(f"cannot import _s2l_postprocess ({exc}); reinstall the plugin with: "
                          "s2l-cellprofiler install --plugins-dir DIR") from None
    return _s2l_postprocess


def segment(
    session,
    image: np.ndarray,
    *,
    threshold: Optional[float] = None,
    min_size: Optional[int] = None,
    declump: str = "watershed",  # = postprocess.DEFAULT_DECLUMP (this file stands alone)
    fill_holes: bool = True,
    tile: Optional[int] = None,
    batch_size: int = 4,
    flips: bool = False,
    gains: Sequence[float] = (1.0,),
    progress=None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Instance labels and foreground probability of one image.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        From :func:`load_session`.
    image : (H, W) or (C, H, W) ndarray
        Raw intensities in any scale (the model's percentile normalisation is
        applied here); ``C`` must be the model's ``in_channels``.
    threshold : float, optional
        Foreground where ``probability > threshold``; None: the model's.
    min_size : int, optional
        Smallest object kept, in pixels; None: the model's.
    declump : {'watershed', 'none'}, optional
        Split touching cells with a distance-transform watershed (the default)
        or not.
    fill_holes : bool, optional
        Fill holes inside each object.
    tile : int, optional
        Tile size (a multiple of 32); None or 0: the model's. A tile smaller
        than the model's overlap gets an overlap of ``tile // 4``.
    batch_size : int, optional
        Tiles per network call.
    flips : bool, optional
        Average over the image's four flips (test-time augmentation): four
        times the network calls for a slightly better map.
    gains : sequence of float, optional
        Average over the normalised image multiplied by each gain
        (:func:`~s2l_tools.inference.tiling.gain_averaged`; each gain one more
        prediction): ``(1, 1.5, 2)`` for a model trained on a handful of images that
        calls dim nuclei background. ``(1,)``: the image as it is.
    progress : callable, optional
        ``progress(done, total)`` in tiles; with a ``diameter`` the second pass's
        tiles count on from the first's (the total grows when it starts).

    Returns
    -------
    labels : (H, W) int32 ndarray
        0 background, cells 1..N.
    prob : (H, W) float32 ndarray
        Foreground probability.

    Raises
    ------
    ValueError
        Wrong image shape or channel count, bad options.
    """
    meta = model_meta(session)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or min(image.shape) < 1:
        raise ValueError(f"image must be (H, W) or (C, H, W), got shape {image.shape}")
    in_channels = int(meta["in_channels"])
    if image.shape[0] != in_channels:
        raise ValueError(f"image has {image.shape[0]} channel(s), the model takes "
                         f"{in_channels}; give a {in_channels}-channel image (channels first)")
    if declump not in DECLUMP:
        raise ValueError(f"declump must be one of {DECLUMP}, got {declump!r}")
    threshold = float(meta.get("threshold", 0.5) if threshold is None else threshold)
    if (why := threshold_problem(threshold)):
        raise ValueError(f"threshold {threshold:g}: {why}")
    min_size = int(meta.get("min_size", 64) if min_size is None else min_size)
    if min_size < 0:
        raise ValueError(f"min_size {min_size}: must be 0 or more (pixels)")
    tile_size, overlap = _tiling(meta, tile)

    x = _normalize(image, meta.get("normalization"))
    input_name = str(meta.get("input", INPUT_NAME))
    output_name = str(meta.get("output", OUTPUT_NAME))

    def fn(batch: np.ndarray) -> np.ndarray:
        feed = {input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        return session.run([output_name], feed)[0]

    passes = PassProgress(progress)  # with a diameter the second pass counts on

    def foreground(im: np.ndarray) -> np.ndarray:
        prob = predict_tiled(fn, im, tile=tile_size, overlap=overlap,
                             batch_size=int(batch_size), pad_multiple=PAD_MULTIPLE,
                             flips=bool(flips), progress=passes.next_pass())
        fg = prob[1] if prob.shape[0] == 2 else prob[1:].sum(0)
        return np.ascontiguousarray(fg, dtype=np.float32)

    diameter = float(meta.get("diameter") or 0.0)

    def one(im: np.ndarray) -> np.ndarray:
        if diameter > 0:  # a model trained at one object size: a first pass finds the scale
            return _postprocess().at_diameter(foreground, im, diameter)[0]
        return foreground(im)

    fg = gain_averaged(one, x, gains)
    labels = _postprocess().instances_from_probability(
        fg, threshold=threshold, min_size=min_size, fill_holes=bool(fill_holes), declump=declump)
    return labels, fg

"""``s2l-export``: a trained model as a self-describing ONNX file.

The ONNX graph maps ``image`` ``(N, C, H, W)`` float32 (normalised as the
model was trained, ``H`` and ``W`` multiples of 32) to ``probability``
``(N, 2, H, W)`` float32: the softmax is inside the graph, channel 1 is the
foreground. Batch, height and width are dynamic.

Everything a consumer needs to use the model is stored in the file's
``metadata_props`` (strings): ``s2l.meta`` holds the JSON of the whole
:class:`~s2l_tools.training.checkpoint.ModelMeta`, and flat keys repeat the common
fields (``s2l.in_channels``, ``s2l.normalization`` (JSON), ``s2l.tile``,
``s2l.overlap``, ``s2l.threshold``, ``s2l.min_size``, ``s2l.classes``, ...).
The keys, the tensor names and the reader of this format live in
:mod:`s2l_tools.inference.onnx` (:func:`~s2l_tools.inference.onnx.read_meta`
reads them without the ``onnx`` package or onnxruntime). ONNX Runtime also
exposes them::

    sess = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = meta_from_props(sess.get_modelmeta().custom_metadata_map)

The export uses torch's TorchScript-based exporter (``dynamo=False``): with
torch 2.14 the torch.export-based one needs ``onnxscript``, which is not a
dependency, and the traced U-Net has no data-dependent control flow, so
``dynamic_axes`` is exact for every size that is a multiple of 32.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path

from s2l_tools.training.checkpoint import ModelMeta
from s2l_tools.errors import S2LError
from s2l_tools.inference.onnx import (
    FORMAT,
    FORMAT_KEY,
    FORMAT_VERSION,
    FORMAT_VERSION_KEY,
    INPUT_KEY,
    INPUT_NAME,
    META_KEY,
    OUTPUT_KEY,
    OUTPUT_NAME,
    PAD_MULTIPLE,
    meta_from_props,
    read_props,
)

__all__ = ["export_onnx", "read_onnx_meta", "meta_from_props", "INPUT_NAME", "OUTPUT_NAME"]

#: opsets accepted by ``--opset`` (13: Softmax over one axis; ONNX Runtime
#: 1.19, CellProfiler's, runs up to 21)
MIN_OPSET, MAX_OPSET = 13, 20
DEFAULT_OPSET = 17


def _flat_props(meta: ModelMeta, opset: int) -> dict[str, str]:
    """The ``metadata_props`` written into the ONNX file."""
    d = asdict(meta)
    return {
        FORMAT_KEY: FORMAT,
        FORMAT_VERSION_KEY: str(FORMAT_VERSION if meta.diameter else 1),
        META_KEY: json.dumps(d, sort_keys=True),
        "s2l.version": str(meta.s2l_version),
        "s2l.encoder": str(meta.encoder),
        "s2l.in_channels": str(meta.in_channels),
        "s2l.classes": str(meta.classes),
        "s2l.normalization": json.dumps(meta.normalization, sort_keys=True),
        "s2l.channel": "" if meta.channel is None else str(meta.channel),
        "s2l.tile": str(meta.tile),
        "s2l.overlap": str(meta.overlap),
        "s2l.threshold": repr(float(meta.threshold)),
        "s2l.min_size": str(meta.min_size),
        INPUT_KEY: INPUT_NAME,
        OUTPUT_KEY: OUTPUT_NAME,
        "s2l.pad_multiple": str(PAD_MULTIPLE),
        "s2l.opset": str(opset),
    }


def read_onnx_meta(path: str | os.PathLike) -> dict:
    """Read the :class:`~s2l_tools.training.checkpoint.ModelMeta` fields of an exported model.

    :func:`s2l_tools.inference.onnx.read_meta` without the graph's tensor
    names: the weights are skipped, and neither onnxruntime nor the ``onnx``
    package is needed.

    Parameters
    ----------
    path : path-like
        An ONNX file written by :func:`export_onnx`.

    Returns
    -------
    meta : dict
        ModelMeta fields (``encoder``, ``in_channels``, ``classes``,
        ``normalization``, ``channel``, ``tile``, ``overlap``, ``threshold``,
        ``min_size``, ``s2l_version``).

    Raises
    ------
    s2l_tools.inference.onnx.ModelLoadError
        (an :class:`~s2l_tools.errors.S2LError`) Missing file, not an ONNX
        model, or an ONNX model not written by s2l-export.
    """
    return meta_from_props(read_props(path), source=os.fspath(path))


def _with_softmax(net):
    """``net`` followed by a softmax over classes (a torch module)."""
    import torch

    class ProbabilityModel(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image):
            return torch.softmax(self.net(image), dim=1)

    return ProbabilityModel(net)


def export_onnx(model, meta: ModelMeta, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                check: bool = True) -> Path:
    """Export a model to ONNX with its metadata (atomic write).

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(N, meta.in_channels, H, W)`` to logits ``(N, meta.classes, H, W)``
        (:func:`s2l_tools.training.model.build_model`). It is copied to the CPU in
        float32; the original is left alone.
    meta : ModelMeta
        Stored in the file (see the module docstring).
    path : path-like
        The ``.onnx`` file to write.
    opset : int, optional
        ONNX opset, 13 to 20.
    check : bool, optional
        Also run the exported graph in ONNX Runtime on a random image and
        compare it with torch (raise if they differ by more than 1e-3).

    Returns
    -------
    path : Path

    Notes
    -----
    The graph: input ``image`` ``(N, C, H, W)`` float32 with ``H``, ``W``
    multiples of 32, output ``probability`` ``(N, classes, H, W)`` float32
    (softmax over classes). ``onnx.checker.check_model`` validates it.
    """
    import copy

    import onnx
    import torch

    from s2l_tools.io.atomic import atomic_path

    opset = int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise S2LError(f"--opset {opset}: must be {MIN_OPSET} to {MAX_OPSET} (default "
                       f"{DEFAULT_OPSET}; CellProfiler's onnxruntime 1.19 runs up to 21)")
    path = Path(path)
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float32,
                                  memory_format=torch.contiguous_format).eval()
    wrapped = _with_softmax(net).eval()
    gen = torch.Generator().manual_seed(0)
    # non-square, so that a height/width mix-up in the trace would show
    dummy = torch.randn(1, int(meta.in_channels), 2 * PAD_MULTIPLE, 3 * PAD_MULTIPLE,
                        generator=gen)
    dyn = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapped, (dummy,), str(tmp), dynamo=False, export_params=True,
                opset_version=opset, do_constant_folding=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: dyn, OUTPUT_NAME: dyn},
            )
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in _flat_props(meta, opset).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "s2l-tools"
        proto.producer_version = str(meta.s2l_version)
        proto.doc_string = (
            f"Scribble2Label U-Net ({meta.encoder}). Input '{INPUT_NAME}' (N, "
            f"{meta.in_channels}, H, W) float32, normalised ({json.dumps(meta.normalization)}), "
            f"H and W multiples of {PAD_MULTIPLE}; output '{OUTPUT_NAME}' (N, {meta.classes}, "
            "H, W) softmax probabilities, channel 1 = foreground. Metadata: s2l.meta."
        )
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        if check:
            _compare_with_ort(wrapped, tmp, int(meta.in_channels))
    return path


def _compare_with_ort(wrapped, onnx_path: Path, in_channels: int) -> None:
    """Run the exported file in ONNX Runtime and compare it with torch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, in_channels, 3 * PAD_MULTIPLE, 2 * PAD_MULTIPLE)).astype(np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    with torch.inference_mode():
        want = wrapped(torch.from_numpy(x)).numpy()
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-3):
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("nan")
        raise S2LError(f"{onnx_path}: ONNX Runtime and torch disagree (max |diff| {diff:.3g}, "
                       f"shapes {got.shape} vs {want.shape}); report this with --debug")

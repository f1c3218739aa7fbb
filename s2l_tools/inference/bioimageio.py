"""BioImage Model Zoo packages: writing ours and running any 2-D segmentation package.

A package is a zip with ``rdf.yaml`` (model spec 0.5, validated by
``bioimageio.spec``) and the files it names. :func:`export_bioimageio` writes
ours; deepImageJ (Fiji), ilastik, QuPath, BiaPy and ``bioimageio.core`` read it:

- input ``raw`` ``(batch, channel, y, x)`` float32, ``y`` and ``x`` of any
  size ``32 + 32 k`` (``ParameterizedSize(min=32, step=32)``: five poolings);
- preprocessing: ``scale_range`` over ``(y, x)`` of each image and channel with
  the model's percentiles (``out = (x - p_low) / (p_high - p_low + 1e-6)``, not
  clipped): :func:`s2l_tools.inference.onnx.normalize_percentile` up to the
  ``eps`` (differences below 1e-6 relative for any image with contrast);
- output ``probability`` ``(batch, channel, y, x)``, one channel named
  ``foreground``: the softmax of the U-Net's logits is inside the network (no
  postprocessing step, which deepImageJ's engine (JDLL) would not apply);
- weights: ``pytorch_state_dict`` (the architecture file ``s2l_unet.py``:
  ``segmentation_models_pytorch.Unet`` with its keyword arguments followed by the
  softmax, and ``environment.yaml``), ``torchscript`` (traced) and ``onnx``
  (opset 17, dynamic batch/height/width), all from the same state dict and
  checked to agree with the trained model (1e-4) before anything is written;
- test tensors from a training image (a crop of at most 256 x 256 pixels,
  multiples of 32), a cover (image | foreground probability) and a README
  from the run (data, scribble counts, settings, validation scores);
- ``config.s2l``: the :class:`~s2l_tools.training.checkpoint.ModelMeta`
  (threshold, minimum size, tile, ...), read back by :func:`load_bioimageio`.

:func:`load_bioimageio` turns a package (ours, or any single-input
single-output 2-D model whose output is a foreground probability) into the
``(prob_fn, meta)`` pair ``s2l-predict`` runs on tiles. Validation runs
offline: the packages name no remote file, and a package is read with
``bioimageio.spec``'s local checks only.

``bioimageio.core`` (the ``bioimageio`` extra of s2l-tools) is imported inside
the functions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from s2l_tools.errors import S2LError
from s2l_tools.inference.onnx import PAD_MULTIPLE
from s2l_tools.training.checkpoint import ModelMeta

__all__ = ["RunInfo", "run_info", "require_bioimageio", "export_bioimageio", "check_package",
           "load_bioimageio",
           "WEIGHT_FORMATS", "INPUT_ID", "OUTPUT_ID"]

#: weight formats written (all by default) and checked
WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
INPUT_ID, OUTPUT_ID = "raw", "probability"
#: the network in the package: smp's U-Net followed by the foreground probability; its
#: source is written into the package (``ARCH_FILE``) and run here from the same text
ARCH_FILE, ARCH_CALLABLE = "s2l_unet.py", "ForegroundUnet"
_ARCH_SOURCE = '''"""The Scribble2Label U-Net of an s2l-tools bioimage.io package.

``ForegroundUnet(**kwargs)`` is ``segmentation_models_pytorch.Unet(**kwargs)``
followed by a softmax over the classes; it returns the foreground probability
(classes 1.., summed) as one channel, ``(N, 1, H, W)``. Written by s2l-tools.
"""
import segmentation_models_pytorch as smp
import torch


class ForegroundUnet(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.net = smp.Unet(**kwargs)

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)[:, 1:].sum(dim=1, keepdim=True)
'''
#: the scale_range eps (bioimageio.core applies its default, 1e-6, whatever the rdf says)
EPS = 1e-6
#: largest side of the test input (a crop of the training image)
TEST_SIZE = 256
ONNX_OPSET = 17
#: weights must agree with the state dict this closely (probabilities)
AGREEMENT = 1e-4
_INSTALL = "install it with: pip install 's2l-tools[bioimageio]'"
_PAPER = ("Lee, H., Jeong, W.-K. Scribble2Label: Scribble-Supervised Cell Segmentation via "
          "Self-Generating Pseudo-Labels with Consistency. MICCAI 2020.")
_PAPER_DOI = "10.1007/978-3-030-59710-8_2"
_TOOL = "s2l-tools: Scribble2Label cell segmentation from a few scribbles"
_TOOL_URL = "https://pypi.org/project/s2l-tools/"


@dataclass
class RunInfo:
    """What the README of a package says about the training run.

    Attributes
    ----------
    name : str
        The model's name (``rdf.yaml`` ``name``).
    settings : dict
        The run's settings (``TrainConfig`` fields); empty when unknown.
    data : dict
        ``images``, ``scribbled_images``, ``background_px``, ``foreground_px``
        of the training data (:func:`s2l_tools.data.dataset.check_dataset`);
        empty when the data could not be read.
    scores : dict
        The last validation scores of the run (``metrics.csv``), empty if none.
    authors : list of str
        Names of the model's authors.
    """

    name: str = "Scribble2Label U-Net"
    settings: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)
    authors: list = field(default_factory=lambda: ["s2l-tools user"])


def require_bioimageio() -> None:
    """Raise a one-line S2LError when ``bioimageio.core`` is not installed."""
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec
        import pydantic
    except ImportError:
        raise S2LError(f"bioimageio.core is not installed; {_INSTALL}") from None
    spec = tuple(int(p) for p in bioimageio.spec.__version__.split(".")[:3] if p.isdigit())
    pyd = tuple(int(p) for p in pydantic.VERSION.split(".")[:2] if p.isdigit())
    if spec <= (0, 5, 12) and pyd >= (2, 14):
        # its file serialiser passes an argument pydantic 2.14 refuses
        raise S2LError(f"pydantic {pydantic.VERSION}: bioimageio.spec "
                       f"{bioimageio.spec.__version__} fails with pydantic 2.14 or later; "
                       "install it with: pip install 'pydantic<2.14'")


# --------------------------------------------------------------------------- the run
def _run_folder(model_path: Path) -> Path | None:
    """The run folder of ``RUN/model.pt`` or ``RUN/checkpoint.pt`` (one with config.json)."""
    from s2l_tools.training.rundir import CONFIG

    folder = Path(model_path).parent
    return folder if (folder / CONFIG).is_file() else None


def run_info(model_path: str | os.PathLike, *, name: str | None = None,
             authors=None) -> tuple[RunInfo, Path | None]:
    """What the package's README says about a run, and its first training image.

    Parameters
    ----------
    model_path : path-like
        ``RUN/model.pt`` (or another model file; without ``config.json``
        beside it the run is unknown).
    name : str, optional
        The model's name; default: ``Scribble2Label U-Net (<run folder name>)``.
    authors : sequence of str, optional
        The model's authors.

    Returns
    -------
    info : RunInfo
        Settings, training data counts (scribbled pixels per class) and the
        last validation scores, where the run folder and its data can be read.
    image : Path or None
        The first training image, if the run's data folder is still there.
    """
    import csv

    from s2l_tools.data.dataset import check_dataset, open_dataset
    from s2l_tools.training.rundir import METRICS, read_config

    folder = _run_folder(Path(model_path))
    info = RunInfo(name=name or "Scribble2Label U-Net"
                   + (f" ({folder.resolve().name})" if folder else ""))
    if authors:
        info.authors = [str(a) for a in authors]
    if folder is None:
        return info, None
    cfg = read_config(folder)
    info.settings = asdict(cfg)
    image = None
    try:
        report = check_dataset(cfg.data, channel=cfg.channel)
        info.data = dict(report.totals)
        samples = open_dataset(cfg.data).with_images()
        image = samples[0].image if samples else None
    except S2LError:
        pass  # the data moved: the README says so
    metrics = folder / METRICS
    if metrics.is_file():
        with open(metrics, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("val_iou")]
        if rows:
            last = rows[-1]
            info.scores = {k: last[k] for k in ("epoch", "val_iou", "val_mdice", "val_f1_50")
                           if last.get(k)}
    return info, image


# --------------------------------------------------------------------------- writing
def _test_crop(raw: np.ndarray) -> np.ndarray:
    """A centre crop of ``raw`` ``(C, H, W)``, sides multiples of 32 up to 256 (reflect-padded
    to 32 when smaller)."""
    c, h, w = raw.shape
    pad = [(0, 0), (0, max(0, PAD_MULTIPLE - h)), (0, max(0, PAD_MULTIPLE - w))]
    if any(p[1] for p in pad):
        raw = np.pad(raw, pad, mode="reflect" if min(h, w) > 1 else "edge")
        c, h, w = raw.shape
    th, tw = (min(TEST_SIZE, n // PAD_MULTIPLE * PAD_MULTIPLE) for n in (h, w))
    y0, x0 = (h - th) // 2, (w - tw) // 2
    return np.ascontiguousarray(raw[:, y0:y0 + th, x0:x0 + tw])


def _normalised(raw: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """``raw`` ``(C, H, W)`` as the package's preprocessing makes it (``scale_range``)."""
    norm = dict(meta.normalization or {})
    x = np.asarray(raw, dtype=np.float32)
    if norm.get("method", "percentile") == "none":
        return x.copy()
    low, high = float(norm.get("low", 1.0)), float(norm.get("high", 99.8))
    out = np.empty_like(x)
    for c in range(x.shape[0]):
        lo, hi = np.percentile(x[c], [low, high])
        out[c] = (x[c] - lo) / (hi - lo + EPS)
    return out


def _preprocessing(meta: ModelMeta):
    from bioimageio.spec.model import v0_5

    norm = dict(meta.normalization or {})
    method = norm.get("method", "percentile")
    if method == "none":
        return []
    if method != "percentile":
        raise S2LError(f"model normalisation {method!r}: cannot be described in a "
                       "bioimage.io package; export a model trained with percentile "
                       "normalisation")
    low, high = float(norm.get("low", 1.0)), float(norm.get("high", 99.8))
    if high <= 1:
        raise S2LError(f"model normalisation percentiles {low:g}-{high:g}: the bioimage.io "
                       "spec needs an upper percentile above 1; export a model trained by "
                       "s2l-train, which normalises at 1-99.8")
    return [v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
        axes=(v0_5.AxisId("y"), v0_5.AxisId("x")), min_percentile=low, max_percentile=high,
        eps=EPS))]


def _smp_kwargs(meta: ModelMeta) -> dict:
    """The ``segmentation_models_pytorch.Unet`` keyword arguments of the network."""
    return {"encoder_name": str(meta.encoder), "encoder_weights": None,
            "in_channels": int(meta.in_channels), "classes": int(meta.classes),
            "decoder_attention_type": "scse"}


def _readme(info: RunInfo, meta: ModelMeta, formats, agreement: dict) -> str:
    s = info.settings
    lines = [f"# {info.name}", "",
             "A U-Net (segmentation-models-pytorch, ResNet encoder) trained with the "
             "Scribble2Label method (Lee & Jeong, MICCAI 2020) from a few scribbles, "
             f"exported by s2l-tools {meta.s2l_version}.", "",
             "## Input and output", "",
             f"- input `{INPUT_ID}`: (batch, channel, y, x), {meta.in_channels} channel(s), "
             f"y and x multiples of {PAD_MULTIPLE}; normalised per image and channel: "
             f"{json.dumps(meta.normalization)} (`scale_range`, not clipped)",
             f"- output `{OUTPUT_ID}`: (batch, channel, y, x), one channel `foreground`: the "
             "foreground (cell) probability (the softmax is inside the network)",
             f"- instances as s2l-predict makes them: foreground where probability > "
             f"{meta.threshold:g}, objects of at least {meta.min_size} pixels, holes filled; "
             f"tiles of {meta.tile} pixels overlapping by {meta.overlap}, each predicted "
             "as it is and flipped three ways and the four maps averaged (one pass: "
             "`s2l-predict --no-flips`)"]
    if meta.diameter:
        lines.append(f"- object size: trained with every image whose median object is under "
                     f"{meta.diameter:g} pixels across enlarged so it is that size (up to 3x, "
                     "never shrunk); s2l-predict and the CellProfiler module find each image's "
                     "size from a first pass and enlarge it so (`s2l-train --diameter`). A "
                     "tool that runs this network alone sees the image at its own size: "
                     f"enlarge an image of smaller objects so they are about "
                     f"{meta.diameter:g} pixels across first")
    lines += ["", "## Training data", ""]
    if info.data:
        d = info.data
        lines.append(f"- {d.get('images', '?')} image(s), {d.get('scribbled_images', '?')} "
                     f"with scribbles: {d.get('background_px', '?')} background and "
                     f"{d.get('foreground_px', '?')} foreground scribbled pixels")
    else:
        lines.append("- not available when the package was written")
    if s.get("data"):
        lines.append(f"- folder: `{s['data']}`" + (f", validation: `{s['val']}`"
                                                     if s.get("val") else ""))
    lines += ["", "## Settings", ""]
    if s:
        keys = ("method", "fast_start", "encoder", "encoder_weights", "channel", "epochs",
                "warmup_epochs", "ensemble_every", "ema_alpha", "threshold", "pseudo_weight",
                "pseudo_margin", "noise_aug", "gain_aug", "crf_weight", "lr", "crop", "batch_size",
                "samples_per_epoch", "seed")
        lines += [f"- {k}: {s[k]}" for k in keys if k in s]
    else:
        lines.append("- not available (exported from a model file without its run folder)")
    lines += ["", "## Validation scores", ""]
    if info.scores:
        lines += [f"- {k}: {v}" for k, v in info.scores.items()]
    else:
        lines.append("- none (the run had no validation data)")
    lines += ["", "## Weights", "",
              "Converted from one state dict; largest difference of each format's foreground "
              "probability from the trained model's, on the test input and a random batch:",
              ""]
    lines += [f"- {f}: {agreement.get(f, 0.0):.2g}" for f in formats]
    lines += ["", "## Citation", "", f"- {_PAPER} doi:{_PAPER_DOI}", f"- {_TOOL}", ""]
    return "\n".join(lines)


def _cover(raw: np.ndarray, prob: np.ndarray, path: Path) -> None:
    """``image | foreground probability`` as an 8-bit PNG (2:1)."""
    from PIL import Image

    img = _normalised(raw, ModelMeta(normalization={"method": "percentile", "low": 1.0,
                                                    "high": 99.8}))
    img = img[:3].mean(0) if img.shape[0] != 3 else np.moveaxis(img, 0, -1)
    img = np.clip(img, 0, 1)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    p = np.repeat(np.clip(prob, 0, 1)[..., None], 3, axis=-1)
    both = (np.concatenate([img, p], axis=1) * 255).round().astype(np.uint8)
    Image.fromarray(both).save(path)


def _environment(path: Path) -> None:
    import segmentation_models_pytorch as smp
    import torch

    torch_version = torch.__version__.split("+")[0]
    path.write_text(
        "name: s2l-unet\nchannels:\n  - conda-forge\n  - nodefaults\ndependencies:\n"
        f"  - python>=3.10\n  - pytorch>={torch_version.rsplit('.', 1)[0]}\n"
        f"  - pip\n  - pip:\n      - segmentation-models-pytorch=={smp.__version__}\n")


def _arch_module():
    """The module of :data:`_ARCH_SOURCE` (the architecture file of the package)."""
    import types

    module = types.ModuleType("s2l_unet")
    exec(compile(_ARCH_SOURCE, ARCH_FILE, "exec"), module.__dict__)  # our own constant text
    return module


def _foreground_net(model, meta: ModelMeta):
    """``ForegroundUnet`` (eval) holding the weights of ``model`` (a CPU float32 U-Net)."""
    net = _arch_module().ForegroundUnet(**_smp_kwargs(meta))
    net.net.load_state_dict(model.state_dict())
    return net.eval()


def _convert_weights(net, folder: Path, in_channels: int, formats) -> dict[str, Path]:
    """Write the weights of ``net`` (a CPU float32 ``ForegroundUnet`` in eval mode) in each
    format (and, for the state dict, the architecture file beside them)."""
    import warnings

    import torch

    files: dict[str, Path] = {}
    if "pytorch_state_dict" in formats:
        files["pytorch_state_dict"] = folder / "weights.pt"
        torch.save({k: v.detach().clone() for k, v in net.state_dict().items()},
                   files["pytorch_state_dict"])
        (folder / ARCH_FILE).write_text(_ARCH_SOURCE)
    dummy = torch.randn(1, in_channels, 2 * PAD_MULTIPLE, 3 * PAD_MULTIPLE,
                        generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in 2.14
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if "torchscript" in formats:
            files["torchscript"] = folder / "weights_torchscript.pt"
            with torch.no_grad():
                traced = torch.jit.trace(net, dummy, check_trace=False)
            traced.save(str(files["torchscript"]))
        if "onnx" in formats:
            files["onnx"] = folder / "weights.onnx"
            dyn = {0: "batch", 2: "y", 3: "x"}
            torch.onnx.export(net, (dummy,), str(files["onnx"]), dynamo=False,
                              export_params=True, opset_version=ONNX_OPSET,
                              do_constant_folding=True, input_names=[INPUT_ID],
                              output_names=[OUTPUT_ID],
                              dynamic_axes={INPUT_ID: dyn, OUTPUT_ID: dyn})
    return files


def _run_weights(fmt: str, path: Path, x: np.ndarray, state_net) -> np.ndarray:
    """Foreground probability ``(N, 1, H, W)`` of a batch ``x`` ``(N, C, H, W)`` with one
    weights file (``state_net`` for the state dict)."""
    import torch

    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run([OUTPUT_ID], {INPUT_ID: x})[0]
    else:
        if fmt == "torchscript":
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location="cpu")
        else:
            net = state_net
        with torch.inference_mode():
            return net(torch.from_numpy(x)).float().numpy()


def _check_agreement(files: dict[str, Path], model, x: np.ndarray,
                     meta: ModelMeta) -> dict[str, float]:
    """Largest |difference| of each written format's foreground probability from the
    original model's (softmax of its logits), on ``x`` and on a second, non-square size;
    raise when one exceeds :data:`AGREEMENT`. The state dict is loaded into the
    architecture file's class, as bioimageio.core does."""
    import torch

    ref_net = None
    if "pytorch_state_dict" in files:
        ref_net = _arch_module().ForegroundUnet(**_smp_kwargs(meta)).eval()
        ref_net.load_state_dict(torch.load(files["pytorch_state_dict"], map_location="cpu",
                                           weights_only=True))
    other = np.random.default_rng(0).standard_normal(
        (2, x.shape[1], 3 * PAD_MULTIPLE, 2 * PAD_MULTIPLE)).astype(np.float32)
    worst: dict[str, float] = {}
    for batch in (x, other):
        with torch.inference_mode():
            logits = model(torch.from_numpy(batch)).float()
        want = torch.softmax(logits, 1)[:, 1:].sum(1, keepdim=True).numpy()
        for fmt, path in files.items():
            got = _run_weights(fmt, path, batch, ref_net)
            diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
            worst[fmt] = max(worst.get(fmt, 0.0), diff)
    bad = {f: d for f, d in worst.items() if not d <= AGREEMENT}
    if bad:
        what = ", ".join(f"{f} {d:.3g}" for f, d in bad.items())
        raise S2LError(f"bioimage.io export: the converted weights disagree with the model "
                       f"(max |diff| {what} > {AGREEMENT:g}); report this with --debug")
    return worst


def export_bioimageio(model, meta: ModelMeta, path: str | os.PathLike, *,
                      test_image: np.ndarray, info: RunInfo | None = None,
                      weight_formats=WEIGHT_FORMATS, check: bool = True) -> Path:
    """Write a model as a BioImage Model Zoo package (spec 0.5; atomic write).

    Parameters
    ----------
    model : torch.nn.Module
        The U-Net of :func:`s2l_tools.training.model.build_model` (logits
        ``(N, meta.classes, H, W)``); copied to the CPU in float32.
    meta : ModelMeta
        Its metadata (normalisation, channels, threshold, ...), stored in the
        package's ``config.s2l``.
    path : path-like
        The ``.zip`` to write.
    test_image : (C, H, W) ndarray
        A raw training image (as stored, before normalisation); a centre crop
        of it (multiples of 32, at most 256 x 256) is the test input.
    info : RunInfo, optional
        Name, authors and what the README says about the run.
    weight_formats : sequence of str, optional
        Some of :data:`WEIGHT_FORMATS` (all by default).
    check : bool, optional
        Validate the package with ``bioimageio.core`` (``test_model``, on the
        CPU, for every weight format) before it replaces ``path``.

    Returns
    -------
    path : Path

    Raises
    ------
    S2LError
        ``bioimageio.core`` missing, a model or image that the spec cannot
        describe, weights that disagree after conversion, or a package that
        fails validation (nothing is written then).
    """
    import copy

    import tifffile
    import torch

    from s2l_tools.io.atomic import atomic_path

    require_bioimageio()
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5

    path = Path(path)
    info = info or RunInfo()
    formats = tuple(f for f in WEIGHT_FORMATS if f in set(weight_formats))
    unknown = sorted(set(weight_formats) - set(WEIGHT_FORMATS))
    if unknown or not formats:
        raise S2LError(f"weight formats {', '.join(unknown) or '(none)'}: choose from "
                       f"{', '.join(WEIGHT_FORMATS)}")
    raw = np.asarray(test_image)
    if raw.ndim != 3 or raw.shape[0] != int(meta.in_channels):
        raise S2LError(f"test image of shape {raw.shape}: expected ({meta.in_channels}, H, W), "
                       "a training image of the model's channels")
    preprocessing = _preprocessing(meta)
    crop = _test_crop(raw).astype(np.float32)
    x = _normalised(crop, meta)[None]
    original = copy.deepcopy(model).to(device="cpu", dtype=torch.float32,
                                       memory_format=torch.contiguous_format).eval()
    net = _foreground_net(original, meta)

    with tempfile.TemporaryDirectory(prefix="s2l-bioimageio-") as tmp:
        folder = Path(tmp)
        files = _convert_weights(net, folder, int(meta.in_channels), formats)
        agreement = _check_agreement(files, original, x, meta)
        prob = _run_weights("pytorch_state_dict", Path(), x, net)
        np.save(folder / "test_input.npy", crop[None])
        np.save(folder / "test_output.npy", prob.astype(np.float32))
        tifffile.imwrite(folder / "sample_input.tif", crop[None])
        tifffile.imwrite(folder / "sample_output.tif", prob.astype(np.float32))
        _cover(crop, prob[0, 0], folder / "cover.png")
        (folder / "README.md").write_text(_readme(info, meta, formats, agreement))
        _environment(folder / "environment.yaml")

        built = folder / "package.zip"
        try:
            descr = _describe(v0_5, meta, info, folder, files, preprocessing)
            save_bioimageio_package(descr, output_path=built)
        except ValueError as exc:  # pydantic's ValidationError: the spec refuses a field
            msg = " ".join(str(exc).split())[:300]
            raise S2LError(f"{path}: the bioimage.io description does not validate ({msg}); "
                           "report this with --debug") from None
        if check:
            check_package(built, weight_formats=formats)
        with atomic_path(path) as part:
            shutil.copyfile(built, part)
    return path


def _describe(v0_5, meta: ModelMeta, info: RunInfo, folder: Path, files, preprocessing):
    """The ``ModelDescr`` of a package whose files are in ``folder``."""
    import segmentation_models_pytorch as smp
    import torch

    from s2l_tools import __version__

    torch_version = torch.__version__.split("+")[0]
    size = v0_5.ParameterizedSize(min=PAD_MULTIPLE, step=PAD_MULTIPLE)
    channels = [f"channel{i}" for i in range(int(meta.in_channels))]
    inp = v0_5.InputTensorDescr(
        id=v0_5.TensorId(INPUT_ID),
        description="raw image as stored (normalised by the preprocessing)",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=channels),
              v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=size),
              v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=size)],
        test_tensor=v0_5.FileDescr(source=folder / "test_input.npy"),
        sample_tensor=v0_5.FileDescr(source=folder / "sample_input.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=preprocessing,
    )
    ref = v0_5.TensorId(INPUT_ID)

    def same_as_input(axis: str):
        return v0_5.SizeReference(tensor_id=ref, axis_id=v0_5.AxisId(axis))

    out = v0_5.OutputTensorDescr(
        id=v0_5.TensorId(OUTPUT_ID),
        description="foreground (cell) probability",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=["foreground"]),
              v0_5.SpaceOutputAxis(id=v0_5.AxisId("y"), size=same_as_input("y")),
              v0_5.SpaceOutputAxis(id=v0_5.AxisId("x"), size=same_as_input("x"))],
        test_tensor=v0_5.FileDescr(source=folder / "test_output.npy"),
        sample_tensor=v0_5.FileDescr(source=folder / "sample_output.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )
    weights = {}
    if "pytorch_state_dict" in files:
        weights["pytorch_state_dict"] = v0_5.PytorchStateDictWeightsDescr(
            source=files["pytorch_state_dict"],
            architecture=v0_5.ArchitectureFromFileDescr(
                source=folder / ARCH_FILE, callable=ARCH_CALLABLE, kwargs=_smp_kwargs(meta)),
            pytorch_version=v0_5.Version(torch_version),
            dependencies=v0_5.FileDescr(source=folder / "environment.yaml"),
        )
    if "torchscript" in files:
        weights["torchscript"] = v0_5.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=v0_5.Version(torch_version),
            **({"parent": "pytorch_state_dict"} if "pytorch_state_dict" in files else {}))
    if "onnx" in files:
        weights["onnx"] = v0_5.OnnxWeightsDescr(
            source=files["onnx"], opset_version=ONNX_OPSET,
            **({"parent": "pytorch_state_dict"} if "pytorch_state_dict" in files else {}))
    authors = [v0_5.Author(name=str(a).replace("/", "-")) for a in info.authors] or \
        [v0_5.Author(name="s2l-tools user")]
    return v0_5.ModelDescr(
        name=info.name,
        description=(f"Cell segmentation U-Net ({meta.encoder}) trained from scribbles with "
                     "Scribble2Label; outputs the foreground (cell) probability."),
        authors=authors,
        cite=[v0_5.CiteEntry(text=_PAPER, doi=v0_5.Doi(_PAPER_DOI)),
              v0_5.CiteEntry(text=_TOOL, url=v0_5.HttpUrl(_TOOL_URL))],
        license=v0_5.LicenseId("BSD-3-Clause"),
        tags=["segmentation", "2d", "cells", "nuclei", "fluorescence-light-microscopy",
              "unet", "pytorch", "scribble2label", "weakly-supervised"],
        documentation=v0_5.FileDescr(source=folder / "README.md"),
        covers=[v0_5.FileDescr(source=folder / "cover.png")],
        inputs=[inp],
        outputs=[out],
        weights=v0_5.WeightsDescr(**weights),
        version=v0_5.Version("0.1.0"),
        config=v0_5.Config(s2l={"meta": asdict(meta), "s2l_version": __version__,
                                "smp_version": smp.__version__}),
    )


def check_package(path: str | os.PathLike, *, weight_formats=None, devices=("cpu",)) -> dict:
    """Test a package with ``bioimageio.core`` (``bioimageio test``) for each weight format.

    Parameters
    ----------
    path : path-like
        A package (``.zip``) or an ``rdf.yaml``.
    weight_formats : sequence of str, optional
        Formats to test; default: every format the package has.
    devices : sequence of str, optional
        Where to run (default: the CPU).

    Returns
    -------
    status : dict of str to str
        ``{format: 'passed'}``.

    Raises
    ------
    S2LError
        A format that does not pass (one line: the first failed check).
    """
    require_bioimageio()
    from bioimageio.core import test_model

    path = Path(path)
    if weight_formats is None:
        descr = _load_descr(path)
        weight_formats = [f for f in WEIGHT_FORMATS if getattr(descr.weights, f, None)]
    status = {}
    for fmt in weight_formats:
        summary = test_model(path, weight_format=fmt, devices=list(devices))
        status[fmt] = summary.status
        if summary.status not in ("passed", "valid-format"):
            raise S2LError(f"{path}: bioimage.io test of the {fmt} weights failed "
                           f"({_first_error(summary)}); report this with --debug")
    return status


def _first_error(summary) -> str:
    for detail in getattr(summary, "details", []):
        for err in getattr(detail, "errors", []):
            loc = ".".join(str(p) for p in getattr(err, "loc", ()) if p != "root")
            msg = " ".join(str(getattr(err, "msg", err)).split())[:200]
            return f"{loc}: {msg}" if loc else msg
    return "no details"


# --------------------------------------------------------------------------- reading
def _load_descr(path: Path):
    """The validated model description of a package; one-line errors otherwise."""
    require_bioimageio()
    from bioimageio.spec import InvalidDescr, load_description

    fix = "give a bioimage.io model package (.zip with rdf.yaml) or an ONNX/run folder model"
    if not path.is_file():
        raise S2LError(f"{path}: no such model file; {fix}")
    if not zipfile.is_zipfile(path):
        raise S2LError(f"{path}: not a zip file; {fix}")
    with zipfile.ZipFile(path) as zf:
        names = {Path(n).name for n in zf.namelist()}
    if not names & {"rdf.yaml", "bioimageio.yaml"}:
        raise S2LError(f"{path}: a zip without rdf.yaml, not a bioimage.io package; {fix}")
    try:
        # "latest": a package of format 0.4 (many zoo models) is read as 0.5
        descr = load_description(path, perform_io_checks=True, format_version="latest")
    except Exception as exc:  # a reader failure is a bad file for the user
        msg = " ".join(str(exc).split())[:200]
        raise S2LError(f"{path}: cannot read the bioimage.io package ({type(exc).__name__}: "
                       f"{msg}); {fix}") from None
    if isinstance(descr, InvalidDescr):
        raise S2LError(f"{path}: the bioimage.io package fails validation "
                       f"({_first_error(descr.validation_summary)}); fix its rdf.yaml or "
                       "export it again")
    if getattr(descr, "type", None) != "model":
        raise S2LError(f"{path}: a bioimage.io {getattr(descr, 'type', 'resource')}, not a "
                       f"model; {fix}")
    return descr


#: preprocessing steps that act on each pixel alone (the same on a tile as on the image)
_POINTWISE = ("ensure_dtype", "scale_linear", "binarize", "sigmoid", "softmax",
              "fixed_zero_mean_unit_variance")


def _axis_kind(axis) -> str:
    """``'batch'``, ``'channel'``, ``'y'`` or ``'x'``."""
    kind = getattr(axis, "type", "")
    return kind if kind in ("batch", "channel") else str(axis.id)


def _check_structure(descr, source: str) -> tuple:
    """The input and output of a single-input single-output 2-D model, or one-line errors."""
    n_in, n_out = len(descr.inputs), len(descr.outputs)
    if n_in != 1 or n_out != 1:
        raise S2LError(f"{source}: a model with {n_in} input(s) and {n_out} output(s); "
                       "s2l-predict runs models with one input image and one output (a "
                       "foreground probability)")
    inp, out = descr.inputs[0], descr.outputs[0]
    if not hasattr(inp, "axes") or isinstance(inp.axes, str):
        raise S2LError(f"{source}: a model of format {descr.format_version}, which has no "
                       "typed axes; update the package to format 0.5 (bioimageio update-format)")
    for tensor, what in ((inp, "input"), (out, "output")):
        for axis in tensor.axes:
            kind = getattr(axis, "type", "")
            if kind == "space" and str(axis.id) not in ("y", "x"):
                raise S2LError(f"{source}: a 3-D model ({what} axis '{axis.id}'); s2l-predict "
                               "segments 2-D images (axes y and x) only")
            if kind not in ("batch", "channel", "space"):
                raise S2LError(f"{source}: the {what} has a {kind} axis '{axis.id}'; "
                               "s2l-predict runs 2-D models (batch, channel, y, x) only")
        spatial = [str(a.id) for a in tensor.axes if getattr(a, "type", "") == "space"]
        if sorted(spatial) != ["x", "y"]:
            raise S2LError(f"{source}: the {what} has spatial axes {spatial}; s2l-predict "
                           "runs 2-D models (axes y and x) only")
    return inp, out


def _foreground_channel(out, source: str) -> int:
    axis = next((a for a in out.axes if getattr(a, "type", "") == "channel"), None)
    if axis is None:
        return 0
    names = [str(n).lower() for n in axis.channel_names]
    if "foreground" in names:
        return names.index("foreground")
    if len(names) == 1:
        return 0
    if len(names) == 2:
        return 1
    raise S2LError(f"{source}: the output has {len(names)} channels ({', '.join(names)}) and "
                   "none is named 'foreground'; s2l-predict needs a foreground probability")


def _split_preprocessing(inp, source: str) -> tuple[dict, list]:
    """(s2l normalisation of the whole image, the pointwise steps left for each tile)."""
    steps = list(inp.preprocessing)
    norm: dict = {"method": "none"}
    rest = []
    for i, step in enumerate(steps):
        kind = str(step.id)
        if kind == "scale_range" and norm["method"] == "none" and \
                all(str(s.id) == "ensure_dtype" for s in steps[:i]):
            kw = step.kwargs
            axes = {str(a) for a in (kw.axes or ())}
            ref = getattr(kw, "reference_tensor", None)
            if {"y", "x"} <= axes and "batch" not in axes and "channel" not in axes and \
                    (ref is None or str(ref) == str(inp.id)):
                norm = {"method": "percentile", "low": float(kw.min_percentile),
                        "high": float(kw.max_percentile)}
                continue
        if kind == "clip" and getattr(step.kwargs, "min_percentile", None) is None and \
                getattr(step.kwargs, "max_percentile", None) is None:
            rest.append(step)
            continue
        if kind not in _POINTWISE:
            raise S2LError(f"{source}: input preprocessing '{kind}' needs statistics that "
                           "s2l-predict's tiles cannot reproduce (it takes a percentile "
                           "scale_range over y and x of each image, then per-pixel steps); "
                           "run this model with bioimageio.core (bioimageio predict)")
        rest.append(step)
    return norm, rest


def _size_fn(axis, source: str):
    """``size(n)``: the smallest length the model takes that is at least ``n``."""
    from bioimageio.spec.model import v0_5

    size = axis.size
    if isinstance(size, int):
        return lambda n: size, size
    if isinstance(size, v0_5.ParameterizedSize):
        lo, step = int(size.min), int(size.step)
        return (lambda n: lo + max(0, -(-(n - lo) // step)) * step), None
    raise S2LError(f"{source}: input axis '{axis.id}' has a size given by another tensor; "
                   "s2l-predict needs a fixed or min + k * step size")


def load_bioimageio(path: str | os.PathLike, *, device="cpu", weight_format: str | None = None):
    """A batch function and the ModelMeta of a bioimage.io model package, for s2l-predict.

    Parameters
    ----------
    path : path-like
        A package (``.zip``): ours (:func:`export_bioimageio`) or any
        single-input single-output 2-D model whose output is a foreground
        probability (a channel named ``foreground``, else the second of two
        channels, else the only one).
    device : str or torch.device, optional
        ``'cpu'`` or ``'cuda'``.
    weight_format : str, optional
        The weights to run; default: the first of ``pytorch_state_dict``,
        ``torchscript``, ``onnx`` in the package, else ``bioimageio.core``'s
        choice.

    Returns
    -------
    fn : callable
        Maps a float32 batch ``(N, C, h, w)``, normalised as ``meta.normalization``
        says, to ``(N, 2, h, w)`` (background, foreground probability). Tiles
        are padded (reflect) to a size the model takes and the output cropped.
    meta : ModelMeta
        ``normalization``: the package's ``scale_range`` (percentiles over y
        and x of each image; ``'none'`` without one), which s2l-predict applies
        to the whole image; the other (per-pixel) steps, the network and the
        postprocessing run per tile. Threshold, minimum size, tile and overlap
        come from ``config.s2l`` when we wrote the package, else the defaults.

    Raises
    ------
    S2LError
        Not a zip, not a bioimage.io package, one that fails validation, not a
        model, several inputs or outputs, a 3-D or time-lapse model, an output
        without a foreground probability, preprocessing that needs whole-image
        statistics other than percentiles, or weights that cannot be loaded.
    """
    path = Path(path)
    source = str(path)
    descr = _load_descr(path)
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline
    from bioimageio.core.common import MemberId

    inp, out = _check_structure(descr, source)
    fg = _foreground_channel(out, source)
    norm, rest = _split_preprocessing(inp, source)
    for step in out.postprocessing:
        if str(step.id) not in _POINTWISE + ("clip",):
            raise S2LError(f"{source}: output postprocessing '{step.id}' needs statistics "
                           "that s2l-predict's tiles cannot reproduce; run this model with "
                           "bioimageio.core (bioimageio predict)")
    in_kinds = [_axis_kind(a) for a in inp.axes]
    in_ids = tuple(str(a.id) for a in inp.axes)
    channel_axis = next((a for a in inp.axes if getattr(a, "type", "") == "channel"), None)
    in_channels = len(channel_axis.channel_names) if channel_axis is not None else 1
    sizes = {str(a.id): _size_fn(a, source) for a in inp.axes
             if getattr(a, "type", "") == "space"}

    config = getattr(descr, "config", None)
    extra = (config.model_extra or {}) if config is not None else {}
    ours = extra.get("s2l", {}).get("meta", {}) if isinstance(extra.get("s2l"), dict) else {}
    meta = ModelMeta.from_dict({**ModelMeta(tile=512, overlap=64).__dict__, **ours,
                                "in_channels": in_channels, "classes": 2,
                                "normalization": norm})
    if not ours:
        meta.encoder, meta.channel = f"bioimageio:{descr.name}", None
    fixed = [s for _, s in sizes.values() if s is not None]
    if fixed:
        biggest = min(fixed) // PAD_MULTIPLE * PAD_MULTIPLE
        if biggest < PAD_MULTIPLE:
            raise S2LError(f"{source}: the model takes a fixed size of {min(fixed)} pixels; "
                           f"s2l-predict needs tiles of at least {PAD_MULTIPLE}")
        meta.tile = min(meta.tile, biggest)
        meta.overlap = min(meta.overlap, meta.tile // 4)

    inp2 = inp.model_copy(update={"preprocessing": rest})
    descr2 = descr.model_copy(update={"inputs": [inp2]})
    available = [f for f in WEIGHT_FORMATS if getattr(descr.weights, f, None) is not None]
    if weight_format is not None and weight_format not in available:
        raise S2LError(f"{source}: no {weight_format} weights in this package (it has "
                       f"{', '.join(available) or 'none of ' + ', '.join(WEIGHT_FORMATS)})")
    fmt = weight_format or (available[0] if available else None)
    dev = "cuda" if str(getattr(device, "type", device)) == "cuda" else "cpu"
    try:
        pipeline = create_prediction_pipeline(descr2, devices=[dev], weights_format=fmt)
    except Exception as exc:  # weights the runtime cannot load: one line for the user
        msg = " ".join(str(exc).split())[:200]
        raise S2LError(f"{source}: cannot load the model's {fmt or 'weights'} "
                       f"({type(exc).__name__}: {msg}); check the package with: bioimageio "
                       f"test {path}") from None
    in_id, out_id = MemberId(str(inp.id)), MemberId(str(out.id))
    has_batch = "batch" in in_kinds
    one_at_a_time = not has_batch or any(
        getattr(a, "type", "") == "batch" and getattr(a, "size", None) == 1 for a in inp.axes)
    out_channel = next((str(a.id) for a in out.axes if getattr(a, "type", "") == "channel"),
                       None)
    out_order = [next(str(a.id) for a in out.axes if _axis_kind(a) == k)
                 for k in ("batch", "y", "x") if k in [_axis_kind(a) for a in out.axes]]

    def run_one(x: np.ndarray) -> np.ndarray:
        """``x`` ``(n, C, h, w)`` (``n`` = 1 for a model without a batch axis) ->
        foreground ``(n, h, w)``."""
        n, c, h, w = x.shape
        ph, pw = sizes["y"][0](h), sizes["x"][0](w)
        if ph < h or pw < w:
            raise S2LError(f"{source}: tiles of {h}x{w} pixels are larger than the model's "
                           f"fixed input size {ph}x{pw}; use --tile {min(ph, pw) // 32 * 32} "
                           "or less")
        if (ph, pw) != (h, w):
            x = np.pad(x, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)),
                       mode="reflect" if min(h, w) > 1 else "edge")
        src = ["batch", "channel", "y", "x"]
        if channel_axis is None:
            x, src = x[:, 0], ["batch", "y", "x"]
        if not has_batch:  # called with n = 1
            x, src = x[0], src[1:]
        arr = np.ascontiguousarray(np.transpose(x, [src.index(k) for k in in_kinds]))
        result = pipeline.predict_sample_without_blocking(
            Sample(members={in_id: Tensor.from_numpy(arr, dims=in_ids)}, stat={}, id=0))
        y = result.members[out_id].data
        if out_channel is not None:
            y = y.isel({out_channel: fg})
        prob = np.asarray(y.transpose(*out_order).values, dtype=np.float32)
        if prob.ndim == 2:
            prob = prob[None]
        if prob.shape[-2:] != (ph, pw):
            raise S2LError(f"{source}: the output is {prob.shape[-2]}x{prob.shape[-1]} for "
                           f"an input of {ph}x{pw}; s2l-predict needs an output of the "
                           "input's size")
        return prob[:, :h, :w]

    def fn(batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        if one_at_a_time:
            p = np.concatenate([run_one(x[i:i + 1]) for i in range(x.shape[0])])
        else:
            p = run_one(x)
        return np.stack([1.0 - p, p], axis=1)

    return fn, meta

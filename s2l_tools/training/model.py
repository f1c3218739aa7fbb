"""The Scribble2Label network: a U-Net with a ResNet encoder.

The paper uses a U-Net with a ResNet-50 encoder (ResNet-34 for histology) and a
2-class softmax output; the authors added scSE attention in the decoder. The
encoder starts random unless ``weights`` names ImageNet weights: ``'imagenet'``
(torchvision's, fetched once into torch's cache, ``$TORCH_HOME/hub/checkpoints``,
and read from there offline), a URL (``https://``, ``file://``; cached the same
way) or a local torchvision ResNet state dict (e.g. ``resnet50-0676ba61.pth``
copied by hand to an air-gapped machine). See :func:`resolve_encoder_weights`.

Output of the model: logits ``(N, classes, H, W)``; class 0 = background,
1 = foreground. ``H`` and ``W`` must be multiples of 32 (see
:func:`s2l_tools.inference.tiling.predict_tiled`, which pads and tiles any image).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from s2l_tools.training.config import ENCODERS as _ENCODER_NAMES
from s2l_tools.errors import S2LError

__all__ = ["ENCODERS", "build_model", "resolve_encoder_weights", "load_encoder_weights",
           "param_groups", "count_parameters"]

#: torchvision ResNets -> (block type, blocks per stage); all of them name what a wrong
#: weights file seems to be, the supported ones (config.ENCODERS) are :data:`ENCODERS`
_KNOWN_RESNETS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
#: supported encoders -> (block type, blocks per stage)
ENCODERS = {name: _KNOWN_RESNETS[name] for name in _ENCODER_NAMES}


def build_model(
    *,
    encoder: str = "resnet34",
    in_channels: int = 1,
    classes: int = 2,
    weights: str | Path | None = None,
    attention: str | None = "scse",
    seed: int | None = None,
) -> torch.nn.Module:
    """Build the U-Net used for Scribble2Label.

    Parameters
    ----------
    encoder : {'resnet18', 'resnet34', 'resnet50'}
        ResNet encoder (paper: resnet50; resnet34 for histology).
    in_channels : int
        Channels of the input images (1 grey, 3 RGB, ...).
    classes : int
        Output classes (2: background, foreground).
    weights : str or path, optional
        ``'imagenet'``, a URL or a local torchvision ResNet state dict
        (``.pth``/``.pt`` or ``.safetensors``) loaded into the encoder, see
        :func:`resolve_encoder_weights` and :func:`load_encoder_weights`.
        None: random encoder.
    attention : {'scse', None}
        Decoder attention (the authors used scSE).
    seed : int, optional
        Seed for the random initialisation, drawn from a forked RNG so the global
        torch RNG is left untouched. None: torch's global RNG.

    Returns
    -------
    model : segmentation_models_pytorch.Unet
        ``model(x)`` maps ``(N, in_channels, H, W)`` to logits ``(N, classes, H, W)``.
    """
    if encoder not in ENCODERS:
        raise S2LError(
            f"encoder {encoder!r} is not supported; use one of {', '.join(ENCODERS)}"
        )
    if in_channels < 1 or classes < 2:
        raise S2LError(
            f"in_channels={in_channels}, classes={classes}: need in_channels >= 1 and classes >= 2"
        )
    if attention not in ("scse", None):
        raise S2LError(f"attention {attention!r} is not supported; use 'scse' or None")
    import segmentation_models_pytorch as smp

    def make() -> torch.nn.Module:
        return smp.Unet(
            encoder_name=encoder,
            encoder_weights=None,
            in_channels=in_channels,
            classes=classes,
            decoder_attention_type=attention,
        )

    if seed is None:
        model = make()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = make()
    if weights is not None:
        load_encoder_weights(model, resolve_encoder_weights(weights, encoder), encoder=encoder)
    return model


#: torchvision's ImageNet weights (IMAGENET1K_V1, the paper's era) for ``weights='imagenet'``
IMAGENET_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
}


def resolve_encoder_weights(weights: str | Path, encoder: str) -> Path:
    """The local file of an encoder weights setting, fetching it once if needed.

    Parameters
    ----------
    weights : str or path
        ``'imagenet'`` (torchvision's ImageNet weights of ``encoder``), a URL
        (``https://...``, ``file://...``) or a local file path.
    encoder : str
        The encoder's name (picks the ImageNet file).

    Returns
    -------
    path : Path
        A local file: the path itself, or the copy in torch's cache
        (``torch.hub.get_dir() / 'checkpoints'``; set ``TORCH_HOME`` to move it).
        A cached copy is used without any network access.

    Raises
    ------
    S2LError
        When the file is neither cached nor downloadable (one line: what to do offline).
    """
    text = str(weights)
    if text == "imagenet":
        if encoder not in IMAGENET_URLS:
            raise S2LError(f"--encoder-weights imagenet: no ImageNet weights known for "
                           f"{encoder}; use one of {', '.join(IMAGENET_URLS)}")
        url = IMAGENET_URLS[encoder]
    elif re.match(r"^(https?|file)://", text):
        url = text
    else:
        return Path(text)
    from urllib.parse import unquote, urlparse

    name = Path(unquote(urlparse(url).path)).name or "weights.pth"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cached.is_file():
        return cached
    # torchvision's file names carry the first hex digits of the file's sha256
    match = re.search(r"-([a-f0-9]{6,})\.", name) if text == "imagenet" else None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), match.group(1) if match else None,
                                       progress=False)
    except Exception as exc:  # offline, refused, wrong hash: one line that says what to do
        cached.unlink(missing_ok=True)
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise S2LError(f"--encoder-weights {text}: cannot fetch {url} ({reason}) and "
                       f"{cached} does not exist; on a machine with internet fetch it "
                       "once (or copy the file there), or pass a local .pth file") from None
    return cached


def load_encoder_weights(model: torch.nn.Module, path: str | Path, *, encoder: str) -> None:
    """Load a local torchvision ResNet state dict into ``model.encoder``, in place.

    Parameters
    ----------
    model : segmentation_models_pytorch.Unet
        Built by :func:`build_model` with the same ``encoder``.
    path : path
        ``.safetensors`` (``safetensors.torch.load_file``) or anything else loaded
        with ``torch.load(weights_only=True)``. A bare state dict, or one under a
        ``'state_dict'``/``'model'`` key; ``module.`` (DDP) and ``encoder.``
        prefixes are stripped; ``fc.*`` (the classifier) is ignored.
    encoder : str
        The encoder's name, to check the file against.

    Notes
    -----
    smp's ``ResNetEncoder`` subclasses torchvision's ``ResNet``, so the keys are
    the same. The first convolution is adapted to ``in_channels`` the way smp
    adapts pretrained weights: for 1 channel the RGB kernels are summed (a grey
    image then gives the response the RGB network gives to that grey image
    repeated on R, G and B); for C other than 1 and 3, channel ``i`` takes RGB
    kernel ``i % 3`` and all are scaled by ``3 / C``.
    """
    path = Path(path)
    state = _read_state_dict(path)
    target = model.encoder.state_dict()
    expected = {k for k in target if not k.endswith("num_batches_tracked")}
    given = {k for k in state if not k.startswith("fc.")}
    missing = sorted(expected - given)
    unexpected = sorted(given - set(target))
    bad_shape = sorted(
        k
        for k in expected & given
        if k != "conv1.weight" and tuple(state[k].shape) != tuple(target[k].shape)
    )
    if missing or unexpected or bad_shape:
        guess = _guess_resnet(state)
        hint = (
            f"it looks like a {guess} state dict: build the model with encoder {guess}"
            if guess and guess != encoder
            else "pass a torchvision ResNet state dict of the same depth"
        )
        what = (
            f"{len(missing)} missing keys (e.g. {missing[0]!r})"
            if missing
            else f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]!r})"
            if unexpected
            else f"{len(bad_shape)} keys of the wrong shape (e.g. {bad_shape[0]!r})"
        )
        raise S2LError(f"{path}: not a {encoder} encoder state dict ({what}); {hint}")

    conv = state["conv1.weight"]
    want = target["conv1.weight"]
    if conv.ndim != 4 or conv.shape[0] != want.shape[0] or conv.shape[2:] != want.shape[2:]:
        raise S2LError(
            f"{path}: conv1.weight has shape {tuple(conv.shape)}, expected "
            f"{tuple(want.shape)}; pass a torchvision {encoder} state dict"
        )
    n_in = want.shape[1]
    if conv.shape[1] != n_in:
        if conv.shape[1] != 3:
            raise S2LError(
                f"{path}: conv1.weight takes {conv.shape[1]} channels, the model "
                f"{n_in}; use weights for 3 (RGB) or {n_in} channels"
            )
        conv = _adapt_first_conv(conv, n_in)
    new = {k: v for k, v in state.items() if k in target}
    new["conv1.weight"] = conv
    with torch.no_grad():
        model.encoder.load_state_dict(new, strict=False)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    fix = "pass a local torchvision ResNet state dict (.pth, .pt or .safetensors)"
    if not path.is_file():
        raise S2LError(f"{path}: no such weights file; {fix}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure is a bad file for the user
        msg = " ".join(str(exc).split())[:200]
        raise S2LError(f"{path}: cannot read weights ({type(exc).__name__}: {msg}); {fix}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise S2LError(f"{path}: not a state dict (a mapping of names to tensors); {fix}")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return state


def _adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB kernels ``(O, 3, k, k)`` -> ``(O, in_channels, k, k)``, smp's rule."""
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    idx = torch.arange(in_channels) % weight.shape[1]
    return weight[:, idx] * (weight.shape[1] / in_channels)


def _guess_resnet(state: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the torchvision ResNet whose layout matches ``state``, if any."""
    blocks = [0, 0, 0, 0]
    for key in state:
        m = re.match(r"layer([1-4])\.(\d+)\.", key)
        if m:
            i = int(m.group(1)) - 1
            blocks[i] = max(blocks[i], int(m.group(2)) + 1)
    kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    for name, (k, b) in _KNOWN_RESNETS.items():
        if k == kind and tuple(blocks) == b:
            return name
    return None


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel/DataParallel wrapper."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def param_groups(
    model: torch.nn.Module,
    lr: float,
    *,
    decoder_mult: float = 10.0,
    weight_decay: float = 5e-5,
) -> list[dict]:
    """Optimizer parameter groups: encoder at ``lr``, the rest at ``decoder_mult * lr``.

    Parameters
    ----------
    model : torch.nn.Module
        A model with an ``encoder`` attribute (possibly wrapped in DDP).
    lr : float
        Encoder learning rate (authors: 3e-4 with RAdam).
    decoder_mult : float
        Learning-rate factor for the decoder and segmentation head (authors: 10).
    weight_decay : float
        Applied to every parameter (authors: 5e-5).

    Returns
    -------
    groups : list of dict
        ``[{'name': 'encoder', 'params', 'lr', 'weight_decay'},
        {'name': 'decoder', ...}]``, for ``torch.optim.RAdam(groups)``.
    """
    inner = _unwrap(model)
    if not isinstance(getattr(inner, "encoder", None), torch.nn.Module):
        raise ValueError("param_groups: the model has no 'encoder' submodule")
    enc_ids = {id(p) for p in inner.encoder.parameters()}
    enc = [p for p in inner.parameters() if id(p) in enc_ids and p.requires_grad]
    dec = [p for p in inner.parameters() if id(p) not in enc_ids and p.requires_grad]
    return [
        {"name": "encoder", "params": enc, "lr": lr, "weight_decay": weight_decay},
        {"name": "decoder", "params": dec, "lr": lr * decoder_mult, "weight_decay": weight_decay},
    ]


def count_parameters(model: torch.nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (all, or those with ``requires_grad``)."""
    return sum(p.numel() for p in _unwrap(model).parameters() if p.requires_grad or not trainable_only)

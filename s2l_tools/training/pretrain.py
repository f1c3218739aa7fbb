"""Self-supervised pretraining of the encoder on the dataset's own images.

Where no ImageNet weights can be fetched (an air-gapped microscope PC, CI), the
encoder can still start from something better than random: the U-Net learns to
fill in masked blocks of the user's images (masked image modelling, as SimMIM
and SparK do for CNNs; DenoiSeg, Buchholz et al. 2020, found a reconstruction
task helps segmentation from few labels), and the encoder keeps what it learnt.
No label is used: ``s2l-train --encoder-weights self`` passes it the run's training images.

:func:`pretrain_encoder` is a plain function of arrays; :func:`cached_pretrained`
keys its result by the images and settings and keeps it in a cache folder, so a
second run on the same images starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["PretrainSettings", "pretrain_encoder", "cached_pretrained", "cache_dir"]


@dataclass(frozen=True)
class PretrainSettings:
    """How the encoder is pretrained (see :func:`pretrain_encoder`)."""

    encoder: str = "resnet18"
    #: TrainConfig.pretrain_steps's default (written out there to keep torch off --help)
    steps: int = 200
    crop: int = 128
    batch_size: int = 8
    lr: float = 1e-3
    #: side of the square blocks that are masked, and the share of blocks masked
    block: int = 8
    mask_ratio: float = 0.5
    seed: int = 0


def _masked_batch(images, settings, rng):
    """A batch of augmented crops and their block masks (1 = hidden)."""
    from s2l_tools.data.augment import augment

    xs = []
    for i in rng.integers(len(images), size=settings.batch_size):
        image = images[i]
        blank = np.zeros(image.shape[1:], np.uint8)
        xs.append(augment(image, blank, rng=rng, crop=settings.crop)[0])
    x = torch.from_numpy(np.stack(xs))
    cells = -(-settings.crop // settings.block)
    hide = rng.random((len(xs), 1, cells, cells)) < settings.mask_ratio
    hide = np.kron(hide, np.ones((1, 1, settings.block, settings.block), bool))
    hide = torch.from_numpy(hide[..., :settings.crop, :settings.crop].astype(np.float32))
    return x, hide


def pretrain_encoder(images: list[np.ndarray], settings: PretrainSettings = PretrainSettings(),
                     *, device: str | torch.device = "cpu",
                     progress=None) -> dict[str, torch.Tensor]:
    """Pretrain a U-Net to fill in masked blocks of ``images``; return its encoder's weights.

    Parameters
    ----------
    images : list of (C, H, W) float32 ndarray
        Normalised images (:func:`s2l_tools.io.images.read_image`), all with the same C.
    settings : PretrainSettings
        Encoder, steps, crop, batch, learning rate, block size and masked share, seed.
    device : str or torch.device
        Where to train.
    progress : callable, optional
        Called with the step's loss after every step.

    Returns
    -------
    state : dict of str to Tensor
        The encoder's state dict (torchvision ResNet keys, on the CPU), for
        ``build_model(weights=...)`` once saved to a file.

    Notes
    -----
    Each step draws ``batch_size`` crops with the training's augmentation, hides
    ``mask_ratio`` of their ``block`` x ``block`` blocks (set to 0) and minimises
    the squared error of the U-Net's output on the hidden pixels.
    """
    from s2l_tools.training.model import build_model

    if not images:
        raise ValueError("pretrain_encoder: no images")
    n_in = images[0].shape[0]
    device = torch.device(device)
    rng = np.random.default_rng(settings.seed)
    model = build_model(encoder=settings.encoder, in_channels=n_in, classes=max(2, n_in),
                        seed=settings.seed).to(device)
    model.train()
    # foreach: the multi-tensor update on the CPU too (as the training's RAdam)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4, foreach=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.lr, total_steps=settings.steps,
                                                pct_start=0.1)
    for _ in range(settings.steps):
        x, hide = _masked_batch(images, settings, rng)
        x, hide = x.to(device), hide.to(device)
        out = model(x * (1 - hide))[:, :n_in]
        loss = (((out - x) ** 2) * hide).sum() / (hide.sum() * n_in).clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(loss.item())
    return {k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()}


def cache_dir() -> Path:
    """``$S2L_CACHE`` or ``~/.cache/s2l-tools``, + ``pretrained``."""
    root = os.environ.get("S2L_CACHE") or Path.home() / ".cache" / "s2l-tools"
    return Path(root) / "pretrained"


def cached_pretrained(images: list[np.ndarray], settings: PretrainSettings = PretrainSettings(),
                      *, folder: str | os.PathLike | None = None, device="cpu",
                      progress=None) -> Path:
    """The file of :func:`pretrain_encoder`'s weights for these images and settings.

    Trained once and written atomically to ``folder`` (default :func:`cache_dir`),
    named by a hash of the images and settings; later calls return the file. A folder
    that cannot be written raises a one-line ``S2LError`` before any training.
    """
    from s2l_tools.io.atomic import atomic_path
    from s2l_tools.training.data import array_digest

    h = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    for image in images:
        h.update(array_digest(image).encode())
    folder = Path(folder) if folder is not None else cache_dir()
    path = folder / f"{settings.encoder}-mim-{h.hexdigest()[:16]}.pth"
    if path.is_file():
        return path
    # the folder is made (or refused, in one line) before the minutes of training
    with atomic_path(path) as tmp:
        torch.save(pretrain_encoder(images, settings, device=device, progress=progress), tmp)
    return path

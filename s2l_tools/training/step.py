"""The Scribble2Label training step, as plain functions of tensors.

Losses (``logits`` ``(N, 2, H, W)``; class 0 background, 1 foreground):

- ``L_sp``: cross entropy over the scribbled pixels only (mean over them).
- ``L_up``: cross entropy over the unscribbled pixels whose EMA prediction
  ``y`` is confident, ``max(y, 1 - y) > tau``, labelled ``argmax`` (mean over them).
- total ``L_sp + lambda * L_up`` (``lambda = 0.5``) once ``use_pseudo`` (after
  the warm-up, with the EMA store initialised); ``L_sp`` alone before.

A loss over an empty pixel set is 0 and still attached to the graph, so a
batch without scribbles backpropagates zeros instead of NaN (and DDP sees
every parameter used).

Methods (``method=``): ``'s2l'`` (above), ``'pce'`` (``L_sp`` only),
``'pseudo'`` (the Pseudo-Label baseline: ``L_up`` from the current
prediction, detached, not averaged), ``'full'`` (cross entropy on the full mask).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from s2l_tools.training.config import METHODS

__all__ = [
    "IGNORE_INDEX",
    "METHODS",
    "scribble_targets",
    "scribble_loss",
    "pseudo_labels",
    "unscribbled_loss",
    "compute_losses",
    "train_step",
]

IGNORE_INDEX = -100


def scribble_targets(scribble: torch.Tensor) -> torch.Tensor:
    """Cross-entropy targets of a scribble mask.

    Parameters
    ----------
    scribble : (N, H, W) uint8 or integer tensor
        0 unlabeled, ``k + 1`` class ``k``.

    Returns
    -------
    target : (N, H, W) int64 tensor
        ``scribble - 1``, with unlabeled pixels set to ``IGNORE_INDEX``.
    """
    s = scribble.long()
    return torch.where(s > 0, s - 1, torch.full_like(s, IGNORE_INDEX))


def _masked_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over the pixels with ``target != IGNORE_INDEX``; 0 if none."""
    n = (target != IGNORE_INDEX).sum()
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / n.clamp(min=1)


def scribble_loss(logits: torch.Tensor, scribble: torch.Tensor) -> torch.Tensor:
    """``L_sp``: cross entropy over the scribbled pixels, mean over them.

    Parameters
    ----------
    logits : (N, C, H, W) float tensor
    scribble : (N, H, W) uint8 or integer tensor
        0 unlabeled, ``k + 1`` class ``k`` (``k < C``).

    Returns
    -------
    loss : 0-d float32 tensor
        0 (attached to the graph) when no pixel of the batch is scribbled.
    """
    _check_shapes(logits, scribble, "scribble")
    top = int(scribble.max())
    if top > logits.shape[1]:
        raise ValueError(f"scribble value {top} has no class among the {logits.shape[1]} logits")
    return _masked_ce(logits, scribble_targets(scribble))


def pseudo_labels(
    ema_fg: torch.Tensor, scribble: torch.Tensor, *, threshold: float = 0.8
) -> torch.Tensor:
    """Filtered pseudo-labels of the unscribbled pixels.

    Parameters
    ----------
    ema_fg : (N, H, W) float or uint8 tensor
        Foreground probability ``y`` in [0, 1]; uint8 is read as ``y * 255``
        (the augmentation's uint8 maps).
    scribble : (N, H, W) uint8 or integer tensor
        Scribbled pixels (``!= 0``) are never pseudo-labelled.
    threshold : float
        ``tau`` in [0.5, 1): a pixel is confident when ``max(y, 1 - y) > tau``
        (strictly; ``y == tau`` is not confident). 0.8 in the paper, 0.95 on
        noisy data. The augmentation's fill value 0.5 is never confident.

    Returns
    -------
    target : (N, H, W) int64 tensor
        1 where ``y > 0.5``, 0 where ``y < 0.5`` (confident, unscribbled pixels);
        ``IGNORE_INDEX`` everywhere else.
    """
    if not 0.5 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0.5, 1), got {threshold}")
    _check_shapes(ema_fg, scribble, "scribble", dims=3)
    y = ema_fg.float() / 255.0 if ema_fg.dtype == torch.uint8 else ema_fg.float()
    confident = (torch.maximum(y, 1.0 - y) > threshold) & (scribble == 0)
    label = (y > 0.5).long()
    return torch.where(confident, label, torch.full_like(label, IGNORE_INDEX))


def unscribbled_loss(logits: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
    """``L_up``: cross entropy over the pseudo-labelled pixels, mean over them.

    Parameters
    ----------
    logits : (N, C, H, W) float tensor
    pseudo : (N, H, W) int64 tensor
        From :func:`pseudo_labels` (``IGNORE_INDEX`` = no label).

    Returns
    -------
    loss : 0-d float32 tensor
        0 (attached to the graph) when no pixel has a pseudo-label.
    """
    _check_shapes(logits, pseudo, "pseudo")
    return _masked_ce(logits, pseudo)


def compute_losses(
    logits: torch.Tensor,
    scribble: torch.Tensor,
    ema_fg: torch.Tensor | None = None,
    *,
    method: str = "s2l",
    use_pseudo: bool = True,
    threshold: float = 0.8,
    pseudo_weight: float = 0.5,
    full_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The training loss of one batch, for any of the methods.

    Parameters
    ----------
    logits : (N, 2, H, W) float tensor
    scribble : (N, H, W) uint8 or integer tensor
    ema_fg : (N, H, W) float tensor, optional
        EMA foreground probability (augmented with the image). Needed by
        ``'s2l'`` when ``use_pseudo``; ignored by the other methods.
    method : {'s2l', 'pce', 'pseudo', 'full'}
        ``'s2l'``: ``L_sp + pseudo_weight * L_up`` with pseudo-labels from
        ``ema_fg``. ``'pce'``: ``L_sp``. ``'pseudo'``: as ``'s2l'`` with
        pseudo-labels from the current prediction ``softmax(logits)``
        (detached). ``'full'``: mean cross entropy over all pixels against
        ``full_mask``.
    use_pseudo : bool
        Whether ``L_up`` is on (False during the warm-up); ``'s2l'`` and
        ``'pseudo'`` only.
    threshold : float
        ``tau`` of :func:`pseudo_labels`.
    pseudo_weight : float
        ``lambda``.
    full_mask : (N, H, W) integer tensor, optional
        For ``'full'``: 0 background, > 0 foreground (binary or instance labels).

    Returns
    -------
    losses : dict of 0-d tensors
        ``'loss'`` (to backpropagate), ``'l_sp'``, ``'l_up'`` (0 when off),
        ``'l_full'`` (0 unless ``'full'``), ``'coverage'`` (detached: fraction of
        the unscribbled pixels that got a pseudo-label; 0 when off).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    l_sp = scribble_loss(logits, scribble)
    zero = logits.new_zeros((), dtype=torch.float32)
    out = {"l_sp": l_sp, "l_up": zero, "l_full": zero, "coverage": zero}

    if method == "full":
        if full_mask is None:
            raise ValueError("method 'full' needs full_mask")
        _check_shapes(logits, full_mask, "full_mask")
        target = (full_mask > 0).long()
        out["l_full"] = F.cross_entropy(logits.float(), target)
        out["loss"] = out["l_full"]
        return out

    if method == "pce" or not use_pseudo:
        out["loss"] = l_sp
        return out

    if method == "s2l":
        if ema_fg is None:
            raise ValueError("method 's2l' with use_pseudo=True needs the EMA map (ema_fg)")
        y = ema_fg
    else:  # 'pseudo': the current prediction, no averaging
        y = torch.softmax(logits.detach().float(), dim=1)[:, 1]
    pseudo = pseudo_labels(y, scribble, threshold=threshold)
    l_up = unscribbled_loss(logits, pseudo)
    n_unscribbled = (scribble == 0).sum().clamp(min=1)
    out["l_up"] = l_up
    out["coverage"] = ((pseudo != IGNORE_INDEX).sum() / n_unscribbled).float()
    out["loss"] = l_sp + pseudo_weight * l_up
    return out


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, torch.Tensor],
    *,
    method: str,
    use_pseudo: bool,
    threshold: float = 0.8,
    pseudo_weight: float = 0.5,
    scaler: torch.amp.GradScaler | None = None,
    autocast_dtype: torch.dtype | None = None,
    device: torch.device | str,
) -> dict[str, float]:
    """One optimisation step: forward, losses, backward, optimizer step.

    Parameters
    ----------
    model : torch.nn.Module
        Already on ``device`` (possibly DDP-wrapped); put in train mode here.
    optimizer : torch.optim.Optimizer
    batch : dict of tensors
        ``'image'`` (N, C, H, W) float32, ``'scribble'`` (N, H, W) uint8/int,
        ``'ema'`` (N, H, W) float32 foreground probability (may be absent
        while ``use_pseudo`` is False or the method does not use it),
        ``'mask'`` (N, H, W) integer full mask (method ``'full'``).
    method, use_pseudo, threshold, pseudo_weight
        See :func:`compute_losses`.
    scaler : torch.amp.GradScaler, optional
        Loss scaling for float16 mixed precision.
    autocast_dtype : torch.dtype, optional
        Run the forward under ``torch.autocast(device.type, autocast_dtype)``
        (e.g. ``torch.bfloat16`` or ``torch.float16`` on CUDA). The losses are
        computed in float32.
    device : torch.device or str

    Returns
    -------
    losses : dict of float
        ``'loss'``, ``'l_sp'``, ``'l_up'``, ``'l_full'``, ``'coverage'``
        (values before the update). A non-finite loss is returned as is; the
        step is then skipped by the scaler if one is given, so check ``'loss'``.
    """
    device = torch.device(device)
    model.train()
    image = batch["image"].to(device, non_blocking=True)
    scribble = batch["scribble"].to(device, non_blocking=True)
    ema = batch.get("ema")
    ema = None if ema is None else ema.to(device, non_blocking=True)
    mask = batch.get("mask")
    mask = None if mask is None else mask.to(device, non_blocking=True)

    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(image)
    losses = compute_losses(
        logits, scribble, ema, method=method, use_pseudo=use_pseudo,
        threshold=threshold, pseudo_weight=pseudo_weight, full_mask=mask,
    )
    loss = losses["loss"]
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    values = torch.stack([v.detach().float() for v in losses.values()]).cpu().tolist()
    return dict(zip(losses.keys(), values))


def _check_shapes(a: torch.Tensor, b: torch.Tensor, name: str, dims: int = 4) -> None:
    want = (a.shape[0], *a.shape[-2:])
    if a.ndim != dims or b.ndim != 3 or tuple(b.shape) != tuple(want):
        raise ValueError(f"{name} must have shape (N, H, W) = {want}, got {tuple(b.shape)}")

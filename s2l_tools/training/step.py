"""The Scribble2Label training step, as plain functions of tensors.

Losses (``logits`` ``(N, 2, H, W)``; class 0 background, 1 foreground):

- ``L_sp``: cross entropy over the scribbled pixels only (mean over them).
- ``L_up``: cross entropy over the unscribbled pixels whose EMA prediction
  ``y`` is confident, ``max(y, 1 - y) > tau``, labelled ``argmax`` (mean over them);
  with ``pseudo_margin`` > 0 not within that many pixels of the map's cell boundary.
- total ``L_sp + lambda * L_up`` (``lambda = 0.5``) once ``use_pseudo`` (after
  the warm-up, with the EMA store initialised); ``L_sp`` alone before.

A loss over an empty pixel set is 0 and still attached to the graph, so a
batch without scribbles backpropagates zeros instead of NaN (and DDP sees
every parameter used).

Methods (``method=``): ``'s2l'`` (above), ``'pce'`` (``L_sp`` only),
``'pseudo'`` (the Pseudo-Label baseline: ``L_up`` from the current
prediction, detached, not averaged), ``'rloss'`` (``L_sp`` plus a CRF loss,
below). ``s2l-train --method full`` trains ``'pce'`` on scribbles made from the
full masks (every pixel labelled), so it needs no method of its own here.

CRF loss (``crf_weight > 0``; Tang et al., "On regularized losses for
weakly-supervised CNN segmentation", ECCV 2018): the relaxed Potts energy
``sum_k S_k^T W (1 - S_k)`` of the softmax ``S`` under a bilateral affinity ``W``
between pixels ``p, q``::

    W_pq = exp(-|p - q|^2 / (2 sigma_xy^2) - |I_p - I_q|^2 / (2 sigma_i^2))

It costs where similar-looking, nearby pixels get different classes, so it
pulls the boundary to the image's edges. Tang et al. use the dense CRF
(every pair, permutohedral lattice); here ``W`` is restricted to a window of
radius ``CRF_RADIUS`` (as the Gated CRF loss of Obukhov et al. 2019 does), on
the normalised image, which is exact for that window and cheap on a CPU. The
energy is divided by the number of pixels and by the sum of the window's
spatial weights, so ``crf_weight`` does not depend on the crop or the radius.
"""

from __future__ import annotations

from collections.abc import Mapping

import math

import torch
import torch.nn.functional as F


__all__ = [
    "IGNORE_INDEX",
    "STEP_METHODS",
    "scribble_targets",
    "scribble_loss",
    "pseudo_labels",
    "unscribbled_loss",
    "crf_loss",
    "compute_losses",
    "train_step",
]

IGNORE_INDEX = -100
#: methods of :func:`compute_losses` (``'full'`` trains ``'pce'`` on dense labels)
STEP_METHODS = ("s2l", "pce", "pseudo", "rloss")
#: the CRF loss's window radius (pixels) and bandwidths: distance in pixels,
#: intensity in units of the percentile-normalised image (0 = low, 1 = high percentile)
CRF_RADIUS, CRF_SIGMA_XY, CRF_SIGMA_I = 5, 5.0, 0.1


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
    ema_fg: torch.Tensor, scribble: torch.Tensor, *, threshold: float = 0.8, margin: int = 0
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
    margin : int
        Pixels within this many pixels (a ``2 margin + 1`` square) of the map's
        foreground/background boundary (``y = 0.5``) get no pseudo-label, so the
        scribbles and the CRF loss place the boundary, not the map; 0: off.

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
    if margin < 0:
        raise ValueError(f"margin must be 0 or more, got {margin}")
    confident = (torch.maximum(y, 1.0 - y) > threshold) & (scribble == 0)
    label = (y > 0.5).long()
    if margin:
        confident &= ~_near_boundary(label, margin)
    return torch.where(confident, label, torch.full_like(label, IGNORE_INDEX))


def _near_boundary(label: torch.Tensor, margin: int) -> torch.Tensor:
    """Pixels whose ``2 margin + 1`` square holds both values of the 0/1 ``label`` (N, H, W)."""
    f = label[:, None].float()
    k = 2 * margin + 1
    dilated = F.max_pool2d(f, k, stride=1, padding=margin)
    eroded = -F.max_pool2d(-f, k, stride=1, padding=margin)
    return (dilated != eroded)[:, 0]


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


def crf_loss(
    logits: torch.Tensor,
    image: torch.Tensor,
    *,
    radius: int = CRF_RADIUS,
    sigma_xy: float = CRF_SIGMA_XY,
    sigma_i: float = CRF_SIGMA_I,
) -> torch.Tensor:
    """Relaxed Potts energy of the softmax under a local bilateral affinity.

    Parameters
    ----------
    logits : (N, C, H, W) float tensor
    image : (N, Ci, H, W) float tensor
        The network's input (normalised); all channels enter the intensity distance.
    radius : int
        Pairs ``p, q`` with ``|dy|, |dx| <= radius`` (``q != p``) are compared.
    sigma_xy, sigma_i : float
        Bandwidths of the spatial and the intensity Gaussian.

    Returns
    -------
    loss : 0-d float32 tensor
        ``sum_{p,q} W_pq sum_k S_k(p) (1 - S_k(q))`` over the window pairs, divided
        by ``N * H * W`` and by the sum of the spatial weights: 0 for a prediction
        that is constant (and hard) over the image, at most 1.
    """
    if radius < 1 or sigma_xy <= 0 or sigma_i <= 0:
        raise ValueError(f"radius must be >= 1 and the sigmas positive, got {radius}, "
                         f"{sigma_xy}, {sigma_i}")
    if image.ndim != 4 or image.shape[0] != logits.shape[0] or image.shape[-2:] != logits.shape[-2:]:
        raise ValueError(f"image must have shape (N, C, H, W) with N, H, W of the logits "
                         f"{tuple(logits.shape)}, got {tuple(image.shape)}")
    s = torch.softmax(logits.float(), dim=1)
    energy = _PottsEnergy.apply(s, image.detach().float(), radius, sigma_xy, sigma_i)
    return energy / s.shape[0] / s.shape[2] / s.shape[3]


def _window_products(s: torch.Tensor, img: torch.Tensor, radius: int, sigma_xy: float,
                     sigma_i: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(W S, deg, spatial_sum)``: the window's affinity applied to ``s``, its row sums.

    ``W`` is symmetric, so each unordered pair (half of the window) is visited once
    and added in both directions.
    """
    _, _, h, w = s.shape
    ws = torch.zeros_like(s)
    deg = s.new_zeros((s.shape[0], 1, h, w))
    spatial_sum = 0.0
    for dy in range(0, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == 0 and dx <= 0:
                continue
            if dy >= h or abs(dx) >= w:
                continue
            g = math.exp(-(dy * dy + dx * dx) / (2.0 * sigma_xy ** 2))
            spatial_sum += 2.0 * g
            ya, yb = slice(0, h - dy), slice(dy, h)
            xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            d2 = (img[:, :, ya, xa] - img[:, :, yb, xb]).square_().sum(dim=1, keepdim=True)
            aff = d2.mul_(-1.0 / (2.0 * sigma_i ** 2)).exp_().mul_(g)
            ws[:, :, ya, xa].addcmul_(aff, s[:, :, yb, xb])
            ws[:, :, yb, xb].addcmul_(aff, s[:, :, ya, xa])
            deg[:, :, ya, xa] += aff
            deg[:, :, yb, xb] += aff
    return ws, deg, spatial_sum


class _PottsEnergy(torch.autograd.Function):
    """``sum_k S_k . (deg - W S_k) / spatial_sum``: the relaxed Potts energy over ordered pairs.

    Equal to ``sum_{p != q} W_pq sum_k S_k(p) (1 - S_k(q))`` (``sum_k S_k = 1``), with the
    gradient ``deg - 2 W S_k`` (``W`` symmetric) kept from the forward pass instead of
    a graph of every window shift: the same numbers, several times less work and memory.
    """

    @staticmethod
    def forward(ctx, s, img, radius, sigma_xy, sigma_i):
        ws, deg, spatial_sum = _window_products(s, img, radius, sigma_xy, sigma_i)
        scale = 1.0 / max(spatial_sum, 1e-12)
        energy = (s * (deg - ws)).sum() * scale
        ctx.save_for_backward((deg - 2.0 * ws).mul_(scale))
        return energy

    @staticmethod
    def backward(ctx, grad):
        (g,) = ctx.saved_tensors
        return grad * g, None, None, None, None


def compute_losses(
    logits: torch.Tensor,
    scribble: torch.Tensor,
    ema_fg: torch.Tensor | None = None,
    *,
    method: str = "s2l",
    use_pseudo: bool = True,
    threshold: float = 0.8,
    pseudo_weight: float = 0.5,
    image: torch.Tensor | None = None,
    crf_weight: float = 0.0,
    pseudo_margin: int = 0,
) -> dict[str, torch.Tensor]:
    """The training loss of one batch, for any of the methods.

    Parameters
    ----------
    logits : (N, 2, H, W) float tensor
    scribble : (N, H, W) uint8 or integer tensor
    ema_fg : (N, H, W) float tensor, optional
        EMA foreground probability (augmented with the image). Needed by
        ``'s2l'`` when ``use_pseudo``; ignored by the other methods.
    method : {'s2l', 'pce', 'pseudo', 'rloss'}
        ``'s2l'``: ``L_sp + pseudo_weight * L_up`` with pseudo-labels from
        ``ema_fg``. ``'pce'``: ``L_sp``. ``'pseudo'``: as ``'s2l'`` with
        pseudo-labels from the current prediction ``softmax(logits)``
        (detached). ``'rloss'``: ``L_sp + crf_weight * L_crf``.
    use_pseudo : bool
        Whether ``L_up`` is on (False during the warm-up); ``'s2l'`` and
        ``'pseudo'`` only.
    threshold : float
        ``tau`` of :func:`pseudo_labels`.
    pseudo_weight : float
        ``lambda``.
    image : (N, Ci, H, W) float tensor, optional
        The input batch; needed when ``crf_weight > 0``.
    crf_weight : float
        Weight of :func:`crf_loss`, added to any method's loss (``'rloss'`` is
        ``'pce'`` with it); 0 leaves it out.
    pseudo_margin : int
        ``margin`` of :func:`pseudo_labels` (``'s2l'`` and ``'pseudo'``).

    Returns
    -------
    losses : dict of 0-d tensors
        ``'loss'`` (to backpropagate), ``'l_sp'``, ``'l_up'`` (0 when off),
        ``'l_crf'`` (0 when off), ``'coverage'`` (detached: fraction of the
        unscribbled pixels that got a pseudo-label; 0 when off).
    """
    if method not in STEP_METHODS:
        raise ValueError(f"method must be one of {STEP_METHODS}, got {method!r}")
    if not crf_weight >= 0:
        raise ValueError(f"crf_weight must be 0 or more, got {crf_weight}")
    l_sp = scribble_loss(logits, scribble)
    zero = logits.new_zeros((), dtype=torch.float32)
    out = {"l_sp": l_sp, "l_up": zero, "l_crf": zero, "coverage": zero}
    loss = l_sp
    if crf_weight > 0:
        if image is None:
            raise ValueError("crf_weight > 0 needs the image batch (image=)")
        out["l_crf"] = crf_loss(logits, image)
        loss = loss + crf_weight * out["l_crf"]

    if method in ("s2l", "pseudo") and use_pseudo:
        if method == "s2l":
            if ema_fg is None:
                raise ValueError("method 's2l' with use_pseudo=True needs the EMA map (ema_fg)")
            y = ema_fg
        else:  # 'pseudo': the current prediction, no averaging
            y = torch.softmax(logits.detach().float(), dim=1)[:, 1]
        pseudo = pseudo_labels(y, scribble, threshold=threshold, margin=pseudo_margin)
        out["l_up"] = unscribbled_loss(logits, pseudo)
        n_unscribbled = (scribble == 0).sum().clamp(min=1)
        out["coverage"] = ((pseudo != IGNORE_INDEX).sum() / n_unscribbled).float()
        loss = loss + pseudo_weight * out["l_up"]
    out["loss"] = loss
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
    crf_weight: float = 0.0,
    pseudo_margin: int = 0,
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
        while ``use_pseudo`` is False or the method does not use it).
    method, use_pseudo, threshold, pseudo_weight, crf_weight, pseudo_margin
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
        ``'loss'``, ``'l_sp'``, ``'l_up'``, ``'l_crf'``, ``'coverage'``
        (values before the update). A non-finite loss is returned as is; the
        step is then skipped by the scaler if one is given, so check ``'loss'``.
    """
    device = torch.device(device)
    model.train()
    image = batch["image"].to(device, non_blocking=True)
    scribble = batch["scribble"].to(device, non_blocking=True)
    ema = batch.get("ema")
    ema = None if ema is None else ema.to(device, non_blocking=True)

    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(image)
    losses = compute_losses(
        logits, scribble, ema, method=method, use_pseudo=use_pseudo,
        threshold=threshold, pseudo_weight=pseudo_weight, image=image, crf_weight=crf_weight,
        pseudo_margin=pseudo_margin,
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

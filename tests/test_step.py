from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from s2l_tools.training.model import build_model
from s2l_tools.training.step import (
    IGNORE_INDEX,
    compute_losses,
    crf_loss,
    pseudo_labels,
    scribble_loss,
    scribble_targets,
    train_step,
    unscribbled_loss,
)

LN2, LN3, LN4, LN9 = math.log(2), math.log(3), math.log(4), math.log(9)


def _px(*pairs):
    """(1, 2, 1, P) logits from (background, foreground) pairs."""
    return torch.tensor(pairs, dtype=torch.float32).T.reshape(1, 2, 1, -1).clone().requires_grad_(True)


def _row(*values, dtype=torch.uint8):
    return torch.tensor(values, dtype=dtype).reshape(1, 1, -1)


def test_scribble_targets():
    t = scribble_targets(_row(0, 1, 2))
    assert t.dtype == torch.int64 and t.tolist() == [[[IGNORE_INDEX, 0, 1]]]


def test_scribble_loss_by_hand():
    # CE(l, t) = logsumexp(l) - l_t
    logits = _px((0, 0), (0, LN3), (0, LN3), (LN3, 0))
    scribble = _row(1, 2, 0, 2)
    # bg on (0,0): ln 2; fg on (0,ln3): ln 4 - ln 3; unlabeled: ignored; fg on (ln3,0): ln 4
    expected = (LN2 + (LN4 - LN3) + LN4) / 3
    loss = scribble_loss(logits, scribble)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad[0, :, 0, 2].abs().sum() == 0  # unlabeled pixel gets no gradient


def test_no_scribble_gives_zero_with_grad():
    logits = _px((0, 1), (2, 0))
    loss = scribble_loss(logits, _row(0, 0))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_scribble_value_without_class():
    with pytest.raises(ValueError, match="no class"):
        scribble_loss(_px((0, 0)), _row(3))


def test_pseudo_labels_threshold_and_scribbles():
    ema = torch.tensor([0.8, 0.2, 0.81, 0.19, 0.5, 0.95, 0.05, 0.99]).reshape(1, 1, -1)
    scribble = _row(0, 0, 0, 0, 0, 1, 0, 2)
    got = pseudo_labels(ema, scribble, threshold=0.8)[0, 0].tolist()
    I = IGNORE_INDEX
    # exactly at tau: not confident; scribbled pixels: never pseudo-labelled
    assert got == [I, I, 1, 0, I, I, 0, I]
    # uint8 maps are round(255 y)
    ema8 = (ema * 255).round().to(torch.uint8)
    assert pseudo_labels(ema8, scribble, threshold=0.8)[0, 0].tolist() == [I, I, 1, 0, I, I, 0, I]
    # 0.5 (the augmentation's fill) is never confident
    assert pseudo_labels(ema, scribble, threshold=0.5)[0, 0, 4].item() == I
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(ema, scribble, threshold=0.4)


def test_pseudo_labels_margin_leaves_the_boundary_to_the_scribbles():
    # a 3 x 3 confident cell in confident background: with margin 1 the cell's rim and the
    # background ring around it lose their labels, the cell's centre and the far
    # background keep theirs; margin 0 is the plain rule
    ema = torch.full((1, 7, 7), 0.05)
    ema[0, 2:5, 2:5] = 0.95
    scribble = torch.zeros((1, 7, 7), dtype=torch.uint8)
    plain = pseudo_labels(ema, scribble, threshold=0.8)
    assert torch.equal(plain, pseudo_labels(ema, scribble, threshold=0.8, margin=0))
    got = pseudo_labels(ema, scribble, threshold=0.8, margin=1)[0]
    I = IGNORE_INDEX
    assert got[3, 3] == 1 and got[0, 0] == 0 and got[6, 3] == 0
    assert (got[1:6, 1:6] == I).sum() == 24  # the 5 x 5 square but its centre
    # wider margins swallow a small cell whole
    assert (pseudo_labels(ema, scribble, threshold=0.8, margin=2)[0] == 1).sum() == 0
    with pytest.raises(ValueError, match="margin"):
        pseudo_labels(ema, scribble, margin=-1)


def test_unscribbled_loss_by_hand():
    logits = _px((0, LN9), (LN3, 0), (0, 0))
    pseudo = _row(1, 0, IGNORE_INDEX, dtype=torch.int64)
    expected = ((math.log(10) - LN9) + (LN4 - LN3)) / 2
    assert unscribbled_loss(logits, pseudo).item() == pytest.approx(expected, rel=1e-6)
    empty = unscribbled_loss(logits, _row(IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, dtype=torch.int64))
    assert empty.item() == 0.0 and empty.requires_grad


def test_compute_losses_s2l_by_hand():
    logits = _px((0, 0), (0, LN9), (LN3, 0), (0, 0), (0, LN3))
    scribble = _row(1, 0, 0, 0, 0)
    ema = torch.tensor([0.99, 0.9, 0.1, 0.6, 0.8]).reshape(1, 1, -1)
    out = compute_losses(logits, scribble, ema, method="s2l", use_pseudo=True, pseudo_weight=0.5)
    l_sp = LN2
    l_up = ((math.log(10) - LN9) + (LN4 - LN3)) / 2  # pixels 1 (fg) and 2 (bg)
    assert out["l_sp"].item() == pytest.approx(l_sp, rel=1e-6)
    assert out["l_up"].item() == pytest.approx(l_up, rel=1e-6)
    assert out["loss"].item() == pytest.approx(l_sp + 0.5 * l_up, rel=1e-6)
    assert out["coverage"].item() == pytest.approx(2 / 4)
    assert not out["coverage"].requires_grad
    # warm-up: L_sp only
    warm = compute_losses(logits, scribble, ema, method="s2l", use_pseudo=False)
    assert warm["loss"].item() == pytest.approx(l_sp) and warm["l_up"].item() == 0
    with pytest.raises(ValueError, match="ema"):
        compute_losses(logits, scribble, None, method="s2l", use_pseudo=True)


def test_pce_ignores_ema():
    logits = _px((0, 0), (0, LN9))
    scribble = _row(2, 0)
    ema = torch.tensor([[[0.0, 0.99]]])
    for e in (ema, None):
        out = compute_losses(logits, scribble, e, method="pce", use_pseudo=True)
        assert out["loss"].item() == pytest.approx(LN2)
        assert out["l_up"].item() == 0 and out["coverage"].item() == 0


def test_pseudo_uses_current_prediction():
    # pixel 1: softmax fg = 0.9 -> label 1; pixel 2: fg = 0.75 -> not confident
    logits = _px((0, 0), (0, LN9), (0, LN3))
    scribble = _row(1, 0, 0)
    ema = torch.tensor([[[0.5, 0.01, 0.99]]])  # would say the opposite: must be ignored
    out = compute_losses(logits, scribble, ema, method="pseudo", use_pseudo=True, threshold=0.8)
    l_up = math.log(10) - LN9
    assert out["l_up"].item() == pytest.approx(l_up, rel=1e-6)
    assert out["loss"].item() == pytest.approx(LN2 + 0.5 * l_up, rel=1e-6)
    assert out["coverage"].item() == pytest.approx(0.5)
    out["loss"].backward()  # the pseudo-label itself is detached
    warm = compute_losses(_px((0, 0), (0, LN9)), _row(1, 0), None, method="pseudo", use_pseudo=False)
    assert warm["loss"].item() == pytest.approx(LN2)


def test_unknown_method_and_full_are_refused():
    """'full' trains 'pce' on dense labels (the engine makes them): no method of its own."""
    logits = _px((0, 0), (0, LN3), (LN3, 0))
    for method in ("grabcut", "full"):
        with pytest.raises(ValueError, match="method"):
            compute_losses(logits, _row(0, 0, 0), None, method=method)


def _two_region_image(edge=16, n=32):
    """(1, 1, n, n) image: dark left of column ``edge``, bright right of it."""
    img = torch.zeros(1, 1, n, n)
    img[..., edge:] = 1.0
    return img


def _split_logits(col, n=32, strength=20.0):
    """(1, 2, n, n) logits: background left of ``col``, foreground from ``col`` on."""
    fg = torch.full((1, n, n), -strength)
    fg[..., col:] = strength
    return torch.stack([torch.zeros_like(fg), fg], dim=1)


def test_crf_loss_prefers_boundaries_on_image_edges():
    image = _two_region_image(edge=16)
    on_edge = crf_loss(_split_logits(16), image).item()
    off_edge = crf_loss(_split_logits(10), image).item()  # cuts the uniform dark region
    constant = crf_loss(_split_logits(0), image).item()
    assert constant == pytest.approx(0.0, abs=1e-6)
    assert 0 <= on_edge < 1e-3  # the intensity step of 1 = 10 sigma: nearly free
    assert off_edge > 50 * on_edge and off_edge < 1
    # a soft boundary in the uniform region is pushed to be sharp: fg down left of it, up right
    logits = _split_logits(10, strength=2.0).requires_grad_(True)
    crf_loss(logits, image).backward()
    g = logits.grad[0, 1]
    assert torch.isfinite(logits.grad).all()
    assert g[:, 8:10].mean() > 0 > g[:, 10:12].mean()


def _crf_by_pairs(logits, image, radius, sigma_xy, sigma_i):
    """The CRF loss from its definition: every ordered pair of the full window, with autograd."""
    s = torch.softmax(logits.double(), dim=1)[0]
    img = image.double()[0]
    _, h, w = s.shape
    total, spatial = 0.0, 0.0
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == dx == 0:
                continue
            g = math.exp(-(dy * dy + dx * dx) / (2 * sigma_xy ** 2))
            spatial += g
            ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
            yq, xq = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
            d2 = ((img[:, ys, xs] - img[:, yq, xq]) ** 2).sum(dim=0)
            wpq = g * torch.exp(-d2 / (2 * sigma_i ** 2))
            total = total + (wpq * (s[:, ys, xs] * (1 - s[:, yq, xq])).sum(dim=0)).sum()
    return total / (h * w * spatial)


@pytest.mark.parametrize("classes", [2, 3])
def test_crf_loss_equals_its_definition_value_and_gradient(classes):
    # the fast path keeps the gradient from the forward pass (no graph per window
    # shift): it must give the definition's value and the definition's gradient
    g = torch.Generator().manual_seed(classes)
    logits = torch.randn(1, classes, 7, 9, generator=g, dtype=torch.float64)
    image = torch.rand(1, 2, 7, 9, generator=g)
    kw = dict(radius=2, sigma_xy=1.5, sigma_i=0.3)
    fast_in = logits.clone().float().requires_grad_(True)
    fast = crf_loss(fast_in, image, **kw)
    fast.backward()
    slow_in = logits.clone().requires_grad_(True)
    slow = _crf_by_pairs(slow_in, image, **kw)
    slow.backward()
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)
    assert torch.allclose(fast_in.grad.double(), slow_in.grad, rtol=1e-4, atol=1e-7)


def test_crf_loss_checks_its_input():
    with pytest.raises(ValueError, match="image must have shape"):
        crf_loss(_split_logits(3, n=8), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="radius"):
        crf_loss(_split_logits(3, n=8), torch.zeros(1, 1, 8, 8), radius=0)


def test_rloss_is_pce_plus_weighted_crf():
    image = _two_region_image(edge=16)
    logits = _split_logits(10, strength=2.0)
    scribble = torch.zeros(1, 32, 32, dtype=torch.uint8)
    scribble[0, 5, 2:6] = 1
    scribble[0, 5, 20:30] = 2
    out = compute_losses(logits, scribble, None, method="rloss", image=image, crf_weight=3.0)
    assert out["l_crf"].item() == pytest.approx(crf_loss(logits, image).item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["l_sp"].item() + 3.0 * out["l_crf"].item(),
                                               rel=1e-6)
    assert out["l_up"].item() == 0
    pce = compute_losses(logits, scribble, None, method="pce")
    assert pce["l_crf"].item() == 0 and pce["loss"].item() == pytest.approx(out["l_sp"].item())
    with pytest.raises(ValueError, match="needs the image"):
        compute_losses(logits, scribble, None, method="rloss", crf_weight=1.0)
    with pytest.raises(ValueError, match="crf_weight"):
        compute_losses(logits, scribble, None, method="rloss", image=image, crf_weight=-1.0)


def _tiny_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 1, 64, 64, generator=g)
    image[:, :, 16:40, 16:40] += 2.0  # a bright "cell"
    scribble = torch.zeros(2, 64, 64, dtype=torch.uint8)
    scribble[:, 28, 20:36] = 2
    scribble[:, 4, 4:60] = 1
    scribble[:, 56, 4:60] = 1
    ema = torch.full((2, 64, 64), 0.05)
    ema[:, 16:40, 16:40] = 0.95
    ema[:, 40:44, :] = 0.5  # not confident
    return {"image": image, "scribble": scribble, "ema": ema}


@pytest.fixture(scope="module")
def tiny_model():
    return build_model(encoder="resnet18", in_channels=1, seed=0)


def test_train_step_reduces_scribble_loss(tiny_model):
    model = tiny_model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = _tiny_batch()
    history = [
        train_step(model, opt, batch, method="pce", use_pseudo=False, device="cpu")["l_sp"]
        for _ in range(4)
    ]
    assert all(isinstance(v, float) for v in history)
    assert history[-1] < 0.7 * history[0]


def test_train_step_s2l_and_mixed_precision_path(tiny_model):
    model = tiny_model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    out = train_step(
        model, opt, _tiny_batch(1), method="s2l", use_pseudo=True, threshold=0.8,
        pseudo_weight=0.5, device="cpu",
        scaler=torch.amp.GradScaler("cpu"), autocast_dtype=torch.bfloat16,
    )
    assert set(out) == {"loss", "l_sp", "l_up", "l_crf", "coverage"}
    assert out["l_up"] > 0 and 0 < out["coverage"] < 1
    assert out["loss"] == pytest.approx(out["l_sp"] + 0.5 * out["l_up"], rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_mixed_precision_step():
    model = build_model(encoder="resnet18", in_channels=1, seed=0).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    batch = _tiny_batch()  # CPU tensors: train_step moves them
    history = [
        train_step(
            model, opt, batch, method="s2l", use_pseudo=True, device="cuda",
            scaler=scaler, autocast_dtype=torch.float16,
        )
        for _ in range(10)
    ]
    assert all(np.isfinite(h["loss"]) for h in history)
    assert history[-1]["l_sp"] < history[0]["l_sp"]
    bf16 = train_step(
        model, opt, batch, method="pseudo", use_pseudo=True, device="cuda",
        autocast_dtype=torch.bfloat16,
    )
    assert np.isfinite(bf16["loss"])

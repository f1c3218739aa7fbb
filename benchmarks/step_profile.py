"""Where a training step's time goes: the network, the losses, the CRF term.

Times the laptop preset's step (resnet18, batch 8, crop 128, S2L + CRF loss) in
parts, medians of repeats, all in one run so the ratios hold under load:

- ``forward`` + ``backward`` of the network alone (cross entropy on every pixel);
- the CRF loss's forward + backward (:func:`s2l_tools.training.step.crf_loss`);
- the same CRF loss written with autograd through every window shift (how it was
  first written; kept here as the reference it replaced);
- a whole :func:`s2l_tools.training.step.train_step` with and without the CRF term.

Command (docs/benchmarks.md)::

    .venv/bin/python benchmarks/step_profile.py --threads 2 --repeats 7
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch


def crf_loss_autograd(logits, image, radius=5, sigma_xy=5.0, sigma_i=0.1):
    """The CRF loss through autograd, one graph node per window shift (the reference)."""
    s = torch.softmax(logits.float(), dim=1)
    img = image.float()
    _, _, h, w = s.shape
    total = s.new_zeros(())
    spatial_sum = 0.0
    for dy in range(0, radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy == 0 and dx <= 0) or dy >= h or abs(dx) >= w:
                continue
            g = math.exp(-(dy * dy + dx * dx) / (2.0 * sigma_xy ** 2))
            spatial_sum += 2.0 * g
            ya, yb = slice(0, h - dy), slice(dy, h)
            xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            d2 = (img[:, :, ya, xa] - img[:, :, yb, xb]).pow(2).sum(dim=1)
            aff = g * torch.exp(-d2 / (2.0 * sigma_i ** 2))
            cut = 2.0 - 2.0 * (s[:, :, ya, xa] * s[:, :, yb, xb]).sum(dim=1)
            total = total + (aff * cut).sum()
    return total / (s.shape[0] * h * w * max(spatial_sum, 1e-12))


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--encoder", default="resnet18")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from s2l_tools.training.model import build_model
    from s2l_tools.training.step import crf_loss, train_step

    model = build_model(encoder=args.encoder, in_channels=1, classes=2)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n, c = args.batch, args.crop
    image = torch.rand(n, 1, c, c)
    scribble = torch.randint(0, 3, (n, c, c), dtype=torch.uint8)
    ema = torch.rand(n, c, c)
    batch = {"image": image, "scribble": scribble, "ema": ema}
    logits0 = torch.randn(n, 2, c, c)

    def network():
        opt.zero_grad(set_to_none=True)
        model(image)[:, 1].mean().backward()

    def crf(fn):
        def run():
            x = logits0.clone().requires_grad_(True)
            fn(x, image).backward()
        return run

    def step(weight):
        return lambda: train_step(model, opt, batch, method="s2l", use_pseudo=True,
                                  crf_weight=weight, device="cpu")

    load = os.getloadavg()
    rows = {
        "network forward+backward": median_time(network, args.repeats),
        "CRF loss forward+backward": median_time(crf(crf_loss), args.repeats),
        "CRF loss, autograd per shift (reference)": median_time(crf(crf_loss_autograd),
                                                                args.repeats),
        "train_step, S2L": median_time(step(0.0), args.repeats),
        "train_step, S2L + CRF 5": median_time(step(5.0), args.repeats),
    }
    x = logits0.clone()
    diff = abs(crf_loss(x, image).item() - crf_loss_autograd(x, image).item())
    print(f"{args.encoder}, batch {n} x {c}^2, {args.threads} thread(s), medians of "
          f"{args.repeats}; load {load[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    for name, sec in rows.items():
        print(f"  {name:44s} {sec:7.3f} s")
    print(f"  CRF value, fast vs reference: |diff| {diff:.2e}")


if __name__ == "__main__":
    main()

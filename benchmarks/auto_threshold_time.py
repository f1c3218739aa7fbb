"""What ``s2l-train --auto-threshold`` adds to a run's time (not a test).

    .venv/bin/python benchmarks/auto_threshold_time.py /tmp/acc/fluo/n40_v40/scribbles_r0.1_s0_hand \
        [--model RUN/model.pt] [--threads 2] [--repeats 3]

On one training folder written by ``accuracy.py`` (``images/``, ``scribbles/``), as
``s2l-train`` loads it (10 % of the strokes held out, seed 0), each the median of
``--repeats`` timed runs after a warm-up, with the load average:

- ``gemm``: ``torch.mm`` of two 2048 x 2048 float32 matrices (the reference the other
  times are compared with: seconds per GEMM);
- ``final_pass``: :func:`s2l_tools.training.auto_threshold.final_threshold`, the pass of
  the final model over the training images and the cut (what every ``--auto-threshold``
  run adds; the forest's share comes from the fast start); the laptop preset's resnet18,
  trained (``--model``) or freshly initialised (its time does not depend on the weights);
- ``forest_share``: :func:`s2l_tools.training.auto_threshold.forest_share` without the
  fast start's counts, fitting the forest and classifying every image (what a run
  without ``--fast-start forest...`` adds, e.g. a ``--from`` round of the scribble loop).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def _timed(fn, repeats: int) -> dict:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(ts), 3), "min_s": round(min(ts), 3),
            "max_s": round(max(ts), 3), "load": [round(x, 2) for x in os.getloadavg()],
            "result": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a training folder (images/, scribbles/)")
    p.add_argument("--model", help="a trained model.pt (default: a fresh laptop-preset resnet18)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import torch

    from s2l_tools.device import inference_dtype
    from s2l_tools.training.auto_threshold import final_threshold, forest_share
    from s2l_tools.training.checkpoint import load_model
    from s2l_tools.training.config import PRESETS, TrainConfig
    from s2l_tools.training.data import load_training_data
    from s2l_tools.training.engine import Context, _tiling
    from s2l_tools.training.model import build_model

    torch.set_num_threads(args.threads)
    data = load_training_data(args.folder, holdout=TrainConfig.holdout_strokes, seed=0)
    laptop = PRESETS["laptop"]
    if args.model:
        model, _ = load_model(args.model)
    else:
        model = build_model(encoder=laptop["encoder"], in_channels=data.in_channels, classes=2,
                            seed=0).to(memory_format=torch.channels_last)
    model.eval()
    meta = _tiling(data.in_channels, TrainConfig.tile)  # as s2l-train's final pass tiles
    device = torch.device("cpu")
    amp = inference_dtype(True, device)
    ctx = Context()
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)

    out = {"folder": args.folder, "images": len(data.images),
           "pixels": int(sum(im.shape[0] * im.shape[1] for im in data.images)),
           "threads": args.threads, "model": args.model or "fresh resnet18"}
    out["gemm"] = _timed(lambda: torch.mm(a, b).sum().item(), max(5, args.repeats))
    out["forest_share"] = _timed(lambda: forest_share(data, ctx, seed=0), args.repeats)
    share = out["forest_share"]["result"]
    out["final_pass"] = _timed(lambda: final_threshold(
        model, data, ctx, share=share, floor=TrainConfig.mask_threshold, meta=meta,
        device=device, amp_dtype=amp), args.repeats)
    g = out["gemm"]["median_s"]
    for k in ("forest_share", "final_pass"):
        out[k]["gemms"] = round(out[k]["median_s"] / g, 1)
    print(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

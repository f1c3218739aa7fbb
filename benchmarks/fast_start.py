"""The fast start's pieces: their time, and how the forest and GrabCut agree (not a test).

    .venv/bin/python benchmarks/fast_start.py /tmp/acc/fluo/n40_v40/scribbles_r0.1_s0 [MORE ...]
        [--time] [--threads 2] [--seed 0] [--diameter 24 --margin 1]

For each training folder written by ``accuracy.py`` (``images/``, ``scribbles/``,
``masks/``), with the forest fitted on all its scribbles and GrabCut both seeded
``--seed`` (``s2l-train`` seeds them with its ``--seed``), the images first resized
as ``s2l-train --diameter`` resizes them when that is given:

- the agreement of every image's forest foreground (probability > 0.5) and GrabCut
  proposal (foreground IoU), their mean and lowest, the median over the sample
  ``s2l-train`` uses (:func:`s2l_tools.classic.start.sample_images`) and whether
  GrabCut is kept; and, from the full masks (only to look: nothing here is chosen
  on them), each one's IoU with the truth, and the images with the lowest agreement;
- the start itself (what ``s2l-train`` puts in the EMA store: the mean of the two maps,
  or the forest's alone where GrabCut is left out): its confident foreground (above
  ``--tau``, s2l-train's consistency threshold: pseudo-labelled from the first step)
  as a multiple of the true foreground area, and the share of it outside the cells;
- the pseudo-labels each start would give (``benchmarks/pseudo_labels.py``'s counts, with
  ``--tau`` and ``--margin``: s2l-train's ``--pseudo-margin``), for the forest alone,
  GrabCut alone and their mean: the share of the cells' unscribbled pixels pseudo-labelled
  cell, and the share of the cell and of the background pseudo-labels that is right;
- with ``--time``: seconds of fitting the forest, the features alone, the forest's
  probability of every image, GrabCut one image after another, and GrabCut and the
  features on ``--threads`` threads (the load average is printed beside them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from s2l_tools.training.config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pseudo_labels import label_counts  # noqa: E402  (a sibling script, not a package)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--time", action="store_true", help="also time the pieces")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tau", type=float, default=TrainConfig.threshold,
                   help="the consistency threshold (default: s2l-train "
                        "--consistency-threshold's, %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the forest's and GrabCut's seed")
    p.add_argument("--diameter", type=float, default=0.0,
                   help="resize the images as s2l-train --diameter does (0: their own size)")
    p.add_argument("--margin", type=int, default=TrainConfig.pseudo_margin,
                   help="s2l-train --pseudo-margin for the pseudo-label counts (%(default)s)")
    args = p.parse_args(argv)

    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from s2l_tools.classic import start
    from s2l_tools.classic.forest import ForestSettings, fit_forest, forest_probability, pixel_features
    from s2l_tools.classic.grabcut import grabcut_proposal, to_bgr8
    from s2l_tools.evaluation.metrics import foreground_iou
    from s2l_tools.training import scale
    from s2l_tools.training.data import load_training_data

    for folder in args.folders:
        d = load_training_data(folder, need_masks=True)
        if args.diameter:
            scales, _ = scale.training_scales(d, args.diameter, seed=args.seed,
                                              threads=args.threads)
            d = scale.rescale(d, scales)
        n = len(d.images)
        settings = ForestSettings(n_jobs=args.threads)
        t = time.perf_counter()
        forest = fit_forest(d.images, d.scribbles, settings=settings, seed=args.seed)
        fit_s = time.perf_counter() - t
        forest.set_params(n_jobs=1)
        with ThreadPoolExecutor(args.threads) as pool:
            maps = list(pool.map(lambda i: start.classic_maps(
                d.images[i], d.scribbles[i], forest=forest, grabcut=True, seed=args.seed),
                range(n)))
        agree = np.array([foreground_iou(p > 0.5, g) for p, g in maps])
        truth = [np.asarray(m) > 0 for m in d.masks]
        forest_gt = np.array([foreground_iou(p > 0.5, t) for (p, _), t in zip(maps, truth)])
        grab_gt = np.array([foreground_iou(g, t) for (_, g), t in zip(maps, truth)])
        sample = start.sample_images(n)
        median = float(np.median(agree[sample]))
        kept = start.keep_grabcut(agree[sample])
        print(f"{folder}: {n} images; agreement mean {agree.mean():.3f} lowest {agree.min():.3f}, "
              f"median of the sample ({len(sample)}) {median:.3f}: GrabCut "
              f"{'kept' if kept else 'left out'}; vs the truth: "
              f"forest {forest_gt.mean():.3f}, GrabCut {grab_gt.mean():.3f}")
        starts = {"forest": [start.combine(p, None) for p, _ in maps],
                  "GrabCut": [start.combine(None, g) for _, g in maps],
                  "forest+GrabCut": [start.combine(p, g) for p, g in maps]}
        sure = [m > args.tau for m in starts["forest+GrabCut" if kept else "forest"]]
        sure_px = sum(int(s.sum()) for s in sure)
        wrong_px = sum(int((s & ~t).sum()) for s, t in zip(sure, truth))
        print(f"  the start's confident foreground (> {args.tau}): "
              f"{sure_px / max(1, sum(int(t.sum()) for t in truth)):.2f}x the true foreground "
              f"area, {wrong_px / max(1, sure_px):.1%} of it outside the cells")
        for name, ms in starts.items():
            r = label_counts(ms, d.scribbles, truth, args.tau, args.margin)
            print(f"  pseudo-labels of {name} (tau {args.tau:g}, margin {args.margin}): "
                  f"{r['fg_covered']:.2f} of the cells' unscribbled pixels taught cell, "
                  f"{r['fg_precision']:.3f} of the cell and {r['bg_precision']:.3f} of the "
                  "background labels right")
        low = np.argsort(agree)[:8]
        print("  lowest agreement / forest / GrabCut vs the truth: " + " ".join(
            f"{agree[i]:.2f}/{forest_gt[i]:.2f}/{grab_gt[i]:.2f}" for i in low))
        if not args.time:
            continue
        timings = {"fit": fit_s}

        def clock(name, fn):
            t = time.perf_counter()
            fn()
            timings[name] = time.perf_counter() - t

        forest.set_params(n_jobs=args.threads)
        clock("features", lambda: [pixel_features(im, settings) for im in d.images])
        clock("forest probability", lambda: [forest_probability(forest, im, settings=settings)
                                             for im in d.images])
        clock("grabcut", lambda: [grabcut_proposal(to_bgr8(im), s)
                                  for im, s in zip(d.images, d.scribbles)])
        with ThreadPoolExecutor(args.threads) as pool:
            clock(f"grabcut, {args.threads} threads", lambda: list(pool.map(
                lambda a: grabcut_proposal(to_bgr8(a[0]), a[1]), zip(d.images, d.scribbles))))
            clock(f"features, {args.threads} threads", lambda: list(pool.map(
                lambda im: pixel_features(im, settings), d.images)))
        print("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
              + f" (load {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

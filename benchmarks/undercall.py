"""Which masks ``s2l-predict``'s under-call warning names (not a test; issue 14).

    .venv/bin/python benchmarks/undercall.py --images /tmp/rest/images --masks /tmp/rest/masks \\
        --threads 2 RUN [RUN ...]

Each RUN (a run folder of ``s2l-train``, e.g. the ``benchmarks/accuracy.py`` runs) predicts every
image of ``--images`` that has a mask of the same stem in ``--masks``, as ``s2l-predict`` does
(the model's normalisation, threshold and smallest object, the four flips unless ``--no-flips``;
the probability maps are kept in ``RUN/undercall_<images folder's parent>[_flips].npz`` and
reused). For each mask: the share of the true cell area it finds, and whether
:func:`s2l_tools.inference.postprocess.under_called` names the image. Printed: the masks named,
by the share found (under 35 %, 35-50 %, 50 % or more), per run and in all, and each named one.
The masks are only used to count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BINS = ((0.0, 0.35, "under 35 %"), (0.35, 0.5, "35-50 %"), (0.5, 1.01, "50 % or more"))


def truth_mask(path: Path) -> np.ndarray:
    """The cell pixels of a mask or label image (any channel > 0)."""
    from s2l_tools.io.images import read_image

    m = np.asarray(read_image(path))
    return (m > 0).any(axis=0) if m.ndim == 3 else m > 0


def prob_maps(run: Path, images: list[Path], *, flips: bool, cache: Path) -> dict:
    """``stem -> float32`` probability of each image, from ``cache`` when it has them all."""
    from s2l_tools.inference.predict import predict_probability
    from s2l_tools.io.atomic import atomic_path
    from s2l_tools.io.images import normalize, read_raw
    from s2l_tools.training.checkpoint import load_model

    if cache.exists():
        with np.load(cache) as z:
            if all(p.stem in z.files for p in images):
                return {p.stem: z[p.stem].astype(np.float32) for p in images}
    model, meta = load_model(run)
    norm = dict(meta.normalization or {})
    kw = {k: norm[k] for k in ("method", "low", "high") if k in norm}
    probs = {}
    for path in images:
        image = normalize(read_raw(path, channel=meta.channel), **kw, source=str(path))
        probs[path.stem] = predict_probability(model, image, meta, flips=flips).astype(np.float16)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **probs)
    return {k: v.astype(np.float32) for k, v in probs.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--masks", type=Path, required=True)
    parser.add_argument("--no-flips", dest="flips", action="store_false")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--json", type=Path, help="also write every mask's row here")
    args = parser.parse_args(argv)

    import torch

    from s2l_tools.inference.postprocess import (instances_from_probability, under_called,
                                                 under_called_share)
    from s2l_tools.training.checkpoint import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    masks = {p.stem: p for p in args.masks.iterdir() if p.is_file()}
    images = sorted(p for p in args.images.iterdir() if p.is_file() and p.stem in masks)
    if not images:
        sys.exit(f"{args.images}: no image has a mask of its stem in {args.masks}")
    truths = {p.stem: truth_mask(masks[p.stem]) for p in images}
    tag = args.images.resolve().parent.name + ("_flips" if args.flips else "")
    rows, totals = [], {label: [0, 0] for *_, label in BINS}
    for run in args.runs:
        t0 = time.perf_counter()
        meta = load_model(run)[1]
        probs = prob_maps(run, images, flips=args.flips, cache=run / f"undercall_{tag}.npz")
        named = []
        for stem, prob in probs.items():
            truth = truths[stem]
            labels = instances_from_probability(prob, threshold=meta.threshold,
                                                min_size=meta.min_size)
            found = float((labels > 0)[truth].sum() / max(1, truth.sum()))
            of_seen, of_image = under_called_share(prob, meta.threshold)
            flag = under_called(prob, meta.threshold)
            label = next(lab for lo, hi, lab in BINS if lo <= found < hi)
            totals[label][0] += flag
            totals[label][1] += 1
            row = {"run": str(run), "image": stem, "found": round(found, 4),
                   "true_share": round(float(truth.mean()), 4), "of_seen": round(of_seen, 4),
                   "of_image": round(of_image, 4), "named": bool(flag)}
            rows.append(row)
            if flag:
                named.append(f"{stem[:8]} (finds {found:.0%}, {of_seen:.2f} of seen)")
        print(f"{run}: {len(probs)} images, {time.perf_counter() - t0:.0f} s; named: "
              f"{', '.join(named) or 'none'}", flush=True)
    print("\n| true area the mask finds | masks | named |\n| --- | --- | --- |")
    for *_, label in BINS:
        print(f"| {label} | {totals[label][1]} | {totals[label][0]} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

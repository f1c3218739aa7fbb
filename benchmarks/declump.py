"""Declumping on or off, on the same probability maps (issue 17: the default of s2l-predict).

For each run folder written by ``accuracy.py`` (``<workdir>/<modality>/n*_v*/<budget>/<run>``)
the val images' foreground probabilities are computed once with the run's model
(``predict_probability``) and turned into instances with and without the
distance-transform watershed (``instances_from_probability``, threshold and minimum
size of the model); both are scored against the val masks (``score_pair``).
``--forest`` does the same with the random forest's probability instead of a network
(fitted on the run folder's scribbles, seed 0), for modalities without a trained model.

    .venv/bin/python benchmarks/declump.py --workdir /tmp/acc --modality fluo \\
        --runs s2lfg_r0.1_s0_crf5,s2lfg_r0.1_s1_crf5
    .venv/bin/python benchmarks/declump.py --workdir /tmp/acc --modality histo --forest r0.1_s0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import tifffile

MODES = ("none", "watershed")


def score(prob_of, val: Path, *, threshold: float, min_size: int) -> dict:
    from s2l_tools.evaluation.metrics import score_pair
    from s2l_tools.inference.postprocess import instances_from_probability
    from s2l_tools.io.images import read_image

    rows = {m: [] for m in MODES}
    for img in sorted((val / "images").glob("*.png")):
        prob = prob_of(read_image(img))
        truth = tifffile.imread(val / "masks" / f"{img.stem}.tif")
        for mode in MODES:
            labels = instances_from_probability(prob, threshold=threshold, min_size=min_size,
                                                declump=mode)
            s = score_pair(labels, truth)
            s["objects"], s["true_objects"] = int(labels.max()), int(len(np.unique(truth)) - 1)
            rows[mode].append(s)
    out = {}
    for mode, rs in rows.items():
        out[mode] = {k: float(np.mean([r[k] for r in rs])) for k in ("iou", "mdice", "f1_50", "ap_50")}
        out[mode]["objects"] = sum(r["objects"] for r in rs)
        out[mode]["true_objects"] = sum(r["true_objects"] for r in rs)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, required=True, help="accuracy.py's --workdir")
    p.add_argument("--modality", default="fluo")
    p.add_argument("--runs", default="", help="comma list of run folder names (network models)")
    p.add_argument("--forest", help="scribbles suffix, e.g. r0.1_s0: score the random forest")
    args = p.parse_args()

    (root,) = sorted((args.workdir / args.modality).glob("n*_v*"))[:1] or [None]
    if root is None:
        raise SystemExit(f"{args.workdir / args.modality}: no accuracy.py data; run it first")
    val = root / "val"
    results = {}
    for run in filter(None, args.runs.split(",")):
        from s2l_tools.inference.predict import predict_probability
        from s2l_tools.training.checkpoint import load_model

        (folder,) = root.glob(f"*/{run}")
        model, meta = load_model(folder / "model")
        results[run] = score(lambda im: predict_probability(model, im, meta, device="cpu"), val,
                             threshold=meta.threshold, min_size=meta.min_size)
        print(run, json.dumps(results[run]), flush=True)
    if args.forest:
        from s2l_tools.classic.forest import ForestSettings, fit_forest, forest_probability
        from s2l_tools.training.data import load_training_data

        settings = ForestSettings(n_jobs=1)
        train = load_training_data(root / f"scribbles_{args.forest}")
        forest = fit_forest(train.images, train.scribbles, settings=settings, seed=0)
        name = f"forest_{args.forest}"
        results[name] = score(lambda im: forest_probability(forest, im, settings=settings), val,
                              threshold=0.5, min_size=64)
        print(name, json.dumps(results[name]), flush=True)
    for name, r in results.items():
        n, w = r["none"], r["watershed"]
        print(f"{name}: IoU {n['iou']:.4f} -> {w['iou']:.4f}, mDice {n['mdice']:.3f} -> "
              f"{w['mdice']:.3f}, F1@0.5 {n['f1_50']:.3f} -> {w['f1_50']:.3f}, objects "
              f"{n['objects']} -> {w['objects']} of {n['true_objects']}")


if __name__ == "__main__":
    main()

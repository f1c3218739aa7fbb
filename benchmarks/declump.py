"""Post-processing rules on the same probability maps: declumping on or off (issue 17: the
default of s2l-predict), the smallest object kept (``--min-sizes``) and the probability
threshold (``--thresholds``; issue 14).

For each run folder written by ``accuracy.py`` (``<workdir>/<modality>/n*_v*/<budget>/<run>``)
the val images' foreground probabilities are computed once with the run's model
(``predict_probability``; ``--flips``: averaged over the four flips, as s2l-predict does by
default) and turned into instances with and without the distance-transform watershed
(``instances_from_probability``) at each threshold and minimum size (default: the
model's); every variant is scored against the val masks (``score_pair``). The maps are
kept in the run folder (``val_prob[_flips].npz``, float16), so a second call only re-scores.
(``threshold_sweep.py`` is the older threshold diagnosis: one pass, no declumping, with the
predicted / true area.)
``--forest`` does the same with the random forest's probability instead of a network
(fitted on the scribbles of ``--forest r0.1_s0[_hand]`` with that seed, as accuracy.py's
forest), for modalities without a trained model or as the baseline.

    .venv/bin/python benchmarks/declump.py --workdir /tmp/acc --modality fluo \\
        --runs s2lfg_r0.1_s0_crf5,s2lfg_r0.1_s1_crf5
    .venv/bin/python benchmarks/declump.py --workdir /tmp/acc --modality histo --forest r0.1_s0
    .venv/bin/python benchmarks/declump.py --workdir /tmp/acc --flips --declump none \\
        --min-sizes 64,32,16,0 --runs s2lfg_r0.1_s0_hand_crf5_ga0.4 --forest r0.1_s0_hand
    .venv/bin/python benchmarks/declump.py --workdir /tmp/acc --flips --declump watershed \\
        --thresholds 0.5,0.6,0.7 --runs s2lfg_r0.1_s0_hand_crf5_pm1
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threshold_sweep import parse_thresholds  # noqa: E402  (a sibling script, not a package)

MODES = ("none", "watershed")
FOREST_MIN_SIZE = 64  # the forest baseline: objects < 64 px removed


def probabilities(prob_of, val: Path, cache: Path) -> dict[str, np.ndarray]:
    """``stem -> float32 map`` of every val image, from ``cache`` when it is there."""
    from s2l_tools.io.atomic import atomic_path
    from s2l_tools.io.images import read_image

    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k].astype(np.float32) for k in z.files}
    probs = {img.stem: prob_of(read_image(img)).astype(np.float16)
             for img in sorted((val / "images").glob("*.png"))}
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **probs)
    return {k: v.astype(np.float32) for k, v in probs.items()}


def score(probs: dict, val: Path, *, thresholds, min_sizes, modes=MODES) -> dict:
    """``{'<mode>[_min<N>][_t<T>]': mean scores}`` of every variant (a suffix where there are
    several sizes or thresholds)."""
    from s2l_tools.evaluation.metrics import score_pair
    from s2l_tools.inference.postprocess import instances_from_probability

    keys = [(m, n, t) for m in modes for n in min_sizes for t in thresholds]
    name = {k: k[0] + (f"_min{k[1]}" if len(min_sizes) > 1 else "")
            + (f"_t{k[2]:g}" if len(thresholds) > 1 else "") for k in keys}
    rows = {k: [] for k in keys}
    for stem, prob in probs.items():
        truth = tifffile.imread(val / "masks" / f"{stem}.tif")
        for mode, n, t in keys:
            labels = instances_from_probability(prob, threshold=t, min_size=n, declump=mode)
            s = score_pair(labels, truth)
            s["objects"], s["true_objects"] = int(labels.max()), int(len(np.unique(truth)) - 1)
            rows[mode, n, t].append(s)
    out = {}
    for k, rs in rows.items():
        out[name[k]] = {m: float(np.mean([r[m] for r in rs]))
                        for m in ("iou", "mdice", "f1_50", "ap_50")}
        out[name[k]]["objects"] = sum(r["objects"] for r in rs)
        out[name[k]]["true_objects"] = sum(r["true_objects"] for r in rs)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, required=True, help="accuracy.py's --workdir")
    p.add_argument("--modality", default="fluo")
    p.add_argument("--runs", default="", help="comma list of run folder names (network models)")
    p.add_argument("--forest", help="scribbles suffix, e.g. r0.1_s0: score the random forest")
    p.add_argument("--flips", action="store_true", help="the networks' maps averaged over flips")
    p.add_argument("--declump", default=",".join(MODES), help="comma list of none, watershed")
    p.add_argument("--min-sizes", default="",
                   help="comma list of smallest objects kept (px); default: the model's "
                        f"(the forest: {FOREST_MIN_SIZE})")
    p.add_argument("--thresholds", default="",
                   help="comma list of probability thresholds; default: the model's (0.5)")
    p.add_argument("--json", type=Path, help="write every score here")
    args = p.parse_args()

    modes = tuple(filter(None, args.declump.split(",")))
    sizes = [int(s) for s in args.min_sizes.split(",") if s]
    cuts = parse_thresholds(args.thresholds) if args.thresholds else ()
    (root,) = sorted((args.workdir / args.modality).glob("n*_v*"))[:1] or [None]
    if root is None:
        raise SystemExit(f"{args.workdir / args.modality}: no accuracy.py data; run it first")
    val = root / "val"
    flips = "_flips" if args.flips else ""
    results = {}
    for run in filter(None, args.runs.split(",")):
        from s2l_tools.inference.predict import predict_probability
        from s2l_tools.training.checkpoint import load_model

        (folder,) = root.glob(f"*/{run}")
        model, meta = load_model(folder / "model")
        probs = probabilities(
            lambda im: predict_probability(model, im, meta, device="cpu", flips=args.flips),
            val, folder / f"val_prob{flips}.npz")
        results[run] = score(probs, val, thresholds=cuts or [meta.threshold],
                             min_sizes=sizes or [meta.min_size], modes=modes)
        print(run, json.dumps(results[run]), flush=True)
    if args.forest:
        from s2l_tools.classic.forest import ForestSettings, fit_forest, forest_probability
        from s2l_tools.training.data import load_training_data

        settings = ForestSettings(n_jobs=1)
        seed = int(re.search(r"_s(\d+)", args.forest).group(1))
        name = f"forest_{args.forest}"
        folder = root / "forest" / name
        folder.mkdir(parents=True, exist_ok=True)
        cache = folder / "val_prob.npz"
        forest = None
        if not cache.exists():
            train = load_training_data(root / f"scribbles_{args.forest}")
            forest = fit_forest(train.images, train.scribbles, settings=settings, seed=seed)
        probs = probabilities(lambda im: forest_probability(forest, im, settings=settings),
                              val, cache)
        results[name] = score(probs, val, thresholds=cuts or [0.5],
                              min_sizes=sizes or [FOREST_MIN_SIZE], modes=modes)
        print(name, json.dumps(results[name]), flush=True)
    for name, r in results.items():
        print(name + ": " + "; ".join(
            f"{k} IoU {v['iou']:.4f} mDice {v['mdice']:.4f} F1@0.5 {v['f1_50']:.3f} "
            f"objects {v['objects']}/{v['true_objects']}" for k, v in r.items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Where do the accuracy benchmark's networks put the cell boundary? (a diagnosis, not a test)

Re-scores finished ``benchmarks/accuracy.py`` runs at several probability
thresholds. Every run's table score uses the model's threshold (0.5); if a
network ranks pixels well but places its boundary too far out (it over-segments),
a higher threshold recovers the truth's area and much of the IoU. The best
threshold here is chosen **on the val images themselves**: it measures
calibration, it is not a fair score.

    .venv/bin/python benchmarks/threshold_sweep.py --workdir /tmp/s2l_acc3 --modality fluo \\
        --runs full_rNone_s0,pce_r0.1_s0,s2l_r1.0_s0

Each run is read from ``<workdir>/<modality>/n*_v*/<budget>/<run>/model`` (the
one match; ``--budget`` picks among several) and predicts the val images of that
folder once; post-processing and scores are those of the table (objects < the
model's ``min_size`` removed, holes filled; :func:`s2l_tools.evaluation.metrics.score_pair`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

THRESHOLDS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def find_run(workdir: Path, modality: str, run: str, budget: str | None) -> Path:
    pattern = f"n*_v*/{budget or '*'}/{run}/model"
    hits = sorted((workdir / modality).glob(pattern))
    if len(hits) != 1:
        raise SystemExit(f"{workdir / modality}/{pattern}: {len(hits)} runs match; "
                         "run benchmarks/accuracy.py first, or pick one with --budget")
    return hits[0].parent


def sweep(run: Path, thresholds=THRESHOLDS) -> dict:
    """Mean IoU, mDice, F1@0.5 and median predicted/true area at each threshold."""
    from s2l_tools.training.checkpoint import load_model
    from s2l_tools.io.images import read_image, read_labels
    from s2l_tools.evaluation.metrics import score_pair
    from s2l_tools.inference.postprocess import instances_from_probability
    from s2l_tools.inference.predict import predict_probability

    val = run.parent.parent / "val"
    model, meta = load_model(run / "model")
    scores = {t: {"iou": [], "mdice": [], "f1_50": [], "area": []} for t in thresholds}
    for truth_path in sorted((val / "masks").glob("*.tif")):
        image = read_image(val / "images" / f"{truth_path.stem}.png")
        truth = read_labels(truth_path)
        prob = predict_probability(model, image, meta, device="cpu")
        for t in thresholds:
            labels = instances_from_probability(prob, threshold=t, min_size=int(meta.min_size),
                                                declump="none")
            s = score_pair(labels, truth)
            for k in ("iou", "mdice", "f1_50"):
                scores[t][k].append(s[k])
            scores[t]["area"].append((labels > 0).sum() / max((truth > 0).sum(), 1))
    return {t: {"iou": statistics.mean(v["iou"]), "mdice": statistics.mean(v["mdice"]),
                "f1_50": statistics.mean(v["f1_50"]), "area": float(np.median(v["area"]))}
            for t, v in scores.items()}


def markdown(results: dict[str, dict]) -> str:
    ths = list(next(iter(results.values())))
    lines = ["| run | " + " | ".join(f"t={t}" for t in ths) + " | best t (on val) |",
             "| --- |" + " --- |" * (len(ths) + 1)]
    for name, res in results.items():
        best = max(res, key=lambda t: res[t]["iou"])
        cells = [f"{res[t]['iou']:.3f} ({res[t]['area']:.2f}x)" for t in ths]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best}: IoU {res[best]['iou']:.3f}, "
                     f"F1 {res[best]['f1_50']:.3f} |")
    return "\n".join(lines)


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``"0.5,0.9"`` -> ``(0.5, 0.9)``; a one-line SystemExit on anything else."""
    try:
        thresholds = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise SystemExit(f"--thresholds {text}: give numbers in (0, 1), e.g. 0.5,0.9")
    if not all(0 < t < 1 for t in thresholds):
        raise SystemExit(f"--thresholds {text}: every threshold must be in (0, 1)")
    return thresholds


def add_run_arguments(p: argparse.ArgumentParser, example: str = "pce_r1.0_s0") -> None:
    """``--workdir --modality --runs --budget``: which finished accuracy.py runs to read."""
    p.add_argument("--workdir", type=Path, required=True, help="accuracy.py's --workdir")
    p.add_argument("--modality", default="fluo")
    p.add_argument("--runs", required=True, help=f"comma list of run folders, e.g. {example}")
    p.add_argument("--budget", help="the budget folder, e.g. e30_resnet18_c128_b8_s128")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(p)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)),
                   help="comma list (default %(default)s); 0.5 alone gives the table's masks")
    args = p.parse_args(argv)
    thresholds = parse_thresholds(args.thresholds)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = {}
    for name in args.runs.split(","):
        run = find_run(args.workdir, args.modality, name, args.budget)
        results[name] = sweep(run, thresholds)
        print(name, " ".join(f"{t}:{v['iou']:.3f}/{v['area']:.2f}x"
                             for t, v in results[name].items()), file=sys.stderr, flush=True)
    print(f"IoU (median predicted / true area) by threshold, {args.modality}:\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

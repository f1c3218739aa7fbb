"""A label-free cut for a run's masks: the forest's foreground share (not a test; issue 14).

    .venv/bin/python benchmarks/share_cut.py --workdir /tmp/acc --modality brightfield \\
        --scribbles hand --seeds 0,1,2 --runs s2lfg_r0.1_s{s}_hand_crf5_ga0.4_pm1

A network trained on strokes learns the strokes' class shares as its prior (on brightfield the
strokes are a third cell pixels, the images 2 %), so its cut at 0.5 can sit too low. The rule
measured here needs no mask: on the run's own TRAINING images, the cut at which the network's
foreground share equals that of the random forest fitted on the same strokes (the fast start's
forest, ``fit_forest`` with the run's seed, its probability at 0.5), never below 0.5:

    cut = max(0.5, quantile(p_network over all training pixels, 1 - share_forest))

For each seed, the forest is fitted on ``<workdir>/<modality>/n*_v*/scribbles_r0.1_s<seed>[_hand]``;
each run's model predicts those training images (no flips) for the cut, and its val maps
(``declump.py``'s cache ``val_prob_flips.npz``, made here when missing: flips, as s2l-predict) are
scored at 0.5 and at the cut with ``declump.py``'s scoring (the watershed, the model's smallest
object). The masks are only used to score.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from declump import probabilities, score  # noqa: E402  (a sibling script, not a package)


def share_cut(prob_train: np.ndarray, share: float, floor: float = 0.5) -> float:
    """The cut at which ``share`` of ``prob_train``'s pixels are foreground, at least ``floor``.

    The exact quantile (the numbers in docs/benchmarks.md); ``s2l-train --auto-threshold``
    takes it from a histogram (:func:`s2l_tools.training.auto_threshold.share_threshold`,
    rounded up to the next of its bins, 0.001 of the logit)."""
    return max(floor, float(np.quantile(prob_train, 1.0 - share)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/acc"))
    p.add_argument("--modality", default="fluo")
    p.add_argument("--scribbles", choices=("skeleton", "hand"), default="skeleton")
    p.add_argument("--seeds", default="0")
    p.add_argument("--runs", required=True,
                   help="comma list of run-name patterns with {s} for the seed")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from s2l_tools.inference.predict import predict_probability
    from s2l_tools.training.auto_threshold import forest_share
    from s2l_tools.training.checkpoint import load_model
    from s2l_tools.training.data import load_training_data
    from s2l_tools.training.engine import Context

    torch.set_num_threads(args.threads)
    (root,) = sorted((args.workdir / args.modality).glob("n*_v*"))[:1] or [None]
    if root is None:
        raise SystemExit(f"{args.workdir / args.modality}: no accuracy.py data; run it first")
    val = root / "val"
    tag = "_hand" if args.scribbles == "hand" else ""
    print("| seed | run | forest share | network share at 0.5 | cut | IoU at 0.5 | IoU at the cut "
          "| F1@0.5 at 0.5 / at the cut |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for seed in (int(s) for s in args.seeds.split(",") if s):
        d = load_training_data(root / f"scribbles_r0.1_s{seed}{tag}")
        share = forest_share(d, Context(), seed=seed)  # s2l-train's (n_jobs: torch's threads)
        for pattern in filter(None, args.runs.split(",")):
            name = pattern.format(s=seed)
            found = sorted(root.glob(f"*/{name}/model"))
            if len(found) != 1:
                raise SystemExit(f"{root}: {len(found)} runs named {name} with a model; train "
                                 "it with accuracy.py first (or name one budget's run)")
            folder = found[0].parent
            model, meta = load_model(folder / "model")
            train = np.concatenate([predict_probability(model, im, meta, device="cpu").ravel()
                                    for im in d.images])
            cut = share_cut(train, share)
            probs = probabilities(
                lambda im: predict_probability(model, im, meta, device="cpu", flips=True),
                val, folder / "val_prob_flips.npz")
            res = score(probs, val, thresholds=[0.5, cut], min_sizes=[meta.min_size],
                        modes=("watershed",))
            at = list(res.values())  # [0.5, cut]; one entry when the cut is 0.5
            at_cut = at[-1]
            print(f"| {seed} | {name} | {share:.4f} | {np.mean(train >= 0.5):.4f} | {cut:.3f} "
                  f"| {at[0]['iou']:.4f} | {at_cut['iou']:.4f} | {at[0]['f1_50']:.3f} / "
                  f"{at_cut['f1_50']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

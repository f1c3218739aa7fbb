"""How right are a finished S2L run's pseudo-labels? (a diagnosis, not a test)

Reads the EMA store from the ``checkpoint.pt`` of finished
``benchmarks/accuracy.py`` runs (``s2l`` runs; the store is what the last
ensemble pass left) and compares the pseudo-labels it gives on the
**training** images' unscribbled pixels (EMA > tau: foreground, EMA < 1 - tau:
background, none within ``--pseudo-margin`` of the map's outline: the run's own
tau and margin, through ``s2l_tools.training.step.pseudo_labels``) with those
images' full masks (``benchmarks/fast_start.py`` does the same for the store's
first map):

- pseudo-foreground precision: the share of pseudo-foreground pixels that are
  cells in the truth (the rest is halo or debris the network teaches itself);
- pseudo-foreground / true foreground, over the unscribbled pixels;
- pseudo-background precision, and the share of each true class covered.

    .venv/bin/python benchmarks/pseudo_labels.py --workdir /tmp/s2l_acc3 --modality fluo \\
        --budget e30_resnet18_c128_b8_s128 --runs s2l_r0.1_s0,s2l_r1.0_s0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from threshold_sweep import add_run_arguments, find_run  # noqa: E402  (a sibling script, not a package)


def label_counts(maps, scribbles, masks, tau: float, margin: int = 0) -> dict:
    """The pseudo-labels EMA maps give on the unscribbled pixels, against the masks, as ratios.

    ``maps``, ``scribbles``, ``masks``: per image, (H, W) foreground probability, scribble
    codes and labels (> 0: cell); ``tau``, ``margin``: s2l-train's ``--consistency-threshold``
    and ``--pseudo-margin``.
    """
    import torch

    from s2l_tools.training.step import pseudo_labels

    n = dict.fromkeys(("pfg", "pfg_ok", "pbg", "pbg_ok", "fg", "bg"), 0)
    for ema, scribble, mask in zip(maps, scribbles, masks):
        label = pseudo_labels(torch.from_numpy(np.asarray(ema, np.float32))[None],
                              torch.from_numpy(np.asarray(scribble))[None],
                              threshold=tau, margin=margin)[0].numpy()
        truth, unlabeled = np.asarray(mask) > 0, np.asarray(scribble) == 0
        pfg, pbg = label == 1, label == 0
        n["pfg"] += int(pfg.sum())
        n["pfg_ok"] += int((pfg & truth).sum())
        n["pbg"] += int(pbg.sum())
        n["pbg_ok"] += int((pbg & ~truth).sum())
        n["fg"] += int((unlabeled & truth).sum())
        n["bg"] += int((unlabeled & ~truth).sum())
    return {"tau": tau, "margin": margin, "fg_precision": n["pfg_ok"] / max(n["pfg"], 1),
            "fg_area": n["pfg"] / max(n["fg"], 1),
            "bg_precision": n["pbg_ok"] / max(n["pbg"], 1),
            "fg_covered": n["pfg_ok"] / max(n["fg"], 1),
            "bg_covered": n["pbg_ok"] / max(n["bg"], 1)}


def check(run: Path) -> dict:
    """Pixel counts of the run's pseudo-labels against the truth, as ratios."""
    import torch

    from s2l_tools.training.ema import EmaStore
    from s2l_tools.training.data import load_training_data

    model = run / "model"
    config = json.loads((model / "config.json").read_text())
    state = torch.load(model / "checkpoint.pt", map_location="cpu", weights_only=False)["ema"]
    if state is None or int(state["n_updates"].max()) == 0:
        raise SystemExit(f"{model}: no EMA store was filled in this run (method "
                         f"{config['method']}); pass S2L runs (s2l_r...)")
    shapes = [tuple(s) for s in state["shapes"].tolist()]
    store = EmaStore(shapes, dtype=state["dtype"])
    store.load_state_dict(state)
    data = load_training_data(config["data"], channel=config.get("channel"))  # the trainer's order
    if config.get("diameter"):  # --diameter: the store holds the images as the run resized them
        from s2l_tools.training import rundir, scale

        known = scale.recorded_scales(rundir.read_inputs(model), data)
        if len(known) != len(data.images):
            raise SystemExit(f"{model}: trained with --diameter {config['diameter']:g}, but its "
                             "inputs.json lacks the scales of these images; re-run the run's "
                             "accuracy.py command")
        data = scale.rescale(data, [known[i] for i in range(len(data.images))])
    if data.shapes != shapes or any(m is None for m in data.masks):
        raise SystemExit(f"{config['data']}: {len(data.shapes)} scribbled images (with masks "
                         f"needed) for {len(shapes)} in the store; re-run the run's accuracy.py "
                         "command")
    return label_counts([store.get(i) for i in range(len(shapes))], data.scribbles, data.masks,
                        float(config["threshold"]), int(config.get("pseudo_margin", 0)))


def markdown(results: dict[str, dict]) -> str:
    lines = ["| run | pseudo-fg precision | pseudo-fg / true fg | pseudo-bg precision | "
             "true fg covered | true bg covered |", "| --- |" + " --- |" * 5]
    for name, r in results.items():
        lines.append(f"| {name} | {r['fg_precision']:.3f} | {r['fg_area']:.2f}x | "
                     f"{r['bg_precision']:.3f} | {r['fg_covered']:.3f} | {r['bg_covered']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(p, "s2l_r1.0_s0")
    args = p.parse_args(argv)
    results = {name: check(find_run(args.workdir, args.modality, name, args.budget))
               for name in args.runs.split(",")}
    print(f"pseudo-labels on the unscribbled training pixels, {args.modality}:\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

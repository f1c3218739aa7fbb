"""One round after the under-call warning: strokes where s2l-suggest points, or at random
(not a test; issue 19).

    .venv/bin/python benchmarks/undercall_round.py --run RUN --data DATA --val VAL \\
        --add 360x360:1,520x696:1 --strokes 8 --workdir /tmp/s2l-undercall --threads 2

RUN is an ``s2l-train`` run on DATA (images/, scribbles/, masks/), e.g. a
``benchmarks/accuracy.py`` run with ``--train-images 5``; VAL a folder of images/ and masks/
(accuracy.py's val folder). ``--add`` takes unused DSB-fluo train images of the sizes given
(by DSB's manifest, the first in name order that DATA lacks), without strokes, as a person
adds images of the kind the model misses. Then, per arm (``--arms``), an annotator who knows
those images' full masks draws ``--strokes`` strokes on them, as ``benchmarks/loop.py``'s
annotator does:

- ``suggest``: at ``s2l-suggest``'s regions of the added images, in its order to draw
  (:func:`s2l_tools.inference.suggest.draw_order`: an image it finds under-called, source
  ``undercalled``, first);
- ``random``: at random pixels of the added images.

Each arm retrains with ``--from RUN`` (``s2l-train``'s short schedule) and is scored on VAL with
one pass (no flips), as RUN itself is, first. Printed: IoU on VAL, and the share of the true
cell area found on the VAL images where RUN's mask finds under half of it.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import DSB, loadavg, predict_and_score, write_tiff  # noqa: E402
from loop import stroke_at_point, stroke_at_region  # noqa: E402


def added_images(data: Path, sizes: list[tuple[str, int]]) -> list[str]:
    """Stems of unused DSB-fluo train images, ``count`` of each ``'HxW'`` size."""
    have = {p.stem for p in (data / "images").iterdir()}
    with open(DSB / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["modality"] == "fluo" and r["split"] == "train"]
    stems = []
    for size, count in sizes:
        pool = sorted(r["id"] for r in rows
                      if f"{r['height']}x{r['width']}" == size and r["id"] not in have)
        if len(pool) < count:
            sys.exit(f"--add {size}:{count}: only {len(pool)} unused train images of that size")
        stems += pool[:count]
    return stems


def score(run: Path, val: Path, out: Path) -> tuple[dict, dict]:
    """(summary, stem -> share of the true area found) of ``run``'s model on ``val``."""
    from s2l_tools.inference.predict import predict_image
    from s2l_tools.io.images import read_labels
    from s2l_tools.training.checkpoint import load_model

    model, meta = load_model(run)
    stems = sorted(p.stem for p in (val / "images").glob("*.png"))
    res = predict_and_score(out, val, stems,
                            lambda im: predict_image(model, im, meta, device="cpu")[0],
                            train_s=0.0, load0=loadavg())
    found = {}
    for stem in stems:
        truth = read_labels(val / "masks" / f"{stem}.tif") > 0
        pred = read_labels(out / "pred" / f"{stem}.tif") > 0
        found[stem] = float(pred[truth].sum() / max(1, truth.sum()))
    return res, found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--add", default="360x360:1,520x696:1", help="SIZE:COUNT,...")
    p.add_argument("--strokes", type=int, default=8)
    p.add_argument("--arms", default="suggest,random")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/s2l-undercall"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="the random arm's places")
    args = p.parse_args(argv)

    from rich.console import Console

    from s2l_tools.inference.suggest import draw_order, suggest
    from s2l_tools.io.images import read_labels
    from s2l_tools.training import rundir
    from s2l_tools.training.config import retrain_settings
    from s2l_tools.training.engine import fit

    sizes = [(s.split(":")[0], int(s.split(":")[1])) for s in args.add.split(",")]
    new = added_images(args.data, sizes)
    truth = {s: read_labels(DSB / "fluo" / "train" / "labels" / f"{s}.tif") for s in new}
    args.workdir.mkdir(parents=True, exist_ok=True)
    base, found0 = score(args.run, args.val, args.workdir / "round0")
    missed = sorted(s for s, f in found0.items() if f < 0.5)
    rows = [dict(arm="RUN", iou=base["iou"], f1_50=base["f1_50"],
                 missed_found=float(np.mean([found0[s] for s in missed])) if missed else None,
                 strokes=0, seconds=0.0)]
    for arm in args.arms.split(","):
        d = args.workdir / arm / "data"
        if d.exists():
            shutil.rmtree(d)
        for sub in ("images", "scribbles", "masks"):
            shutil.copytree(args.data / sub, d / sub)
        for s in new:
            shutil.copy(DSB / "fluo" / "train" / "images" / f"{s}.png", d / "images")
            shutil.copy(DSB / "fluo" / "train" / "labels" / f"{s}.tif", d / "masks")
        scr = {s: np.zeros(truth[s].shape, np.uint8) for s in new}
        added, sources = 0, {}
        if arm == "suggest":
            results = suggest(args.run, d, top_k=args.strokes, min_area=16, device="cpu")
            sources = {r.stem: r.source for r in results if r.stem in new}
            regions = {(r.stem, reg.name): reg for r in results if r.stem in new
                       for reg in r.regions}
            order = draw_order([dict(image=stem, region=name, score=reg.score,
                                     source=sources[stem])
                                for (stem, name), reg in regions.items()])
            for row in order:
                if added >= args.strokes:
                    break
                reg = regions[row["image"], row["region"]]
                stroke = stroke_at_region(truth[row["image"]], scr[row["image"]], reg.mask,
                                          reg.y, reg.x)
                if stroke is not None:
                    pixels, code = stroke
                    scr[row["image"]][pixels & (scr[row["image"]] == 0)] = code
                    added += 1
        rng = np.random.default_rng(args.seed)
        areas = np.array([truth[s].size for s in new], float)
        tries = 0
        while added < args.strokes and tries < 100 * args.strokes:  # random (or out of regions)
            tries += 1
            stem = new[rng.choice(len(new), p=areas / areas.sum())]
            y, x = (int(rng.integers(0, n)) for n in truth[stem].shape)
            stroke = stroke_at_point(truth[stem], scr[stem], y, x)
            if stroke is not None:
                pixels, code = stroke
                scr[stem][pixels & (scr[stem] == 0)] = code
                added += 1
        for s in new:
            if scr[s].any():
                write_tiff(d / "scribbles" / f"{s}.tif", scr[s])
        out = args.workdir / arm / "run"
        if out.exists():
            shutil.rmtree(out)
        cfg = retrain_settings(rundir.read_config(args.run))
        cfg.data, cfg.out, cfg.from_run = str(d), str(out), str(args.run)
        cfg.holdout_strokes, cfg.threads = 0.0, args.threads
        t = time.perf_counter()
        fit(cfg, console=Console(stderr=True, quiet=True))
        seconds = time.perf_counter() - t
        res, found = score(out, args.val, args.workdir / arm)
        rows.append(dict(arm=arm, iou=res["iou"], f1_50=res["f1_50"],
                         missed_found=float(np.mean([found[s] for s in missed]))
                         if missed else None, strokes=added, seconds=round(seconds, 1),
                         sources=sources))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nadded images: {', '.join(s[:8] for s in new)}; RUN's masks finding under half "
          f"the true area on VAL: {len(missed)}")
    print("\n| | strokes | IoU on VAL | F1@0.5 | found on those images | retraining |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mf = "" if r["missed_found"] is None else f"{r['missed_found']:.2f}"
        print(f"| {r['arm']} | {r['strokes']} | {r['iou']:.4f} | {r['f1_50']:.3f} | {mf} | "
              f"{r['seconds']:.0f} s |")
    (args.workdir / "result.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy of Scribble2Label and its baselines on DSB2018 (paper Tables 1-2; not a test).

    .venv/bin/python benchmarks/accuracy.py --quick
    .venv/bin/python benchmarks/accuracy.py --modality fluo --ratios 0.1,0.3,0.5,1.0 \\
        --methods s2l,pce,pseudo,grabcut,full --seeds 0,1,2

For each modality, scribble ratio and seed: synthetic scribbles are drawn from
the train split's full masks (:func:`s2l_tools.data.synth.synthesize_scribbles`),
a dataset in the project's layout is written to the work folder
(``images/`` symlinks to the PNGs, ``scribbles/`` uint8 TIFFs, ``masks/`` the
labels), and every method is trained with :func:`s2l_tools.training.engine.fit` under one
budget (the same encoder, crop, batch, crops per epoch and epochs for all;
warm-up half the epochs), then predicts the val split (the model's tiling and
post-processing, :func:`s2l_tools.inference.predict.predict_image`) and is scored with
:func:`s2l_tools.evaluation.evaluate.evaluate_folders` (IoU, mDice, F1 at IoU 0.5).

Methods: ``s2l``, ``pce``, ``pseudo``, ``full`` (the full masks; it does not
depend on the ratio and is trained once per seed), ``forest`` (the random-forest
pixel classifier of :mod:`s2l_tools.classic.forest`, no network: what ilastik and Labkit
do), ``s2lf`` / ``s2lg`` / ``s2lfg`` (S2L with ``--fast-start forest`` /
``grabcut`` / ``forest+grabcut``) and ``grabcut``:
``cv2.grabCut`` initialised with a mask from the scribbles (GC_FGD on
foreground scribbles, GC_BGD on background scribbles, GC_PR_FGD within
``--grabcut-near`` px of a foreground scribble, GC_PR_BGD elsewhere; 5
iterations), whose full proposal (connected components) is then trained on as
``--method full``.

``--background near`` draws the background scribbles just outside the cells,
``--background mixed`` half there and half on the background's skeleton
(``synthesize_scribbles(..., background=...)``), instead of all on the skeleton
(the paper's); their scribble sets and runs are kept apart (names end in
``_near`` or ``_mixed``). ``--scribbles hand`` uses Fiji-like strokes instead
(``s2l-synth --protocol hand``: RoiSet.zip files converted as s2l-scribbles
does; names end in ``_hand``).

Finished runs are kept in ``--workdir`` (``result.json`` per run) and are not
repeated, so a long table can be stopped and continued. ``--flips`` scores the
networks as ``s2l-predict`` does by default, averaging each tile over its four
flips (``result_flips.json``, predictions in ``pred_flips/``); a run already
trained without it is re-scored from its saved model, not trained again. The
tables made before it (the forest is never flipped) are without it. ``--rest`` scores every
run on the val images that ``--val-images`` left out instead (on DSB-fluo the 47 of 87 that no
setting was ever chosen on; ``result_rest[_flips].json``, predictions in ``pred_rest[_flips]/``),
from the saved models, so a gain that exists only on the choice set shows. ``--unused-train
HxW`` scores them on the train split's images of that size that no run trained on (on
DSB-fluo ``512x640``: the six grainy, dim images of a kind none of the 40 training images is;
``result_unused_HxW[_flips].json``): a kind of image to choose a robustness setting on
without touching the val split. Output: markdown tables
(ours: mean IoU [mDice] and F1 over seeds; the paper's numbers beside them), a
plot (``--plot``) and all numbers as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from s2l_tools.cli._common import gains as cli_gains  # --gains as s2l-predict reads it
from s2l_tools.device import keep_freed_memory

DSB = Path(os.environ.get("S2L_DSB", "/work/shared/data/dsb2018"))

# paper (docs/method.md): Table 1, IoU [mDice]
PAPER_T1 = {
    "fluo": {"grabcut": (0.8019, 0.7815), "pseudo": (0.8109, 0.8136), "pce": (0.8293, 0.8375),
             "rloss": (0.8331, 0.8394), "s2l": (0.8426, 0.8443), "full": (0.8688, 0.8390)},
    "histo": {"grabcut": (0.6969, 0.5961), "pseudo": (0.7888, 0.7096), "pce": (0.7804, 0.7173),
              "rloss": (0.7873, 0.7177), "s2l": (0.7970, 0.7246), "full": (0.8134, 0.7014)},
    "brightfield": {"grabcut": (0.7328, 0.7207), "pseudo": (0.6177, 0.6826),
                    "pce": (0.7954, 0.7351), "rloss": (0.7993, 0.7280),
                    "s2l": (0.8236, 0.7663), "full": (0.8774, 0.7879)},
}
# paper Table 2 (DSB-Fluo, synthetic scribbles), IoU by ratio
PAPER_T2 = {"s2l": {0.1: 0.8274, 0.3: 0.8539, 0.5: 0.8497, 1.0: 0.8588},
            "pce": {0.1: 0.7996, 0.3: 0.8180, 0.5: 0.8189, 1.0: 0.8098},
            "full": {r: 0.8638 for r in (0.1, 0.3, 0.5, 1.0)}}
METHOD_NAMES = {"forest": "Random forest", "grabcut": "GrabCut", "pseudo": "Pseudo-Label",
                "pce": "pCE only", "rloss": "rLoss (pCE + CRF)", "s2l": "S2L", "s2lf": "S2L + forest start",
                "s2lg": "S2L + GrabCut start", "s2lfg": "S2L + forest+GrabCut start",
                "full": "Full"}
ORDER = ["forest", "grabcut", "pseudo", "pce", "rloss", "s2l", "s2lf", "s2lg", "s2lfg", "full"]
#: the benchmark's names of S2L with a fast start (s2l-train --fast-start)
#: instances are scored without declumping, as every table in docs/benchmarks.md was (so
#: results stay comparable; foreground IoU barely depends on it, F1 and mDice do: s2l-predict
#: declumps by default, see "Touching nuclei" there)
DECLUMP = "none"
FAST_STARTS = {"s2lf": "forest", "s2lg": "grabcut", "s2lfg": "forest+grabcut"}

QUICK = dict(train_images=20, val_images=10, encoder="resnet18", crop=128, batch_size=8,
             samples_per_epoch=64, epochs=12, ensemble_every=3, lr=1e-3, ratios="0.3",
             methods="s2l,pce", seeds="1")
# the default budget: ~5 min per run on 2 idle cores, so one seed of the whole table (17 runs
# per modality) takes ~1.5 h for fluo and a few hours for all three modalities
DEFAULT = dict(train_images=40, val_images=40, encoder="resnet18", crop=128, batch_size=8,
               samples_per_epoch=128, epochs=30, ensemble_every=3, lr=1e-3,
               ratios="0.1,0.3,0.5,1.0", methods="grabcut,pseudo,pce,s2l,full", seeds="1")


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ------------------------------------------------------------------------------ data
def split_files(modality: str, split: str, n: int, seed: int = 0) -> list[str]:
    """Stems of a split (``n`` > 0: a fixed random subset of ``n``)."""
    folder = DSB / modality / split / "images"
    stems = sorted(p.stem for p in folder.glob("*.png"))
    if n and n < len(stems):
        pick = np.random.default_rng(seed).choice(len(stems), size=n, replace=False)
        stems = [stems[i] for i in sorted(pick)]
    return stems


def rest_of(split_stems: list[str], chosen: list[str]) -> list[str]:
    """The stems of a split that ``chosen`` left out, in the split's order (``--rest``).

    Examples
    --------
    >>> rest_of(["a", "b", "c", "d"], ["b", "d"])
    ['a', 'c']
    """
    taken = set(chosen)
    return [stem for stem in split_stems if stem not in taken]


def unused_of(modality: str, split: str, size: str, taken: set[str]) -> list[str]:
    """The stems of ``split`` whose images are ``size`` (``'HxW'``, from DSB's manifest.csv)
    and not in ``taken`` (the runs' training and scored images), sorted (``--unused-train``)."""
    import csv

    manifest = DSB / "manifest.csv"
    if not manifest.is_file():
        raise SystemExit(f"--unused-train: {manifest} is missing; it lists each image's size "
                         "(the DSB2018 folder of ../shared/data ships it)")
    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["modality"] == modality
                and r["split"] == split and f"{r['height']}x{r['width']}" == size]
    return sorted(r["id"] for r in rows if r["id"] not in taken)


def splits(modality: str, n_train: int, n_val: int) -> tuple[str, list[str], str, list[str]]:
    """(train split, train stems, val split, val stems); brightfield has no val split:
    its train split is divided 2:1 (by a fixed random order) and that is said."""
    if (DSB / modality / "val" / "images").is_dir():
        return ("train", split_files(modality, "train", n_train), "val",
                split_files(modality, "val", n_val))
    stems = split_files(modality, "train", 0)
    order = np.random.default_rng(0).permutation(len(stems))
    cut = (2 * len(stems)) // 3
    train = [stems[i] for i in sorted(order[:cut])]
    val = [stems[i] for i in sorted(order[cut:])]
    print(f"note: {modality} has no val split; using {len(train)} train / {len(val)} held-out "
          "images of its train split", file=sys.stderr)
    return "train", train[:n_train or None], "train", val[:n_val or None]


def link(src: Path, dst: Path) -> None:
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            dst.symlink_to(src)
        except FileExistsError:  # another run of the same seed linked it first
            pass


def write_tiff(path: Path, array: np.ndarray) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.tif")  # two runs of one seed may write it at once
    tifffile.imwrite(tmp, array, compression="zlib", metadata=None)
    os.replace(tmp, path)


def make_train_set(root: Path, modality: str, split: str, stems: list[str], *, ratio: float,
                   seed: int, background: str = "skeleton", protocol: str = "skeleton") -> None:
    """images/ (symlinks), masks/ (symlinks to the labels), scribbles/ (synthetic).

    ``protocol`` 'hand': Fiji-like strokes made by ``s2l-synth --protocol hand``
    (RoiSet.zip files in rois/, converted as s2l-scribbles converts them)."""
    from s2l_tools.errors import S2LWarning
    from s2l_tools.io.images import read_labels
    from s2l_tools.cli.synth import main as synth_main
    from s2l_tools.data.synth import image_seed, synthesize_scribbles

    src = DSB / modality / split
    for stem in stems:
        link(src / "images" / f"{stem}.png", root / "images" / f"{stem}.png")
        link(src / "labels" / f"{stem}.tif", root / "masks" / f"{stem}.tif")
    if protocol == "hand":
        if not all((root / "scribbles" / f"{stem}.tif").exists() for stem in stems):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", S2LWarning)  # an image without cells
                if synth_main([str(root), "--ratio", str(ratio), "--seed", str(seed),
                               "--protocol", "hand", "--overwrite"]) != 0:
                    raise SystemExit(f"{root}: s2l-synth --protocol hand failed")
        return
    for stem in stems:
        out = root / "scribbles" / f"{stem}.tif"
        if not out.exists():
            lab = read_labels(src / "labels" / f"{stem}.tif")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", S2LWarning)  # an image without cells
                scr = synthesize_scribbles(lab, ratio=ratio, seed=image_seed(seed, stem),
                                           background=background)
            write_tiff(out, scr)


def make_full_set(root: Path, modality: str, split: str, stems: list[str]) -> None:
    src = DSB / modality / split
    for stem in stems:
        link(src / "images" / f"{stem}.png", root / "images" / f"{stem}.png")
        link(src / "labels" / f"{stem}.tif", root / "masks" / f"{stem}.tif")


def make_grabcut_set(root: Path, scribble_root: Path, stems: list[str], *, near: int) -> dict:
    """images/ + masks/ = GrabCut proposals (instances = connected components)."""
    from scipy import ndimage as ndi

    import cv2

    from s2l_tools.classic.grabcut import grabcut_proposal
    from s2l_tools.io.images import read_labels

    t = time.perf_counter()
    for stem in stems:
        link((scribble_root / "images" / f"{stem}.png").resolve(),
             root / "images" / f"{stem}.png")
        out = root / "masks" / f"{stem}.tif"
        if out.exists():
            continue
        scr = read_labels(scribble_root / "scribbles" / f"{stem}.tif")
        image = cv2.imread(str(scribble_root / "images" / f"{stem}.png"), cv2.IMREAD_COLOR)
        fg = grabcut_proposal(image, scr, near=near)  # the PNG's own 8 bits, grey repeated
        lab, _ = ndi.label(fg)
        write_tiff(out, lab.astype(np.uint16 if lab.max() < 65536 else np.uint32))
    return {"grabcut_s": time.perf_counter() - t}


def score_proposals(prop_root: Path, truth_root: Path) -> dict:
    """How good the GrabCut proposals are on the train images themselves."""
    from s2l_tools.evaluation.evaluate import evaluate_folders

    _, summary = evaluate_folders(prop_root / "masks", truth_root / "masks")
    return {k: summary[k] for k in ("iou", "mdice", "f1_50")}


# ------------------------------------------------------------------------- one run
def forest_and_score(run: Path, data: Path, val: Path, val_stems: list[str], seed: int,
                     pred_name: str = "pred") -> dict:
    """The random-forest pixel classifier (ilastik / Labkit): trained on the scribbles,
    predicts the val images with the networks' post-processing (threshold 0.5, holes
    filled, objects < 64 px removed)."""
    import torch

    from s2l_tools.training.data import load_training_data
    from s2l_tools.classic.forest import ForestSettings, fit_forest, forest_probability
    from s2l_tools.inference.postprocess import instances_from_probability

    settings = ForestSettings(n_jobs=torch.get_num_threads())
    train = load_training_data(data)
    load0 = loadavg()
    t = time.perf_counter()
    forest = fit_forest(train.images, train.scribbles, settings=settings, seed=seed)
    train_s = time.perf_counter() - t

    def segment(image):
        prob = forest_probability(forest, image, settings=settings)
        return instances_from_probability(prob, threshold=0.5, min_size=64, declump=DECLUMP)

    return predict_and_score(run, val, val_stems, segment, train_s=train_s, load0=load0,
                             pred_name=pred_name)


def predict_and_score(run: Path, val: Path, val_stems: list[str], segment, *, train_s: float,
                      load0: list[float], read=None, pred_name: str = "pred") -> dict:
    """Labels of every val image from ``segment(read(path))`` into ``run/pred_name``, scored.

    ``read``: how an image file becomes ``segment``'s input (default: our normalised
    ``read_image``; benchmarks/authors.py reads the RGB its transforms expect).
    """
    from s2l_tools.evaluation.evaluate import evaluate_folders
    from s2l_tools.io.images import read_image

    read = read or read_image
    t = time.perf_counter()
    pred = run / pred_name
    pred.mkdir(parents=True, exist_ok=True)
    for stem in val_stems:
        labels = segment(read(val / "images" / f"{stem}.png"))
        write_tiff(pred / f"{stem}.tif", labels.astype(np.int32))
    predict_s = time.perf_counter() - t
    _, summary = evaluate_folders(pred, val / "masks")
    return {"iou": summary["iou"], "mdice": summary["mdice"], "f1_50": summary["f1_50"],
            "ap_50": summary["ap_50"], "n_val": summary["n_images"], "train_s": train_s,
            "predict_s": predict_s, "load_start": load0, "load_end": loadavg()}


#: S2L settings passed through to s2l-train when given: (TrainConfig field, run-name tag)
S2L_SETTINGS = (("ema_alpha", "a"), ("pseudo_weight", "pw"), ("threshold", "t"),
                ("pseudo_margin", "pm"))


def s2l_settings(args, method: str) -> list[tuple[str, str, float]]:
    """(field, tag, value) of the S2L settings given on the command line, for an S2L method."""
    if not (method == "s2l" or method in FAST_STARTS):
        return []
    return [(name, tag, getattr(args, name)) for name, tag in S2L_SETTINGS
            if getattr(args, name) is not None]


def train_and_score(run: Path, data: Path, method: str, val: Path, val_stems: list[str],
                    args, seed: int) -> dict:
    from rich.console import Console

    from s2l_tools.training.config import TrainConfig
    from s2l_tools.training.engine import fit

    fast_start = FAST_STARTS.get(method, "none")
    method = "s2l" if method in FAST_STARTS else method
    cfg = TrainConfig(
        data=str(data), out=str(run / "model"), method=method, fast_start=fast_start,
        encoder=args.encoder, encoder_weights=args.encoder_weights,
        **({"pretrain_steps": args.pretrain_steps} if args.pretrain_steps else {}),
        epochs=args.epochs, warmup_epochs=args.warmup_epochs, ensemble_every=args.ensemble_every,
        crop=args.crop, batch_size=args.batch_size, samples_per_epoch=args.samples_per_epoch,
        lr=args.lr, restart_epochs=args.epochs, seed=seed, device="cpu",
        **({"decoder_lr_mult": args.decoder_lr_mult} if args.decoder_lr_mult else {}),
        crf_weight=None if method == "full" else args.crf_weight,
        grabcut_agreement=args.grabcut_agreement,
        auto_threshold=bool(args.auto_threshold) and method != "full",
        diameter=float(getattr(args, "diameter", None) or 0.0),
        noise_aug=float(getattr(args, "noise_aug", None) or 0.0),
        gain_aug=float(getattr(args, "gain_aug", None) or 1.0),
        clean_strokes=(getattr(args, "clean_strokes", None) or "off") if method != "full"
        else "off",
        **{name: value for name, _, value in s2l_settings(args, method)},
        checkpoint_every=args.epochs, panel_images=0, tile=512,
        holdout_strokes=0.0,  # every stroke, as the paper and the forest baseline
        threads=args.threads)  # fit() picks its own count unless told
    load0 = loadavg()
    t = time.perf_counter()
    fit(cfg, console=Console(stderr=True, quiet=not args.verbose))
    train_s = time.perf_counter() - t
    return score_model(run, val, val_stems, flips=args.flips, train_s=train_s, load0=load0)


def score_model(run: Path, val: Path, val_stems: list[str], *, flips: bool, train_s: float,
                load0: list[float], pred_name: str = "pred", gains=(1.0,)) -> dict:
    """Score the network saved in ``run/model`` on the val images (``flips``: averaged over
    the four flips, as s2l-predict does by default; into ``run/<pred_name>_flips``;
    ``gains``: averaged over the image brightened by each, as ``s2l-predict --gains``)."""
    from s2l_tools.training.checkpoint import load_model
    from s2l_tools.inference.predict import predict_image

    model, meta = load_model(run / "model")
    res = predict_and_score(
        run, val, val_stems,
        lambda image: predict_image(model, image, meta, device="cpu", declump=DECLUMP,
                                    flips=flips, gains=gains)[0],
        train_s=train_s, load0=load0, pred_name=pred_name + ("_flips" if flips else ""))
    return {**res, "flips": flips, **({} if tuple(gains) == (1.0,) else {"gains": list(gains)})}


def gains_tag(gains) -> str:
    """The result files' tag of ``--gains``: '' for 1 alone, else e.g. ``_g1-1.5-2``."""
    return "" if tuple(gains) == (1.0,) else "_g" + "-".join(f"{g:g}" for g in gains)


def score_rest(run: Path, res: dict, *, data: Path, val: Path, val_stems: list[str],
               flips: bool, seed: int, name: str = "rest", gains=(1.0,)) -> dict:
    """``--rest``: the finished run ``res`` scored on the val images it was not chosen on
    (``run/result_rest[_flips].json``, kept like ``result.json``; predictions in
    ``run/pred_rest[_flips]``); ``--unused-train HxW``: on unused train images, ``name``
    ``unused_HxW``. The forest is fitted again (seeded: the same forest)."""
    done = run / (f"result_{name}_flips.json" if flips else f"result_{name}.json")
    if done.exists():
        return json.loads(done.read_text())
    if res["method"] == "forest":
        out = forest_and_score(run, data, val, val_stems, seed, pred_name=f"pred_{name}")
    else:
        out = score_model(run, val, val_stems, flips=flips, train_s=res["train_s"],
                          load0=loadavg(), pred_name=f"pred_{name}", gains=gains)
    keep = ("modality", "method", "ratio", "seed", "budget", "n_train", "background", "scribbles")
    out.update({k: res[k] for k in keep if k in res}, rest=name)
    done.write_text(json.dumps(out, indent=2) + "\n")
    return out


# ---------------------------------------------------------------------------- report
def aggregate(results: list[dict]) -> dict:
    """(modality, method, ratio) -> mean/std of each score over seeds."""
    groups: dict = {}
    for r in results:
        groups.setdefault((r["modality"], r["method"], r["ratio"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        agg = {"seeds": [r["seed"] for r in rs], "train_s": statistics.mean(r["train_s"] for r in rs)}
        for m in ("iou", "mdice", "f1_50"):
            vals = [r[m] for r in rs]
            agg[m] = statistics.mean(vals)
            agg[m + "_std"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
        out[key] = agg
    return out


def paired(results: list[dict], against: str = "s2l") -> list[dict]:
    """S2L minus each other method, seed by seed (same scribbles, same seed).

    Seeds move every method together (they draw the scribbles and the initialisation),
    so the per-seed difference is the measurement; its mean, spread, the seeds won and
    a paired t-test (two-sided, ``scipy.stats.ttest_rel``) are returned for every
    (modality, ratio, method) with at least two seeds in common.
    """
    from scipy.stats import ttest_rel

    iou = {(r["modality"], r["method"], r["ratio"], r["seed"]): r["iou"] for r in results}
    groups = sorted({k[:3] for k in iou if k[1] not in (against, "full")},
                    key=lambda k: (k[0], k[2], ORDER.index(k[1])))
    out = []
    for mod, method, ratio in groups:  # Full has no ratio and is left out
        seeds = sorted(s for (m_, me, ra, s) in iou if (m_, me, ra) == (mod, method, ratio)
                       and (mod, against, ratio, s) in iou)
        if len(seeds) < 2:
            continue
        a = [iou[(mod, against, ratio, s)] for s in seeds]
        b = [iou[(mod, method, ratio, s)] for s in seeds]
        d = [x - y for x, y in zip(a, b)]
        out.append({"modality": mod, "ratio": ratio, "method": method, "against": against,
                    "seeds": seeds,
                    "diffs": d, "diff_mean": statistics.mean(d), "diff_std": statistics.stdev(d),
                    "wins": sum(x > 0 for x in d), "p_value": float(ttest_rel(a, b).pvalue)})
    return out


def paired_markdown(rows: list[dict], against: str = "s2l") -> str:
    if not rows:
        return ""
    name = METHOD_NAMES[against]
    lines = [f"\n\n**{name} minus the other method, seed by seed** (IoU; paired t-test, "
             "two-sided)\n",
             f"| data | ratio | {name} - method | mean ± sd | {name} ahead | p |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| DSB-{r['modality']} | {int(r['ratio'] * 100)} % | "
                     f"{METHOD_NAMES[r['method']]} | {r['diff_mean']:+.4f} ± {r['diff_std']:.4f} | "
                     f"{r['wins']} of {len(r['seeds'])} seeds | {r['p_value']:.3f} |")
    return "\n".join(lines)


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: a count N (seeds 0..N-1) or a comma list (``0,3``; ``3,`` is seed 3 alone)."""
    try:
        seeds = ([int(x) for x in text.split(",") if x.strip()] if "," in text
                 else list(range(int(text))))
    except ValueError:
        raise SystemExit(f"--seeds {text}: not a count or a list of integers; give a count "
                         "(--seeds 3 runs seeds 0, 1, 2) or a list (--seeds 0,3)") from None
    if not seeds:
        raise SystemExit(f"--seeds {text}: no seeds to run; give a count >= 1 "
                         "(--seeds 1 runs seed 0) or a list (--seeds 0,3)")
    return seeds


def _cell(a: dict | None, n_seeds: bool) -> str:
    if a is None:
        return "-"
    s = f"{a['iou']:.4f} [{a['mdice']:.4f}] F1 {a['f1_50']:.3f}"
    if len(a["seeds"]) > 1:
        s += f" (±{a['iou_std']:.3f} IoU, n={len(a['seeds'])})"
    return s


def markdown(agg: dict, modalities: list[str], ratios: list[float], methods: list[str],
             scored_on: str = "the val images") -> str:
    lines = []
    methods = [m for m in ORDER if m in methods]
    for mod in modalities:
        lines.append(f"\n**DSB-{mod}** (ours: IoU [mDice] F1@0.5 on {scored_on}; "
                     "paper: Table 1 IoU [mDice], Table 2 IoU for fluo)\n")
        head = ["method"] + [f"ours {int(r * 100)} %" for r in ratios] + ["paper Table 1"]
        if mod == "fluo":
            head += [f"paper T2 {int(r * 100)} %" for r in ratios]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("| " + " | ".join("---" for _ in head) + " |")
        for m in methods:
            row = [METHOD_NAMES[m]]
            for r in ratios:
                key = (mod, m, None if m == "full" else r)
                row.append(_cell(agg.get(key), True))
            p = PAPER_T1[mod].get(m)
            row.append(f"{p[0]:.4f} [{p[1]:.4f}]" if p else "-")
            if mod == "fluo":
                row += [f"{PAPER_T2[m][r]:.4f}" if m in PAPER_T2 and r in PAPER_T2[m] else "-"
                        for r in ratios]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(agg: dict, modalities: list[str], ratios: list[float], methods: list[str],
         path: Path, title: str, pairs: list[dict] = ()) -> None:
    """IoU by scribble ratio per modality; with ``pairs`` (:func:`paired`) a last panel of
    S2L minus each method, one dot per seed, the mean as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(modalities) + bool(pairs)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4), squeeze=False)
    colors = {"forest": "tab:olive", "grabcut": "tab:brown", "pseudo": "tab:purple",
              "pce": "tab:orange", "rloss": "tab:gray", "s2l": "tab:blue", "s2lf": "tab:cyan", "s2lg": "tab:pink",
              "s2lfg": "tab:red", "full": "tab:green"}
    if pairs:
        ax = axes[0][-1]
        for i, r in enumerate(pairs):
            ax.plot([i] * len(r["diffs"]), r["diffs"], "o", alpha=0.6, color=colors[r["method"]])
            ax.hlines(r["diff_mean"], i - 0.3, i + 0.3, color="k")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(pairs)))
        ax.set_xticklabels([f"{r['modality']} {int(r['ratio'] * 100)} %\nvs {METHOD_NAMES[r['method']]}"
                            f"\np={r['p_value']:.2g}" for r in pairs], fontsize=7)
        ax.set_ylabel(f"{METHOD_NAMES[pairs[0]['against']]} IoU - method IoU (same seed)")
        ax.set_title("paired by seed (dots: seeds, bar: mean)")
        ax.grid(alpha=0.3)
    for ax, mod in zip(axes[0], modalities):
        for m in [m for m in ORDER if m in methods]:
            xs, ys, es = [], [], []
            for r in ratios:
                a = agg.get((mod, m, None if m == "full" else r))
                if a:
                    xs.append(r * 100), ys.append(a["iou"]), es.append(a["iou_std"])
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", color=colors[m], capsize=3,
                            label=f"{METHOD_NAMES[m]} (ours)")
            if mod == "fluo" and m in PAPER_T2:
                ax.plot([r * 100 for r in ratios], [PAPER_T2[m][r] for r in ratios], "x--",
                        color=colors[m], alpha=0.6, label=f"{METHOD_NAMES[m]} (paper T2)")
            elif m in PAPER_T1[mod]:
                ax.axhline(PAPER_T1[mod][m][0], ls=":", color=colors[m], alpha=0.6,
                           label=f"{METHOD_NAMES[m]} (paper T1)")
        if len(ratios) == 1:
            ax.set_xlim(ratios[0] * 100 - 10, ratios[0] * 100 + 10)
        ax.set_xlabel("scribbled cells (%)")
        ax.set_ylabel("foreground IoU (val)")
        ax.set_title(f"DSB-{mod}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------ main
def get_parser():
    from s2l_tools.classic.start import MIN_AGREEMENT

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="minutes: 20 train / 10 val images, resnet18, crop 128, 12 epochs, "
                        "ratio 0.3, s2l and pce")
    p.add_argument("--modality", default="fluo", help="comma list of fluo, histo, brightfield")
    p.add_argument("--ratios", help="comma list of scribble ratios (default 0.1,0.3,0.5,1.0)")
    p.add_argument("--methods", help="comma list of forest,grabcut,pseudo,pce,rloss,s2l,s2lf,"
                   "s2lg,s2lfg,full (forest: random-forest pixel classifier; rloss: pCE + CRF "
                   "loss; s2lf / s2lg / s2lfg: S2L with --fast-start forest / grabcut / "
                   "forest+grabcut)")
    p.add_argument("--grabcut-agreement", type=float, default=MIN_AGREEMENT,
                   help="s2l-train --grabcut-agreement for s2lfg (s2l-train's default); runs "
                   "with more than 0 are named ..._gaX (the runs before it existed: 0)")
    p.add_argument("--crf-weight", type=float,
                   help="s2l-train --crf-weight for every method but full and forest (default: "
                   "the method's: 5 for rloss, 0 for the others); runs are named ..._crfX")
    p.add_argument("--ema-alpha", type=float,
                   help="s2l-train --ema-alpha for the S2L methods (default: s2l-train's); "
                   "runs are named ..._aX")
    p.add_argument("--pseudo-weight", type=float,
                   help="s2l-train --pseudo-weight (lambda) for the S2L methods; runs are "
                   "named ..._pwX")
    p.add_argument("--threshold", type=float,
                   help="s2l-train --consistency-threshold (tau) for the S2L methods; runs are "
                   "named ..._tX")
    p.add_argument("--pseudo-margin", type=int,
                   help="s2l-train --pseudo-margin (px beside the EMA map's boundary without "
                   "a pseudo-label) for the S2L methods; runs are named ..._pmX")
    p.add_argument("--auto-threshold", action="store_true",
                   help="s2l-train --auto-threshold for the networks but full (the saved "
                   "threshold from the forest's share); runs are named ..._at")
    p.add_argument("--diameter", type=float,
                   help="s2l-train --diameter for the networks (every image resized so its "
                   "median object is this many px across; runs are named ..._dX)")
    p.add_argument("--noise-aug", type=float,
                   help="s2l-train --noise-aug for the networks (Gaussian noise of up to this "
                   "standard deviation added to 15 %% of the training crops; runs are named "
                   "..._naX)")
    p.add_argument("--gain-aug", type=float,
                   help="s2l-train --gain-aug for the networks (half the training crops "
                   "multiplied by a factor from [1/G, G]; runs are named ..._gnG)")
    p.add_argument("--clean-strokes", nargs="?", const="on", choices=("on", "auto"),
                   metavar="WHEN",
                   help="s2l-train --clean-strokes WHEN for the networks but full (foreground "
                   "scribble pixels coloured like the background left out; on, the flag "
                   "alone: runs are named ..._cs; auto: ..._csa)")
    p.add_argument("--encoder-weights",
                   help="s2l-train --encoder-weights for the networks (e.g. self: pretrained on "
                   "the training images, cached; runs are named ..._wself)")
    p.add_argument("--pretrain-steps", type=int,
                   help="s2l-train --pretrain-steps with --encoder-weights self (runs are "
                   "named ..._ptN)")
    p.add_argument("--seeds", help="a count N (seeds 0..N-1; default 1) or a comma list (0,3; 3, is seed 3 alone)")
    p.add_argument("--train-images", type=int, help="train images used (default 40; 0: all)")
    p.add_argument("--val-images", type=int, help="val images scored (default 40; 0: all)")
    p.add_argument("--encoder")
    p.add_argument("--crop", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--samples-per-epoch", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--warmup-epochs", type=int, help="default: half the epochs")
    p.add_argument("--ensemble-every", type=int)
    p.add_argument("--lr", type=float)
    from s2l_tools.data.synth import BACKGROUND_STYLES
    from s2l_tools.training.config import TrainConfig

    p.add_argument("--decoder-lr-mult", type=float,
                   help="the decoder's rate as a multiple of --lr (s2l-train's default "
                   f"{TrainConfig.decoder_lr_mult:g}); another value gets its own budget folder")

    p.add_argument("--background", choices=BACKGROUND_STYLES, default="skeleton",
                   help="synthetic background scribbles on the background's skeleton (the "
                   "paper's), just outside the cells (near) or half of each (mixed); runs are "
                   "named ..._near, ..._mixed")
    p.add_argument("--scribbles", choices=("skeleton", "hand"), default="skeleton",
                   help="synthetic scribbles: the paper's skeleton pieces, or Fiji-like "
                   "hand-drawn strokes (s2l-synth --protocol hand; --background does not apply; "
                   "runs are named ..._hand)")
    p.add_argument("--against", default="s2l", choices=ORDER,
                   help="the method the others are compared with, seed by seed (default s2l)")
    p.add_argument("--grabcut-near", type=int, default=5,
                   help="GC_PR_FGD within this many px of a foreground scribble (0: none)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/s2l_accuracy"),
                   help="datasets, runs and per-run results (kept; finished runs are skipped)")
    p.add_argument("--cached-only", action="store_true",
                   help="train nothing: tables, plot and JSON from the finished runs in --workdir")
    p.add_argument("--rest", action="store_true",
                   help="score every run on the val images --val-images left out (never used "
                        "for a choice) instead; kept as result_rest[_flips].json, the saved "
                        "models are not trained again")
    p.add_argument("--unused-train", metavar="HxW",
                   help="score every run instead on the train split's images of this size "
                        "(e.g. 512x640) that no run trained on or was scored on: a kind of "
                        "image to choose a robustness setting on; kept as "
                        "result_unused_HxW[_flips].json, the saved models are not trained again")
    p.add_argument("--json", type=Path, help="write all results here")
    p.add_argument("--markdown", type=Path, help="write the tables here")
    p.add_argument("--plot", type=Path, help="write the plot here (e.g. docs/benchmarks_accuracy.png)")
    p.add_argument("--threads", type=int,
                   help="torch threads (default: torch's, one per core); on a loaded 2-core "
                        "machine 1 was up to 7x faster, see docs/benchmarks.md")
    p.add_argument("--verbose", action="store_true", help="print fit()'s epoch lines")
    p.add_argument("--gains", type=cli_gains, default=(1.0,), metavar="G[,G...]",
                   help="score the networks averaged over the images brightened by each gain, "
                        "as s2l-predict --gains does (saved models re-scored, not re-trained; "
                        "kept as result[_rest]_gG-G[_flips].json)")
    p.add_argument("--flips", action="store_true",
                   help="score the networks averaged over the four flips, as s2l-predict does "
                        "by default (runs trained without it are re-scored, not re-trained)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    keep_freed_memory()  # as the command-line tools: the same results, faster
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    preset = QUICK if args.quick else DEFAULT
    for k, v in preset.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.warmup_epochs is None:
        args.warmup_epochs = args.epochs // 2
    try:
        ratios = [float(x) for x in str(args.ratios).split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--ratios {args.ratios}: not numbers; give fractions of the "
                         "skeleton, e.g. --ratios 0.1,0.3") from None
    methods = str(args.methods).split(",")
    bad = set(methods) - set(ORDER)
    if bad:
        raise SystemExit(f"--methods: unknown {', '.join(sorted(bad))}")
    seeds = parse_seeds(str(args.seeds))
    modalities = args.modality.split(",")
    budget = {k: getattr(args, k) for k in ("encoder", "crop", "batch_size", "samples_per_epoch",
                                            "epochs", "warmup_epochs", "ensemble_every", "lr")}
    tag = "quick" if args.quick else "e{epochs}_{encoder}_c{crop}_b{batch_size}_s{samples_per_epoch}".format(**budget)
    if budget["lr"] != preset["lr"]:  # another rate must not reuse the cached runs of 1e-3
        tag += f"_lr{budget['lr']:g}"
    from s2l_tools.training.config import TrainConfig

    if args.decoder_lr_mult and args.decoder_lr_mult != TrainConfig.decoder_lr_mult:
        tag += f"_dm{args.decoder_lr_mult:g}"  # nor another decoder rate
    print(f"budget ({tag}): {budget}; train/val images {args.train_images or 'all'}/"
          f"{args.val_images or 'all'}; ratios {ratios}; methods {methods}; seeds {seeds}",
          file=sys.stderr, flush=True)
    results = []
    t_all = time.perf_counter()
    for mod in modalities:
        tr_split, tr_stems, va_split, va_stems = splits(mod, args.train_images, args.val_images)
        base = args.workdir / mod / f"n{len(tr_stems)}_v{len(va_stems)}"
        val = base / "val"
        make_full_set(val, mod, va_split, va_stems)
        rest_stems, rest_name, rest_dir = [], "rest", base / "val_rest"
        if args.rest and args.unused_train:
            raise SystemExit("--rest and --unused-train: give one of them")
        if args.unused_train:
            rest_name = f"unused_{args.unused_train}"
            rest_stems = unused_of(mod, tr_split, args.unused_train, set(tr_stems) | set(va_stems))
            if not rest_stems:
                raise SystemExit(f"--unused-train {args.unused_train}: {mod}'s {tr_split} split "
                                 "has no unused image of that size (HxW, e.g. 512x640; see "
                                 f"{DSB / 'manifest.csv'})")
            rest_dir = base / rest_name
            make_full_set(rest_dir, mod, tr_split, rest_stems)
        elif args.rest:
            rest_stems = rest_of(split_files(mod, va_split, 0), va_stems)
            if va_split == tr_split or not rest_stems:
                raise SystemExit(f"--rest: {mod} has no val images outside the {len(va_stems)} "
                                 "chosen (no val split, or --val-images 0); leave --rest out")
            make_full_set(rest_dir, mod, va_split, rest_stems)

        def rest(run, res, scr, flips, seed):
            """The run's result, or with --rest / --unused-train its score on those images
            (called within this modality's loop only, so ``rest_*`` are this one's)."""
            if not rest_stems:
                return res
            gains = args.gains if res["method"] != "forest" else (1.0,)
            out = score_rest(run, res, data=scr, val=rest_dir, val_stems=rest_stems,
                             flips=flips, seed=seed, name=rest_name + gains_tag(gains),
                             gains=gains)
            print(f"  {rest_name} ({len(rest_stems)} images): IoU {out['iou']:.4f}",
                  file=sys.stderr, flush=True)
            return out

        for seed in seeds:
            todo = [(m, r) for r in ratios for m in methods if m != "full"]
            if "full" in methods:
                todo.append(("full", None))
            for method, ratio in todo:
                bg_tag = "" if args.background == "skeleton" or method == "full" else \
                    f"_{args.background}"
                if args.scribbles == "hand" and method not in ("full",):
                    bg_tag = "_hand"
                crf_tag = f"_crf{args.crf_weight:g}" if args.crf_weight is not None and \
                    method not in ("full", "forest", "grabcut") else ""
                ga_tag = f"_ga{args.grabcut_agreement:g}" if method == "s2lfg" and \
                    args.grabcut_agreement > 0 else ""
                a_tag = "".join(f"_{tag}{value:g}" for _, tag, value in s2l_settings(args, method))
                if args.auto_threshold and method not in ("full", "forest", "grabcut"):
                    a_tag += "_at"
                if getattr(args, "diameter", None) and method != "forest":
                    a_tag += f"_d{args.diameter:g}"
                if getattr(args, "noise_aug", None) and method != "forest":
                    a_tag += f"_na{args.noise_aug:g}"
                if getattr(args, "gain_aug", None) and args.gain_aug != 1 and method != "forest":
                    a_tag += f"_gn{args.gain_aug:g}"
                if getattr(args, "clean_strokes", None) and method not in ("forest", "full"):
                    a_tag += "_cs" if args.clean_strokes == "on" else "_csa"
                if args.encoder_weights and method != "forest":
                    a_tag += f"_w{Path(args.encoder_weights).stem}"
                    if args.pretrain_steps:
                        a_tag += f"_pt{args.pretrain_steps}"
                run = base / tag / f"{method}_r{ratio}_s{seed}{bg_tag}{crf_tag}{ga_tag}{a_tag}"
                flips = args.flips and method != "forest"
                gtag = gains_tag(args.gains) if method != "forest" else ""
                plain = run / ("result_flips.json" if flips else "result.json")
                done = run / (f"result{gtag}_flips.json" if flips else f"result{gtag}.json")
                if gtag and (args.rest or args.unused_train):
                    done = plain  # the gains on those images only (score_rest), not on val
                model_saved = (run / "model" / "model.pt").exists()

                def rescore(src: Path, how: str, was: str, **kw) -> None:
                    """``done`` from the saved model, with ``src``'s training time."""
                    res = json.loads(src.read_text())
                    print(f"{mod} {method} ratio {ratio} seed {seed}: re-scored {how} "
                          f"(IoU {res['iou']:.4f} {was}) ...", file=sys.stderr, flush=True)
                    res.update(score_model(run, val, va_stems, train_s=res["train_s"],
                                           load0=loadavg(), **kw))
                    done.write_text(json.dumps(res, indent=2) + "\n")

                if gtag and not done.exists() and not args.cached_only:
                    if not (plain.exists() and model_saved):
                        raise SystemExit(f"--gains: {run} is not trained yet; run the same "
                                         "command without --gains first")
                    rescore(plain, f"with gains {args.gains}", "without", flips=flips,
                            gains=args.gains, pred_name="pred" + gtag)
                unflipped, flipped = run / "result.json", run / "result_flips.json"
                if (not flips and not gtag and not done.exists() and flipped.exists()
                        and model_saved and not args.cached_only):
                    rescore(flipped, "without flips", "with", flips=False)
                if (flips and not done.exists() and unflipped.exists()
                        and model_saved and not args.cached_only):
                    rescore(unflipped, "with flips", "without", flips=True)
                scr = base / f"scribbles_r{ratio}_s{seed}{bg_tag}"
                if done.exists():
                    res = json.loads(done.read_text())
                    print(f"[cached] {mod} {method} ratio {ratio} seed {seed}: IoU {res['iou']:.4f}",
                          file=sys.stderr, flush=True)
                    results.append(rest(run, res, scr, flips, seed))
                    continue
                if args.cached_only:
                    print(f"[not run] {mod} {method} ratio {ratio} seed {seed}", file=sys.stderr)
                    continue
                extra = {}
                if method == "full":
                    data = base / "full"
                    make_full_set(data, mod, tr_split, tr_stems)
                    fit_method = "full"
                else:
                    make_train_set(scr, mod, tr_split, tr_stems, ratio=ratio, seed=seed,
                                   background=args.background, protocol=args.scribbles)
                    data, fit_method = scr, method
                    if method == "grabcut":
                        data = base / f"grabcut_r{ratio}_s{seed}{bg_tag}_near{args.grabcut_near}"
                        extra = make_grabcut_set(data, scr, tr_stems, near=args.grabcut_near)
                        extra["proposal_scores_train"] = score_proposals(data, scr)
                        fit_method = "full"
                print(f"{mod} {method} ratio {ratio} seed {seed} ... (load {loadavg()})",
                      file=sys.stderr, flush=True)
                if method == "forest":
                    res = forest_and_score(run, data, val, va_stems, seed)
                else:
                    res = train_and_score(run, data, fit_method, val, va_stems, args, seed)
                res.update(extra, modality=mod, method=method, ratio=ratio, seed=seed,
                           budget=budget, n_train=len(tr_stems),
                           background="skeleton" if method == "full" else args.background,
                           scribbles="skeleton" if method == "full" else args.scribbles)
                done.write_text(json.dumps(res, indent=2) + "\n")
                print(f"  IoU {res['iou']:.4f} mDice {res['mdice']:.4f} F1 {res['f1_50']:.3f} "
                      f"(train {res['train_s']:.0f} s, predict {res['predict_s']:.0f} s, "
                      f"load {res['load_end']})", file=sys.stderr, flush=True)
                results.append(rest(run, res, scr, flips, seed))
    agg = aggregate(results)
    pairs = paired(results, against=args.against)
    scored_on = ("the val images --val-images left out" if args.rest else
                 f"the unused {args.unused_train} train images" if args.unused_train else
                 "the val images")
    md = markdown(agg, modalities, ratios, methods, scored_on) + paired_markdown(pairs, args.against)
    n_tr = {r["modality"]: r["n_train"] for r in results}
    n_va = {r["modality"]: r["n_val"] for r in results}
    header = (f"budget: {budget}; train images {n_tr}, val images {n_va}; "
              f"seeds {seeds}; wall {time.perf_counter() - t_all:.0f} s")
    print(header)
    print(md)
    if args.plot:
        plot(agg, modalities, ratios, methods, args.plot,
             f"s2l-tools accuracy.py ({'--quick' if args.quick else tag}); {args.encoder}, "
             f"{args.epochs} epochs", pairs=pairs)
    if args.markdown:
        args.markdown.write_text(header + "\n" + md + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"budget": budget, "results": results,
                                         "paired": pairs,
                                         "command": " ".join(sys.argv)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

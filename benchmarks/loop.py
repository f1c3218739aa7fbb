"""The scribble loop, simulated on DSB-fluo: suggested strokes vs random ones (not a test).

    .venv/bin/python benchmarks/loop.py --workdir /tmp/s2l-loop
    .venv/bin/python benchmarks/loop.py --train-images 40 --val-images 40 --strokes 40
    .venv/bin/python benchmarks/loop.py --preset laptop --train-images 40 --val-images 40 --strokes 40

Round 0: synthetic scribbles on ``--ratio`` of the cells of the train images
(:func:`s2l_tools.data.synth.synthesize_scribbles`, as benchmarks/accuracy.py
draws them; with ``--scribbled-images K`` on K of them only, the way a person
scribbles a handful of images: the others have no scribble file, so they stay out
of the training until a round adds strokes to them) and one training from scratch
(``--epochs``). Then ``--rounds`` rounds in which an "annotator" who knows the full
masks adds ``--strokes`` strokes, in one of these arms (``--arms``):

- ``suggest``: at the best regions of ``s2l-suggest``
  (:func:`s2l_tools.inference.suggest.suggest` on the arm's last run, ranked
  over all images): a region that is mostly cell gets a stroke along the
  skeleton of the unscribbled cell it overlaps most; otherwise a background
  stroke along the skeleton of the region's background (3 px from any cell);
- ``balanced``: the same regions, taken in turn from those the network calls
  cell and those it calls background (each side in score order), so that a
  round's strokes do not all go to one class;
- ``suggest-spread``: the same regions in the order of ``s2l-suggest``'s CSV
  (:func:`s2l_tools.inference.suggest.draw_order`): every image's best first, then
  every image's second best, and so on (ranked by score alone, a round's 40 strokes
  went to a few images, random ones to ~20);
- ``random``: at random pixels (images drawn by area): a cell pixel gives that
  cell's skeleton (if it has no stroke yet), a background pixel a background
  stroke within 12 px of it;
- ``suggest-correct`` and ``random-correct``: the same places as ``suggest`` and
  ``random`` (a random pixel's 25-px disk), but an annotator who corrects the
  last run's prediction there (:func:`correcting_stroke`): a background stroke
  over what it wrongly calls cell, right beside the cells, or a stroke in the
  cell it missed; where it made no error, the strokes above;
- ``overcall-correct``: the suggested regions the network calls cell (mean
  probability >= 0.5) first, then the others, each in score order, the
  correcting annotator, and no stroke where the prediction has no error.
- ``interior-correct``: as ``suggest-correct``, with regions found after the band of
  ``INTERIOR_BAND`` px along the prediction's outline is left out of the score (the
  store's doubt there is mostly at cell edges: whole objects it is unsure of remain).
- ``committee-correct``: regions where the network and a random forest trained on the same
  strokes disagree (:func:`committee_regions`), best first, the correcting annotator, and no
  stroke where the prediction has no error: a second opinion that can find the network's
  confident errors, which the store's doubt cannot;
- ``committee-overcall``: the same with only the regions where the network's probability is
  the higher of the two (where it may call background cell);
- ``suggest-paired`` and ``random-paired``: as ``suggest-correct`` and ``random-correct``, by an
  annotator who, with every cell stroke, also draws background around that cell, 2 px
  outside it (:func:`ring_stroke`; the pair counts as two strokes): each round's strokes
  then keep both classes, whichever places are asked for.

Arms with the same annotator draw strokes the same way; only the places differ. Each round
retrains with ``s2l-train --from`` (the arm's last run, the short schedule of
:func:`s2l_tools.training.config.retrain_settings`) and scores the val images
(IoU, as benchmarks/accuracy.py scores them). At the end the suggest arm's
strokes are also trained from scratch with the round-0 budget, for the ratio
"retrained / from scratch". Prints a markdown table; ``--json`` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import DSB, link, loadavg, predict_and_score, splits, write_tiff  # noqa: E402

from s2l_tools import labels as L  # noqa: E402


#: ``interior-correct``: suggested regions with the prediction's outline band left out
#: (:func:`s2l_tools.inference.suggest.score_map`'s ``edge_band``, pixels)
INTERIOR_BAND = 3


@dataclass(frozen=True)
class Arm:
    """Where an arm's annotator draws, and how (the arms of the module docstring)."""

    #: the places: ``"suggest"`` s2l-suggest's regions, ``"committee"`` where a forest
    #: disagrees with the network (:func:`committee_regions`), ``"random"`` random pixels only
    places: str = "suggest"
    #: the suggested regions' order: ``"score"``, ``"balanced"`` (cell and background regions
    #: in turn), ``"cell-first"`` or ``"spread"`` (every image's best region first, then every
    #: image's second, ...: a round's strokes go to many images, as random places do)
    order: str = "score"
    #: the annotator corrects the last run's prediction (:func:`correcting_stroke`)
    correct: bool = False
    #: ... and draws background around every cell it strokes (:func:`ring_stroke`)
    paired: bool = False
    #: a region where the prediction has no error gets no stroke
    errors_only: bool = False
    #: ``committee``: only where the network's probability is the higher
    overcall: bool = False
    #: pixels along the prediction's outline left out of the suggestions' score
    edge_band: int = 0

    @property
    def needs_prediction(self) -> bool:
        return self.places != "random" or self.correct


ARMS = {
    "suggest": Arm(),
    "balanced": Arm(order="balanced"),
    "suggest-spread": Arm(order="spread"),
    "random": Arm(places="random"),
    "suggest-correct": Arm(correct=True),
    "random-correct": Arm(places="random", correct=True),
    "overcall-correct": Arm(order="cell-first", correct=True, errors_only=True),
    "interior-correct": Arm(correct=True, edge_band=INTERIOR_BAND),
    "committee-correct": Arm(places="committee", correct=True, errors_only=True),
    "committee-overcall": Arm(places="committee", correct=True, errors_only=True,
                              overcall=True),
    "suggest-paired": Arm(correct=True, paired=True),
    "random-paired": Arm(places="random", correct=True, paired=True),
}


# ------------------------------------------------------------------------ strokes
def cell_stroke(labels: np.ndarray, cell: int) -> np.ndarray:
    """The skeleton of one cell (its centre pixel when too small for one)."""
    from skimage.morphology import skeletonize

    m = labels == cell
    sk = skeletonize(m)
    if not sk.any():
        yy, xx = np.nonzero(m)
        k = np.argmin((yy - yy.mean()) ** 2 + (xx - xx.mean()) ** 2)
        sk = np.zeros_like(m)
        sk[yy[k], xx[k]] = True
    return sk


def background_stroke(labels: np.ndarray, where: np.ndarray) -> np.ndarray | None:
    """The skeleton of the background in ``where``, 3 px from every cell (None: none)."""
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    region = where & (ndi.distance_transform_edt(labels == 0) > 3)
    if not region.any():
        return None
    sk = skeletonize(region)
    if not sk.any():
        sk = region
    return sk


def ring_stroke(labels: np.ndarray, cell: int, gap: int = 2) -> np.ndarray:
    """A background stroke right beside one cell: its outline ``gap`` px outside it.

    Only background pixels no nearer to another cell than ``gap`` (a person drawing
    around a cell does not draw over its neighbour).
    """
    from scipy import ndimage as ndi

    d_this = ndi.distance_transform_edt(labels != cell)
    d_any = ndi.distance_transform_edt(labels == 0)
    return (labels == 0) & (np.abs(d_this - gap) <= 0.5) & (d_any >= gap - 0.5)


def disk_around(shape, y: float, x: float, radius: int = 12) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2


def stroke_at_region(labels, scribble, mask, y, x) -> tuple[np.ndarray, int] | None:
    """The annotator's stroke for a suggested region: (pixels, mask code) or None."""
    cells = labels[mask]
    if (cells > 0).mean() >= 0.3:
        ids, counts = np.unique(cells[cells > 0], return_counts=True)
        for i in ids[np.argsort(-counts)]:
            if not (scribble[labels == i] == L.FOREGROUND).any():
                return cell_stroke(labels, int(i)), L.FOREGROUND
    sk = background_stroke(labels, mask) if mask.any() else None
    if sk is None:
        sk = background_stroke(labels, disk_around(labels.shape, y, x))
    return None if sk is None else (sk, L.BACKGROUND)


def stroke_at_point(labels, scribble, y, x) -> tuple[np.ndarray, int] | None:
    """The annotator's stroke at a random pixel: (pixels, mask code) or None."""
    cell = int(labels[y, x])
    if cell > 0:
        if (scribble[labels == cell] == L.FOREGROUND).any():
            return None
        return cell_stroke(labels, cell), L.FOREGROUND
    sk = background_stroke(labels, disk_around(labels.shape, y, x))
    return None if sk is None else (sk, L.BACKGROUND)


def correcting_stroke(labels, scribble, prob, where, *, min_px: int = 8
                      ) -> tuple[np.ndarray, int] | None:
    """The stroke that corrects the prediction's larger error in ``where`` (None: no error).

    A person shown a region draws over what the network got wrong there: where it
    calls background cell (``prob >= 0.5`` outside every cell) a background stroke
    along that false area, 1 px from the cells, however thin (a halo gives a line
    right beside the cell); where it misses a cell, that cell's skeleton (or, if the
    cell has a stroke already, the skeleton of its missed part). ``min_px``: errors
    smaller than this are not worth a stroke.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    called = prob >= 0.5
    fp = where & called & (ndi.distance_transform_edt(labels == 0) > 1)
    fn = where & ~called & (labels > 0)
    if max(int(fp.sum()), int(fn.sum())) < min_px:
        return None
    if fp.sum() >= fn.sum():
        sk = skeletonize(fp)
        return (sk if sk.any() else fp), L.BACKGROUND
    ids, counts = np.unique(labels[fn], return_counts=True)
    cell = int(ids[np.argmax(counts)])
    if not (scribble[labels == cell] == L.FOREGROUND).any():
        return cell_stroke(labels, cell), L.FOREGROUND
    missed = fn & (labels == cell)
    sk = skeletonize(missed)
    return (sk if sk.any() else missed), L.FOREGROUND


def committee_regions(results, scr: dict, stems: list[str], n: int, *,
                      overcall: bool = False) -> list:
    """Regions where the network and a forest on the same strokes disagree, best first.

    A second opinion finds the network's *confident* errors (a halo it calls cell
    with certainty), which the EMA store's doubt does not: a random forest on filter
    features (:func:`s2l_tools.classic.forest.fit_forest`, as the fast start) is
    trained on the round's scribbles; a pixel's score is ``|p_network - p_forest|``
    (0 on and 2 px around the strokes), cut into regions by ``find_regions``;
    ``overcall``: only where the network's is the higher, ``p_network - p_forest``
    (where it may call background cell).
    """
    from scipy import ndimage as ndi

    from s2l_tools.classic.forest import fit_forest, forest_probability
    from s2l_tools.inference.suggest import find_regions

    items = {item.stem: item for item in results}
    forest = fit_forest([items[s].image for s in stems], [scr[s] for s in stems], seed=0)
    ranked = []
    for s in stems:
        item = items[s]
        score = item.prob - forest_probability(forest, item.image)
        score = np.clip(score, 0.0, 1.0) if overcall else np.abs(score)
        score[ndi.binary_dilation(scr[s] > 0, iterations=2)] = 0.0
        ranked += [(r.score, s, r) for r in find_regions(score, top_k=n, min_area=16)]
    return sorted(ranked, key=lambda e: -e[0])


def spread(ranked: list[tuple]) -> list[tuple]:
    """``(score, stem, region)`` best first, in ``s2l-suggest``'s CSV order
    (:func:`s2l_tools.inference.suggest.draw_order`): every image's best, then every
    image's second, ..."""
    from s2l_tools.inference.suggest import draw_order

    rows = draw_order([{"image": e[1], "score": e[0], "entry": e} for e in ranked])
    return [r["entry"] for r in rows]


def add_strokes(arm: str, data: Path, stems: list[str], truth: dict, n: int, *, run: Path,
                rng: np.random.Generator) -> tuple[int, float]:
    """Add ``n`` strokes to ``data/scribbles`` the way of ``ARMS[arm]``; (added, seconds
    suggesting)."""
    import tifffile

    how = ARMS[arm]
    # an image without strokes yet (--scribbled-images) has no scribble file
    scr = {s: (tifffile.imread(f) if (f := data / "scribbles" / f"{s}.tif").is_file()
               else np.zeros(truth[s].shape, np.uint8)) for s in stems}
    added, t_suggest, ranked = 0, 0.0, []

    def paint(stem, stroke):
        nonlocal added
        pixels, code = stroke
        scr[stem][pixels & (scr[stem] == 0)] = code
        added += 1
        if how.paired and code == L.FOREGROUND:  # and the background right beside that cell
            ids, counts = np.unique(truth[stem][pixels & (truth[stem] > 0)],
                                    return_counts=True)
            if ids.size:
                ring = ring_stroke(truth[stem], int(ids[np.argmax(counts)]))
                scr[stem][ring & (scr[stem] == 0)] = L.BACKGROUND
                added += 1

    if how.needs_prediction:  # the suggestions, and the prediction they were made from
        from s2l_tools.inference.suggest import suggest

        t = time.perf_counter()
        results = suggest(run, data, top_k=n, min_area=16, edge_band=how.edge_band,
                          device="cpu")
        t_suggest = time.perf_counter() - t
        prob = {item.stem: item.prob for item in results}
    if how.places == "random":
        t_suggest = 0.0  # it only needed the prediction
    elif how.places == "committee":
        t = time.perf_counter()
        ranked = committee_regions(results, scr, stems, n, overcall=how.overcall)
        t_suggest += time.perf_counter() - t
    else:
        ranked = sorted(((r.score, item.stem, r) for item in results for r in item.regions),
                        key=lambda e: -e[0])
        if how.order == "spread":
            ranked = spread(ranked)
        elif how.order != "score":
            # the regions the network calls cell and those it calls background, each in
            # score order (a region's side: its mean probability); balanced takes them in
            # turn, cell-first the cell side first (where it over-calls, if anywhere)
            cell, back = [], []
            for e in ranked:
                (cell if prob[e[1]][e[2].mask].mean() >= 0.5 else back).append(e)
            if how.order == "balanced":
                ranked = [e for pair in zip(cell, back) for e in pair]
                ranked += cell[len(back):] + back[len(cell):]
            else:
                ranked = cell + back
    for _, stem, r in ranked:
        if added >= n:
            break
        stroke = None
        if how.correct:
            stroke = correcting_stroke(truth[stem], scr[stem], prob[stem], r.mask)
        if stroke is None and not how.errors_only:
            stroke = stroke_at_region(truth[stem], scr[stem], r.mask, r.y, r.x)
        if stroke is not None:
            paint(stem, stroke)
    areas = np.array([truth[s].size for s in stems], float)
    tries = 0
    while added < n and tries < 100 * n:  # random arm (and a suggest arm out of regions)
        tries += 1
        stem = stems[rng.choice(len(stems), p=areas / areas.sum())]
        y, x = (int(rng.integers(0, d)) for d in truth[stem].shape)
        stroke = None
        if how.correct:  # the same annotator as suggest-correct, at a random 25-px disk
            stroke = correcting_stroke(truth[stem], scr[stem], prob[stem],
                                       disk_around(truth[stem].shape, y, x))
        if stroke is None:
            stroke = stroke_at_point(truth[stem], scr[stem], y, x)
        if stroke is not None:
            paint(stem, stroke)
    for s in stems:
        if scr[s].any():  # an image still without strokes stays out of the training
            write_tiff(data / "scribbles" / f"{s}.tif", scr[s])
    return added, t_suggest


# ----------------------------------------------------------------------- training
def base_config(args, data: Path, out: Path):
    """Round 0's (and the from-scratch run's) settings: the budget flags, or
    ``s2l-train --preset NAME``'s settings with ``--preset``."""
    from s2l_tools.training.config import PRESETS, TrainConfig

    if args.preset:
        budget = dict(PRESETS[args.preset])
    else:
        budget = dict(encoder=args.encoder, epochs=args.epochs, warmup_epochs=args.epochs // 2,
                      ensemble_every=args.ensemble_every, crop=args.crop,
                      batch_size=args.batch_size, samples_per_epoch=args.samples_per_epoch,
                      lr=args.lr, restart_epochs=args.epochs)
    # the tile is s2l-train's (1024): a round's ensemble pass took 1.75x as long with 512
    # tiles on these images (overlapping tiles), which the rounds before 2026-12-02 timed
    return TrainConfig(data=str(data), out=str(out), method="s2l", seed=args.seed,
                       device="cpu", checkpoint_every=budget["epochs"], panel_images=0,
                       holdout_strokes=0.0, threads=args.threads, **budget)


def retrain_config(args, data: Path, out: Path, prev: Path):
    from s2l_tools.training import rundir
    from s2l_tools.training.config import retrain_settings

    cfg = retrain_settings(rundir.read_config(prev))
    if args.retrain_lr is not None:
        cfg.lr = args.retrain_lr
    if args.retrain_epochs is not None:
        cfg.epochs = cfg.restart_epochs = cfg.checkpoint_every = args.retrain_epochs
    if args.retrain_ensemble_every is not None:
        cfg.ensemble_every = args.retrain_ensemble_every
    if args.retrain_warmup_epochs is not None:
        cfg.warmup_epochs = args.retrain_warmup_epochs
    cfg.holdout_strokes = 0.0  # every stroke, as in round 0
    cfg.threads = args.threads  # fit() picks its own count unless told
    cfg.data, cfg.out, cfg.from_run = str(data), str(out), str(prev)
    return cfg


def train_and_score(cfg, val: Path, val_stems: list[str], verbose: bool) -> dict:
    from rich.console import Console

    from s2l_tools.inference.predict import predict_image
    from s2l_tools.training.checkpoint import load_model
    from s2l_tools.training.engine import fit

    out = Path(cfg.out)
    if (out / "result.json").is_file():
        return json.loads((out / "result.json").read_text())
    if out.exists():
        shutil.rmtree(out)
    load0 = loadavg()
    t = time.perf_counter()
    fit(cfg, console=Console(stderr=True, quiet=not verbose))
    train_s = time.perf_counter() - t
    model, meta = load_model(out)
    res = predict_and_score(out, val, val_stems,
                            lambda im: predict_image(model, im, meta, device="cpu")[0],
                            train_s=train_s, load0=load0)
    (out / "result.json").write_text(json.dumps(res))
    return res


def count_strokes(data: Path, stems: list[str]) -> int:
    """Strokes of the start: the connected pieces of each class in the scribble masks
    (the rounds count the strokes they add)."""
    import tifffile
    from scipy import ndimage as ndi

    n = 0
    for s in stems:
        if not (f := data / "scribbles" / f"{s}.tif").is_file():
            continue  # not scribbled yet (--scribbled-images)
        m = tifffile.imread(f)
        for code in (L.BACKGROUND, L.FOREGROUND):
            n += ndi.label(m == code, structure=np.ones((3, 3)))[1]
    return n


# ------------------------------------------------------------------------- report
def strokes_to_reach(curve: list[tuple[int, float]], iou: float) -> float | None:
    """Strokes at which a (strokes, IoU) curve first reaches ``iou`` (linear between rounds)."""
    for (s0, i0), (s1, i1) in zip(curve, curve[1:]):
        if i0 >= iou:
            return float(s0)
        if i1 >= iou:
            return s0 + (s1 - s0) * (iou - i0) / (i1 - i0)
    return float(curve[0][0]) if curve and curve[0][1] >= iou else None


def markdown(rows: list[dict], scratch: dict | None) -> str:
    lines = ["| round | arm | strokes | val IoU | retrain s | suggest s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['round']} | {r['arm']} | {r['strokes']} | {r['iou']:.3f} | "
                     f"{r['train_s']:.0f} | {r.get('suggest_s', 0):.0f} |")
    if scratch:
        lines.append(f"| {scratch['round']} | suggest, from scratch | {scratch['strokes']} | "
                     f"{scratch['iou']:.3f} | {scratch['train_s']:.0f} | |")
    return "\n".join(lines)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/s2l-loop"))
    p.add_argument("--modality", default="fluo")
    p.add_argument("--train-images", type=int, default=8)
    p.add_argument("--val-images", type=int, default=8)
    p.add_argument("--ratio", type=float, default=0.1, help="share of cells scribbled at start")
    p.add_argument("--scribbled-images", type=int, default=0, metavar="K",
                   help="round 0 scribbles only K of the train images (a seeded choice; "
                        "0, the default: all); the others join the training when a round "
                        "adds strokes to them")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--strokes", type=int, default=16, help="strokes added per round")
    p.add_argument("--arms", default="suggest,random")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--samples-per-epoch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=12, help="round 0 and the from-scratch run")
    p.add_argument("--ensemble-every", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", choices=("laptop", "paper"),
                   help="round 0 and the from-scratch run with s2l-train --preset's settings "
                        "(fast start, CRF; the budget flags above are then ignored)")
    p.add_argument("--no-scratch", action="store_true", help="skip the from-scratch run")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--retrain-lr", type=float,
                   help="the --from rounds' lr (default: s2l-train --from's)")
    p.add_argument("--retrain-epochs", type=int,
                   help="the --from rounds' epochs (default: s2l-train --from's; the cosine "
                        "cycle and the checkpoint follow)")
    p.add_argument("--retrain-warmup-epochs", type=int,
                   help="the --from rounds' warm-up epochs (default: s2l-train --from's)")
    p.add_argument("--retrain-ensemble-every", type=int,
                   help="the --from rounds' ensemble interval (default: s2l-train --from's)")
    p.add_argument("--json", type=Path)
    p.add_argument("--verbose", action="store_true")
    return p


def main(argv=None) -> int:
    from s2l_tools.data.synth import image_seed, synthesize_scribbles
    from s2l_tools.errors import S2LWarning
    from s2l_tools.io.images import read_labels

    args = get_parser().parse_args(argv)
    if args.scribbled_images < 0:
        raise SystemExit("loop.py: --scribbled-images takes 0 (all) or a number of images")
    unknown = sorted({a for a in args.arms.split(",") if a} - set(ARMS))
    if unknown:
        raise SystemExit(f"loop.py: unknown --arms {','.join(unknown)}; choose from "
                         f"{','.join(ARMS)}")
    warnings.simplefilter("ignore", S2LWarning)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    train_split, stems, val_split, val_stems = splits(args.modality, args.train_images,
                                                      args.val_images)
    src = DSB / args.modality
    val = args.workdir / "val"
    for s in val_stems:
        link(src / val_split / "images" / f"{s}.png", val / "images" / f"{s}.png")
        link(src / val_split / "labels" / f"{s}.tif", val / "masks" / f"{s}.tif")
    truth = {s: read_labels(src / train_split / "labels" / f"{s}.tif") for s in stems}

    # round 0's scribbled images: all, or a seeded choice of --scribbled-images of them
    first = stems
    if 0 < args.scribbled_images < len(stems):
        pick = np.random.default_rng([args.seed, 11]).permutation(len(stems))
        first = [stems[i] for i in sorted(pick[:args.scribbled_images])]

    def dataset(folder: Path, scribbles_from: Path | None):
        for s in stems:
            link(src / train_split / "images" / f"{s}.png", folder / "images" / f"{s}.png")
        if not (folder / "scribbles").is_dir():
            if scribbles_from is not None:
                shutil.copytree(scribbles_from / "scribbles", folder / "scribbles")
            else:
                for s in first:
                    write_tiff(folder / "scribbles" / f"{s}.tif",
                               synthesize_scribbles(truth[s], ratio=args.ratio,
                                                    seed=image_seed(args.seed, s)))
        return folder

    rows = []
    data0 = dataset(args.workdir / "round0" / "data", None)
    r0 = train_and_score(base_config(args, data0, args.workdir / "round0" / "run"), val,
                         val_stems, args.verbose)
    n0 = count_strokes(data0, stems)
    rows.append({"round": 0, "arm": "start", "strokes": n0, **r0})
    print(f"round 0: {n0} strokes, IoU {r0['iou']:.3f} ({r0['train_s']:.0f} s)", flush=True)
    arms = [a for a in args.arms.split(",") if a]
    for arm in arms:
        prev_data, prev_run = data0, args.workdir / "round0" / "run"
        total = n0
        rng = np.random.default_rng([args.seed, 7])
        for rnd in range(1, args.rounds + 1):
            base = args.workdir / arm / f"round{rnd}"
            data = base / "data"
            t_sug = 0.0
            if not (data / "scribbles").is_dir() or not (base / "added.json").is_file():
                shutil.rmtree(data, ignore_errors=True)
                dataset(data, prev_data)
                added, t_sug = add_strokes(arm, data, stems, truth, args.strokes,
                                           run=prev_run, rng=rng)
                (base / "added.json").write_text(json.dumps({"added": added,
                                                             "suggest_s": t_sug}))
            info = json.loads((base / "added.json").read_text())
            res = train_and_score(retrain_config(args, data, base / "run", prev_run), val,
                                  val_stems, args.verbose)
            total += info["added"]
            row = {"round": rnd, "arm": arm, "strokes": total,
                   "added": info["added"], "suggest_s": info["suggest_s"], **res}
            rows.append(row)
            print(f"{arm} round {rnd}: {row['strokes']} strokes (+{info['added']}), IoU "
                  f"{res['iou']:.3f}, retrain {res['train_s']:.0f} s, suggest "
                  f"{info['suggest_s']:.0f} s", flush=True)
            prev_data, prev_run = data, base / "run"
    scratch = None
    if "suggest" in arms and not args.no_scratch:
        last = args.workdir / "suggest" / f"round{args.rounds}"
        res = train_and_score(base_config(args, last / "data", last / "scratch"), val,
                              val_stems, args.verbose)
        final = next(r for r in rows if r["arm"] == "suggest" and r["round"] == args.rounds)
        scratch = {"round": args.rounds, "strokes": final["strokes"], **res}
        print(f"suggest strokes of round {args.rounds} from scratch: IoU {res['iou']:.3f} "
              f"({res['train_s']:.0f} s)", flush=True)
    print(markdown(rows, scratch))
    curves = {arm: [(rows[0]["strokes"], rows[0]["iou"])]
              + [(r["strokes"], r["iou"]) for r in rows if r["arm"] == arm] for arm in arms}
    summary = {}
    added = (lambda s: None if s is None else s - rows[0]["strokes"])
    for sug, rnd in (("suggest", "random"), ("suggest-spread", "random"),
                     ("suggest-correct", "random-correct"),
                     ("overcall-correct", "random-correct"),
                     ("interior-correct", "random-correct"),
                     ("committee-correct", "random-correct"),
                     ("committee-overcall", "random-correct"),
                     ("suggest-paired", "random-paired")):
        if {sug, rnd} <= set(arms):  # the same annotator: only the places differ
            target = curves[rnd][-1][1]
            s_sug = strokes_to_reach(curves[sug], target)
            s_rnd = strokes_to_reach(curves[rnd], target)
            summary.setdefault("target_iou", {})[rnd] = target
            summary.setdefault("strokes_added_to_reach", {}).update(
                {sug: added(s_sug), rnd: added(s_rnd)})
            print(f"strokes added to reach the {rnd} arm's final IoU {target:.3f}: {sug} "
                  f"{added(s_sug)}, {rnd} {added(s_rnd)}")
    if scratch:
        final = next(r for r in rows if r["arm"] == "suggest" and r["round"] == args.rounds)
        summary["retrained_over_scratch"] = final["iou"] / scratch["iou"]
        print(f"retrained / from scratch (suggest, round {args.rounds}): "
              f"{summary['retrained_over_scratch']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows, "scratch": scratch,
                                         "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

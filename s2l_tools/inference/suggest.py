"""Where new strokes would help most: regions ranked from a run's EMA store and prediction.

Scribble2Label's EMA store knows where the network is not consistent. For an
image the run trained on, a pixel deserves a stroke where the store's
foreground probability ``y`` is below the consistency threshold tau (no
pseudo-label there, :func:`score_map`) or where the current prediction ``p``
disagrees with the store; for an image without scribbles (not in the store),
where the prediction is uncertain (``p`` near 0.5), unless its mask covers far more
of it than the network called cell on any training image (:func:`unusual_image`: a
kind of image the strokes did not cover, where the network tends to be confidently
wrong, so it is not uncertain there): then the pixels it calls cell
(:func:`called_map`), and its regions come first in the order to draw; likewise where
the network outlined far more cells than it called
(:func:`s2l_tools.inference.postprocess.under_called`, the images ``s2l-predict`` warns
its masks may miss cells): then the cells it outlined and did not call
(:func:`missed_map`).
:func:`suggest` turns the score map into connected regions, ranked by their summed
score, and :func:`write_suggestions` writes what a person looks at:

    OUT/<stem>_suggestions.zip   the top regions as Fiji ROIs: group
                                 GROUP_SUGGESTION (3), magenta, names suggest_01...
                                 (s2l-scribbles leaves them out)
    OUT/<stem>_suggestions.png   image, prediction outline (yellow), regions (magenta)
    OUT/suggestions.csv          every region, in the order to draw (:func:`draw_order`:
                                 every image's best region, then every image's second,
                                 ...): rank, image, region, area, score, y, x
                                 (centroid), source (store / prediction / unusual /
                                 undercalled)

Prediction goes through :func:`s2l_tools.inference.predict.predict_probability`,
as ``s2l-predict``'s does.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s2l_tools import labels as L
from s2l_tools.errors import S2LError

__all__ = ["Region", "ImageSuggestions", "SUGGESTION_COLOR", "score_map", "called_map",
           "missed_map", "unusual_image", "find_regions", "suggest", "draw_order",
           "write_suggestions", "suggestion_files"]

#: Stroke colour of the suggestion ROIs (magenta: neither scribble colour, yellow/cyan).
SUGGESTION_COLOR = "#ff00ff"
#: Name of the ranked table in OUT.
CSV_NAME = "suggestions.csv"
#: The sources whose regions come first in :func:`draw_order`.
_FIRST = ("unusual", "undercalled")


@dataclass
class Region:
    """One suggested region of an image."""

    name: str            # suggest_01, ... (by rank within the image)
    area: int            # pixels
    score: float         # summed pixel score
    y: float             # centroid (row)
    x: float             # centroid (column)
    mask: np.ndarray     # (H, W) bool


@dataclass
class ImageSuggestions:
    """The suggestions of one image, and what the overview shows."""

    stem: str
    image: np.ndarray            # (C, H, W) float32, normalised
    prob: np.ndarray             # (H, W) float32, current prediction
    source: str                  # 'store' (EMA store and prediction), 'prediction',
                                 # 'unusual' (the pixels called cell: unusual_image) or
                                 # 'undercalled' (cells outlined, not called: missed_map)
    regions: list[Region] = field(default_factory=list)


def score_map(prob: np.ndarray, ema: np.ndarray | None = None,
              scribble: np.ndarray | None = None, *, threshold: float = 0.8,
              edge_band: int = 0) -> np.ndarray:
    """Per-pixel need for a stroke, in [0, 1].

    Parameters
    ----------
    prob : (H, W) float ndarray
        Current foreground probability.
    ema : (H, W) float ndarray, optional
        The EMA store's map of this image (None: not in the store).
    scribble : (H, W) uint8 ndarray, optional
        Its scribbles: scribbled pixels (and 2 px around) score 0.
    threshold : float
        The run's consistency threshold tau.
    edge_band : int
        Pixels within this distance (pixels) of the prediction's outline (``p = 0.5``)
        score 0, so that the regions are whole objects the network is unsure of, not
        the thin band along every boundary; 0 keeps the band.

    Returns
    -------
    score : (H, W) float32 ndarray
        With ``ema``: ``max(u, |p - y|)``, ``u = clip((tau - max(y, 1 - y)) / (tau - 0.5), 0, 1)``
        (1 where the store is 0.5, 0 from tau on: where pseudo-labels act); without:
        ``1 - |2p - 1|``.
    """
    from scipy import ndimage as ndi

    p = np.asarray(prob, dtype=np.float32)
    if ema is None:
        s = 1.0 - np.abs(2.0 * p - 1.0)
    else:
        y = np.asarray(ema, dtype=np.float32)
        conf = np.maximum(y, 1.0 - y)
        s = np.maximum(np.clip((threshold - conf) / (threshold - 0.5), 0.0, 1.0),
                       np.abs(p - y))
    if edge_band > 0:
        called = p >= 0.5
        band = (ndi.binary_dilation(called, iterations=edge_band)
                & ndi.binary_dilation(~called, iterations=edge_band))
        s = np.where(band, 0.0, s)
    if scribble is not None and (scribble > 0).any():
        s = np.where(ndi.binary_dilation(scribble > 0, iterations=2), 0.0, s)
    return s.astype(np.float32)


def unusual_image(prob: np.ndarray, threshold: float, train_share_max) -> bool:
    """Whether the share of ``prob``'s pixels above ``threshold`` is over the model's
    :func:`s2l_tools.inference.onnx.unusual_limit` (the image ``s2l-predict`` warns about).

    >>> p = np.zeros((10, 10)); p[:6] = 0.9  # 60 % called cell
    >>> unusual_image(p, 0.5, 0.3), unusual_image(p, 0.5, 0.5), unusual_image(p, 0.5, None)
    (True, False, False)
    """
    from s2l_tools.inference.onnx import unusual_limit

    limit = unusual_limit(train_share_max)
    return limit is not None and float(np.mean(np.asarray(prob) > threshold)) > limit


def called_map(prob: np.ndarray, scribble: np.ndarray | None = None, *,
               threshold: float = 0.5) -> np.ndarray:
    """Per-pixel need for a stroke on an :func:`unusual_image`: 1 where the network calls
    cell (``prob > threshold``), else 0; scribbled pixels (and 2 px around) score 0.

    A network that calls much of an image cell, far more than on any of its training
    images, is most often calling a background it never saw cell; a person should look at
    what it calls cell there and draw strokes of what it really is.
    """
    return _off_strokes(np.asarray(prob) > threshold, scribble)


def missed_map(prob: np.ndarray, scribble: np.ndarray | None = None, *,
               threshold: float = 0.5) -> np.ndarray:
    """Per-pixel need for a stroke on an image where the network outlined far more cells
    than it called (:func:`s2l_tools.inference.postprocess.under_called`): 1 on the cells
    it outlined and did not call (:func:`~s2l_tools.inference.postprocess.seen_not_called`),
    else 0; scribbled pixels (and 2 px around) score 0. Strokes through those cells teach
    the network the cells it misses.
    """
    from s2l_tools.inference.postprocess import seen_not_called

    return _off_strokes(seen_not_called(prob, threshold), scribble)


def _off_strokes(mask: np.ndarray, scribble: np.ndarray | None) -> np.ndarray:
    """``mask`` as 1/0 floats, 0 on scribbled pixels and 2 px around them."""
    from scipy import ndimage as ndi

    s = np.asarray(mask, dtype=np.float32)
    if scribble is not None and (scribble > 0).any():
        s = np.where(ndi.binary_dilation(scribble > 0, iterations=2), 0.0, s)
    return s.astype(np.float32)


def find_regions(score: np.ndarray, *, top_k: int = 5, min_area: int = 16,
                 cutoff: float = 0.5, sigma: float = 2.0, window: int = 32) -> list[Region]:
    """The ``top_k`` stroke-sized regions where the smoothed ``score`` passes ``cutoff``.

    Parameters
    ----------
    score : (H, W) float ndarray
        From :func:`score_map`.
    top_k : int
    min_area : int
        Smaller regions are dropped (pixels).
    cutoff : float
    sigma : float
        Gaussian smoothing before the cut, so that regions are blobs a stroke can
        cover, not speckle.
    window : int
        Size of a region at most (pixels, square): a network unsure of a whole
        image still gets places for a few strokes, not one region the size of it.

    Returns
    -------
    regions : list of Region
        Best (largest summed score) first, named ``suggest_01``...

    Notes
    -----
    Greedy: the ``window`` x ``window`` box holding the most score above the
    cutoff is found; its largest connected piece of above-cutoff pixels (holes
    filled) is a region, and its pixels are taken out before the next box.
    Regions never overlap.
    """
    from scipy import ndimage as ndi

    s = np.asarray(score, dtype=np.float32)
    smooth = ndi.gaussian_filter(s, sigma) if sigma else s
    hot = smooth > cutoff
    half = max(1, int(window)) // 2
    found = []
    while len(found) < top_k and hot.any():
        density = ndi.uniform_filter(np.where(hot, s, 0.0).astype(np.float32),
                                     size=2 * half + 1, mode="constant")
        y, x = np.unravel_index(int(np.argmax(density)), density.shape)
        box = (slice(max(0, y - half), y + half + 1), slice(max(0, x - half), x + half + 1))
        comps, n = ndi.label(hot[box])
        if n == 0:  # float noise: the densest box holds nothing
            break
        sizes = ndi.sum_labels(np.ones_like(comps), comps, np.arange(1, n + 1))
        piece = np.zeros_like(hot)
        piece[box] = ndi.binary_fill_holes(comps == 1 + int(np.argmax(sizes)))
        hot &= ~piece
        area = int(piece.sum())
        if area >= min_area:
            yy, xx = np.nonzero(piece)
            found.append((float(s[piece].sum()), area, float(yy.mean()), float(xx.mean()),
                          piece))
    found.sort(key=lambda f: -f[0])
    return [Region(f"suggest_{rank:02d}", area, total, y, x, mask)
            for rank, (total, area, y, x, mask) in enumerate(found, 1)]


def _run_store(run: Path, ckpt: dict, ckpt_path: Path):
    """(record, EmaStore) of a run; S2LError when it keeps no EMA store."""
    from s2l_tools.training import rundir
    from s2l_tools.training.ema import EmaStore

    method = ckpt.get("config", {}).get("method")
    record = ckpt.get("inputs") or rundir.read_inputs(run)
    if method != "s2l":
        raise S2LError(f"{run}: trained with --method {method}, which keeps no EMA store; "
                       "suggestions need a run of --method s2l")
    if record is None:
        raise S2LError(f"{run}: no record of its training images ({rundir.INPUTS}; a run of "
                       "an older s2l-tools); train it again or --from it once")
    store = EmaStore([tuple(e["shape"]) for e in record["images"]], dtype="float32")
    rundir.load_store(store, ckpt_path, ckpt)
    if not any(store.initialized(i) for i in range(len(store))):
        raise S2LError(f"{run}: the EMA store is empty (the run stopped before its first "
                       "ensemble); train it longer")
    return record, store


def suggest(run, data=None, *, top_k: int = 5, min_area: int = 16, edge_band: int = 0,
            device: str = "auto", progress=None) -> list[ImageSuggestions]:
    """Suggested regions for new strokes in every image of ``data``.

    Parameters
    ----------
    run : path-like
        A run folder of ``s2l-train --method s2l`` (its latest checkpoint and model).
    data : path-like, optional
        A dataset folder (images/, scribbles/); default: the one the run trained on.
        Images the run trained on (same content) are scored from the store and
        the prediction, the others from the prediction alone.
    top_k, min_area
        See :func:`find_regions`.
    edge_band : int
        See :func:`score_map`.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    progress : callable, optional
        Called with each image's stem when it is done.

    Returns
    -------
    results : list of ImageSuggestions
        One per image of ``data``, in dataset order.
    """
    from s2l_tools.data.dataset import open_dataset
    from s2l_tools.device import select_device
    from s2l_tools.inference.postprocess import resize_image, under_called
    from s2l_tools.inference.predict import predict_probability
    from s2l_tools.io.images import read_image, read_labels
    from s2l_tools.training import rundir
    from s2l_tools.training.checkpoint import load_checkpoint, load_model
    from s2l_tools.training.data import array_digest

    run = Path(run)
    ckpt_path = rundir.latest_checkpoint(run) if run.is_dir() else None
    if ckpt_path is None:
        raise S2LError(f"{run}: no {rundir.CHECKPOINT} there; give the run folder of an "
                       "s2l-train run")
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt.get("config", {})
    record, store = _run_store(run, ckpt, ckpt_path)
    data = Path(data) if data is not None else Path(cfg.get("data") or "")
    if not str(data) or not data.is_dir():
        raise S2LError(f"{data}: no such dataset folder; give DATA (the run's was "
                       f"{cfg.get('data')!r})")
    dev = select_device(device)
    model, meta = load_model(run, device=dev)
    channel = cfg.get("channel")
    tau = float(cfg.get("threshold", 0.8))
    known = {e["stem"]: (j, e) for j, e in enumerate(record["images"])}
    ds = open_dataset(data)
    results = []
    for s in ds.samples:
        if s.image is None:
            continue
        image = read_image(s.image, channel=channel)
        if image.shape[0] != meta.in_channels:
            raise S2LError(f"{s.image}: {image.shape[0]} channel(s), the model in {run} takes "
                           f"{meta.in_channels}; give images like the run's (its --channel: "
                           f"{channel})")
        scribble = read_labels(s.scribbles).astype(np.uint8) if s.scribbles else None
        if scribble is not None and scribble.shape != image.shape[1:]:
            raise S2LError(f"{s.scribbles}: size differs from its image; regenerate it with "
                           "s2l-scribbles")
        hit = known.get(s.stem)
        if hit is not None and not (
                list(image.shape[1:]) == list(hit[1].get("source_shape", hit[1]["shape"]))
                and hit[1]["image"] == array_digest(image)):
            hit = None  # another image under a known name: scored from the prediction
        # an image the run trained on is predicted at the scale it trained it at (one pass)
        prob = predict_probability(model, image, meta, device=dev, batch_size=1,
                                   scale=hit[1].get("scale") if hit is not None else None)
        ema = None
        if hit is not None and store.initialized(hit[0]):
            # a run with --diameter kept the map at the size it trained the image at
            ema = resize_image(store.get(hit[0]), image.shape[1:], order=1)
        if ema is None and unusual_image(prob, meta.threshold, meta.train_share_max):
            source, score = "unusual", called_map(prob, scribble, threshold=meta.threshold)
        elif ema is None and under_called(prob, meta.threshold):
            source, score = "undercalled", missed_map(prob, scribble, threshold=meta.threshold)
        else:
            source = "store" if ema is not None else "prediction"
            score = score_map(prob, ema, scribble, threshold=tau, edge_band=edge_band)
        results.append(ImageSuggestions(s.stem, image, prob, source,
                                        find_regions(score, top_k=top_k, min_area=min_area)))
        if progress:
            progress(s.stem)
    if not results:
        raise S2LError(f"{ds.images_dir}: no images; give DATA with images/")
    return results


def suggestion_files(out, stem: str) -> tuple[Path, Path]:
    """``(RoiSet.zip, overview PNG)`` of image ``stem`` in the output folder ``out``."""
    return Path(out) / f"{stem}_suggestions.zip", Path(out) / f"{stem}_suggestions.png"


def _roi(region: Region):
    from roifile import ImagejRoi

    from s2l_tools.io.roi.outlines import trace_outlines

    from scipy import ndimage as ndi

    loops = trace_outlines(ndi.binary_fill_holes(region.mask))
    loop = max(loops, key=len)  # one connected region, holes filled: its outer boundary
    roi = ImagejRoi.frompoints(loop.astype(np.int32))  # pixel corners: ImageJ fills the mask
    roi.roitype = type(roi.roitype).POLYGON
    roi.name = region.name
    roi.group = L.GROUP_SUGGESTION
    roi.stroke_color = bytes.fromhex("ff" + SUGGESTION_COLOR[1:])  # ARGB
    return roi


def _overview_png(item: ImageSuggestions) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = item.image[0] if item.image.shape[0] == 1 else item.image[:3].transpose(1, 2, 0)
    img = np.clip(img, 0, 1) if img.ndim == 3 else img
    h, w = item.prob.shape
    fig, ax = plt.subplots(figsize=(6, 6 * h / max(w, 1) + 0.4), dpi=100)
    ax.imshow(img, cmap="gray", interpolation="nearest")
    if (item.prob > 0.5).any() and (item.prob <= 0.5).any():
        ax.contour(item.prob, levels=[0.5], colors=["#ffff00"], linewidths=0.8)
    for r in item.regions:
        ax.contour(r.mask.astype(np.float32), levels=[0.5], colors=[SUGGESTION_COLOR],
                   linewidths=1.5)
        ax.text(r.x, r.y, r.name.removeprefix("suggest_"), color=SUGGESTION_COLOR,
                fontsize=9, ha="center", va="center", fontweight="bold")
    stem = item.stem if len(item.stem) <= 24 else item.stem[:21] + "..."
    ax.set_title(f"{stem}: prediction (yellow), {len(item.regions)} suggested "
                 f"region(s) (magenta; from the {item.source})", fontsize=8)
    ax.set_axis_off()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def draw_order(rows: list[dict]) -> list[dict]:
    """The suggested regions in the order a person should draw them.

    Every image's best region first, then every image's second best, and so on;
    within each of these rounds the images go in the order of their best region's
    score. The regions of images of ``source`` 'unusual' (:func:`unusual_image`: a kind
    of image the strokes have not covered, which needs several strokes) or 'undercalled'
    (cells outlined, not called: :func:`missed_map`) come before all the others, in the
    same order among themselves. Ranked by score alone, the best
    regions gather in a few images: in the simulated loop (benchmarks/loop.py, DSB-fluo,
    four seeds of three rounds) the 40 strokes of a round drawn at the top of that
    ranking went to 4-7 images in 11 rounds of 12 (random places: 16-24), and after
    three rounds scored 0.009 IoU below strokes drawn in this order (six seeds, 4 ahead;
    docs/benchmarks.md).

    Parameters
    ----------
    rows : list of dict
        One per region, each with ``'image'`` and ``'score'`` (and ``'source'``).

    Returns
    -------
    rows : list of dict
        The same dicts, reordered.
    """
    first = [r for r in rows if r.get("source") in _FIRST]
    return _tiers(first) + _tiers([r for r in rows if r.get("source") not in _FIRST])


def _tiers(rows: list[dict]) -> list[dict]:
    """Every image's best region, then every image's second best, ... (:func:`draw_order`)."""
    by_image: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: -r["score"]):
        by_image.setdefault(row["image"], []).append(row)
    images = list(by_image.values())  # in the order of each image's best region
    depth = max((len(v) for v in images), default=0)
    return [v[k] for k in range(depth) for v in images if k < len(v)]


def write_suggestions(results: list[ImageSuggestions], out: str | os.PathLike) -> Path:
    """Write the RoiSets, overviews and the ranked CSV (see the module docstring).

    Parameters
    ----------
    results : list of ImageSuggestions
    out : path-like
        Output folder (created). Every file is written atomically.

    Returns
    -------
    table : Path
        ``OUT/suggestions.csv``.
    """
    from s2l_tools.io.atomic import write_bytes_atomic, write_csv_atomic
    from s2l_tools.io.roi import write_roiset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in results:
        zip_path, png_path = suggestion_files(out, item.stem)
        if item.regions:
            write_roiset([_roi(r) for r in item.regions], zip_path)
        else:
            zip_path.unlink(missing_ok=True)  # an earlier run's, now stale
        write_bytes_atomic(png_path, _overview_png(item))
        rows += [dict(image=item.stem, region=r.name, area=r.area, score=round(r.score, 3),
                      y=round(r.y, 1), x=round(r.x, 1), source=item.source)
                 for r in item.regions]
    rows = draw_order(rows)
    table = out / CSV_NAME
    write_csv_atomic(table, ["rank", "image", "region", "area", "score", "y", "x", "source"],
                     ({"rank": rank, **row} for rank, row in enumerate(rows, 1)),
                     lineterminator="\n")
    return table

"""Hand-drawn strokes drawn carelessly: a copy of a stroke folder with slips of the pen.

``s2l-synth --protocol hand`` keeps every foreground stroke inside its cell and
every background stroke more than 2 px from any cell. A person in Fiji is not
that exact: a line through a nucleus often runs past its edge, and a line beside
a cell touches it. This script copies a data folder made by ``s2l-synth
--protocol hand`` (``images/``, ``masks/``, ``rois/``: as ``benchmarks/accuracy.py
--scribbles hand`` writes them) to a new folder whose RoiSet.zip files carry such
slips, converted to ``scribbles/`` as ``s2l-scribbles`` converts them:

- each end of a foreground stroke, with probability ``--p-end``, is carried on
  along the stroke's end segment past the cell's edge by 1 to ``--overshoot`` px
  (a dot gets a random direction);
- each background stroke whose nearest pixel lies within ``--near`` px of a
  cell, with probability ``--p-near``, is moved towards that cell until its
  nearest pixel lies on the cell's outermost pixels or next to them.

It prints how many scribble pixels are then wrong against the masks (masks are
only read to place the slips and to count them). The masks are the truth the
slips are made from, so they are symlinked unchanged::

    .venv/bin/python benchmarks/sloppy_strokes.py \\
        /tmp/acc_b/fluo/n40_v40/scribbles_r0.1_s0_hand \\
        /tmp/acc_sl/fluo/n40_v40/scribbles_r0.1_s0_hand --seed 0

The output folder can then be used by ``benchmarks/accuracy.py --workdir
/tmp/acc_sl ... --scribbles hand`` (a stroke folder that exists is reused; link
``val`` beside it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi


def _labels_at(labels: np.ndarray, mask: np.ndarray) -> int:
    """The cell most of ``mask``'s pixels lie on (0: none)."""
    values = labels[mask]
    values = values[values > 0]
    return int(np.bincount(values).argmax()) if values.size else 0


def _carry_on(end: np.ndarray, direction: np.ndarray, cell: np.ndarray, past: int,
              width: int) -> np.ndarray:
    """From ``end`` (row, col) along ``direction`` until ``past`` px beyond the ``cell`` mask.

    ``past`` 0: the pen of ``width`` px stops inside the cell.
    """
    h, w = cell.shape
    pos = end.astype(float)
    for _ in range(4 * (h + w)):  # half-pixel steps until out of the cell (or the image)
        r, c = int(round(pos[0])), int(round(pos[1]))
        if not (0 <= r < h and 0 <= c < w) or not cell[r, c]:
            break
        pos = pos + 0.5 * direction
    pos = pos + ((past - 0.5) if past else -(1 + (width - 1) / 2)) * direction
    return np.clip(np.round(pos), [0, 0], [h - 1, w - 1]).astype(np.int32)


def sloppy_rois(rois, labels: np.ndarray, rng: np.random.Generator, *, overshoot: int = 3,
                p_end: float = 0.5, near: float = 5.0, p_near: float = 0.5) -> tuple[list, dict]:
    """The hand-drawn ``rois`` with slips of the pen (see the module's docstring).

    Returns the new ROI list and counts of the slips made.
    """
    from s2l_tools.data.synth import _polyline
    from s2l_tools.io.roi import rasterize_roi, roi_class
    from s2l_tools.labels import FOREGROUND_CLASS

    cells = labels > 0
    distance, nearest = ndi.distance_transform_edt(~cells, return_indices=True)
    slips = {"ends": 0, "near_moved": 0}
    out = []
    for roi in rois:
        points = np.asarray(roi.coordinates(), dtype=float)[:, ::-1]  # (row, col)
        width = int(roi.stroke_width) or 1
        if roi_class(roi) == FOREGROUND_CLASS:
            label = _labels_at(labels, rasterize_roi(roi, labels.shape).astype(bool))
            if label:
                cell = labels == label
                for end, inner in ((0, 1), (-1, -2)):
                    # every draw made whatever the settings: the same ends at any --overshoot
                    chosen, angle = rng.random() < p_end, rng.uniform(0, 2 * math.pi)
                    past = min(1 + int(rng.random() * overshoot), overshoot)  # 1..overshoot
                    if not chosen:
                        continue
                    step = points[end] - points[inner] if len(points) > 1 else np.zeros(2)
                    if np.hypot(*step) == 0:  # a dot, or a repeated vertex
                        step = np.array([math.sin(angle), math.cos(angle)])
                    new = _carry_on(points[end], step / np.hypot(*step), cell, past, width)
                    points = (np.vstack([new, points]) if end == 0 else np.vstack([points, new]))
                    slips["ends"] += 1
        else:
            drawn = rasterize_roi(roi, labels.shape).astype(bool)
            if drawn.any() and cells.any():
                d = np.where(drawn, distance, np.inf)
                r, c = np.unravel_index(np.argmin(d), d.shape)
                chosen, keep = rng.random() < p_near, float(rng.integers(0, 2))
                if d[r, c] <= near and chosen:
                    toward = np.array([nearest[0][r, c] - r, nearest[1][r, c] - c], float)
                    length = np.hypot(*toward)
                    # onto the cell's outermost pixel (0) or next to it (1), pen width included
                    keep += (width - 1) / 2
                    if length > keep:
                        points = points + toward / length * (length - keep)
                        slips["near_moved"] += 1
        new_roi = _polyline(np.round(points).astype(np.int64), width, name=roi.name)
        new_roi.group, new_roi.stroke_color = roi.group, roi.stroke_color
        out.append(new_roi)
    return out, slips


def main(argv=None) -> int:
    from s2l_tools.errors import S2LError

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="a folder made by s2l-synth --protocol hand")
    p.add_argument("dst", type=Path, help="the new folder (must not exist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overshoot", type=int, default=3,
                   help="most px past a cell's edge (3); 0: carried on to the edge and no "
                   "further (the same ends as with any other value and the same --seed)")
    p.add_argument("--p-end", type=float, default=0.5, help="chance per stroke end (0.5)")
    p.add_argument("--near", type=float, default=5.0,
                   help="background strokes this close to a cell are moved (5 px)")
    p.add_argument("--p-near", type=float, default=0.5, help="chance per such stroke (0.5)")
    args = p.parse_args(argv)
    if args.dst.exists():
        raise SystemExit(f"{args.dst}: exists; give a new folder")
    stems = sorted(f.stem for f in (args.src / "rois").glob("*.zip"))
    if not stems:
        raise SystemExit(f"{args.src}/rois: no RoiSet.zip; make it with s2l-synth --protocol hand")
    for sub in ("images", "masks", "rois", "scribbles"):
        (args.dst / sub).mkdir(parents=True)
    try:
        totals = copy_sloppy(args, stems)
    except (S2LError, OSError) as err:
        shutil.rmtree(args.dst)  # made above, so no one else's files: nothing half-written
        print(f"sloppy_strokes: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"images": len(stems), **totals}, indent=1))
    return 0


def copy_sloppy(args, stems: list[str]) -> dict:
    """Write ``args.dst``'s images, masks, RoiSet.zip files and scribbles; the counts."""
    from s2l_tools.errors import S2LError, S2LWarning
    from s2l_tools.io.images import read_labels, write_tiff
    from s2l_tools.io.roi import read_rois, rois_to_scribbles, write_roiset

    totals = {"ends": 0, "near_moved": 0, "fg_px": 0, "fg_wrong": 0, "bg_px": 0, "bg_wrong": 0}
    before = {"fg_wrong": 0, "bg_wrong": 0}
    for i, stem in enumerate(stems):
        image = next((args.src / "images").glob(stem + ".*"), None)
        if image is None:
            raise S2LError(f"{args.src / 'images'}: no image for {stem}.zip; give the folder "
                           "s2l-synth --protocol hand wrote")
        mask = args.src / "masks" / f"{stem}.tif"
        os.symlink(image.resolve(), args.dst / "images" / image.name)
        os.symlink(mask.resolve(), args.dst / "masks" / mask.name)
        labels = read_labels(mask)
        rng = np.random.default_rng([args.seed, i])
        rois, slips = sloppy_rois(read_rois(args.src / "rois" / f"{stem}.zip"), labels, rng,
                                  overshoot=args.overshoot, p_end=args.p_end, near=args.near,
                                  p_near=args.p_near)
        write_roiset(rois, args.dst / "rois" / f"{stem}.zip")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", S2LWarning)  # overlaps, clipping: as drawn
            scribble = rois_to_scribbles(rois, labels.shape)
        write_tiff(args.dst / "scribbles" / f"{stem}.tif", scribble)
        old = read_labels(args.src / "scribbles" / f"{stem}.tif")
        for k, v in slips.items():
            totals[k] += v
        cells = labels > 0
        totals["fg_px"] += int((scribble == 2).sum())
        totals["fg_wrong"] += int(((scribble == 2) & ~cells).sum())
        totals["bg_px"] += int((scribble == 1).sum())
        totals["bg_wrong"] += int(((scribble == 1) & cells).sum())
        before["fg_wrong"] += int(((old == 2) & ~cells).sum())
        before["bg_wrong"] += int(((old == 1) & cells).sum())
    totals["fg_wrong_share"] = totals["fg_wrong"] / max(totals["fg_px"], 1)
    totals["bg_wrong_share"] = totals["bg_wrong"] / max(totals["bg_px"], 1)
    totals["wrong_before"] = before
    return totals


if __name__ == "__main__":
    sys.exit(main())

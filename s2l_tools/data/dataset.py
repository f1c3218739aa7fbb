"""The dataset layout every tool reads, and the checks behind ``s2l-check``.

::

    DATA/images/<stem>.tif|.tiff|.png|.jpg   the microscopy images
    DATA/rois/<stem>.zip|.roi                scribbles from Fiji (RoiSet.zip)
    DATA/scribbles/<stem>.tif                scribble masks (0 unlabeled, 1 bg, 2 fg)
    DATA/masks/<stem>.tif                    optional full instance labels

Files are paired by stem (the name without its suffix). :func:`check_dataset`
reads a dataset and lists every problem found (``s2l-check DATA``, in
:mod:`s2l_tools.cli.check`, prints it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s2l_tools import labels as L
from s2l_tools.errors import S2LError
from s2l_tools.io.images import LABEL_SUFFIXES, image_stem, list_images, read_labels, read_raw

ROI_SUFFIXES = (".zip", ".roi")


@dataclass
class Sample:
    """The files of one image of a dataset (``None`` where absent)."""

    stem: str
    image: Path | None = None
    rois: Path | None = None
    scribbles: Path | None = None
    mask: Path | None = None


@dataclass
class Dataset:
    """A dataset folder: its samples, by stem, in sorted order."""

    root: Path
    samples: list[Sample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def rois_dir(self) -> Path:
        return self.root / "rois"

    @property
    def scribbles_dir(self) -> Path:
        return self.root / "scribbles"

    @property
    def masks_dir(self) -> Path:
        return self.root / "masks"

    def with_images(self) -> list[Sample]:
        return [s for s in self.samples if s.image is not None]


def _index(folder: Path, suffixes, kind: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for p in list_images(folder, suffixes=suffixes):
        stem = image_stem(p) if kind != "rois" else p.stem
        if stem in found:
            raise S2LError(
                f"{p}: two {kind} files for '{stem}' ({found[stem].name} and {p.name}); "
                "keep one"
            )
        found[stem] = p
    return found


def open_dataset(root: str | os.PathLike, *, require_images: bool = True) -> Dataset:
    """Index a dataset folder (nothing is read but file names).

    Raises
    ------
    S2LError
        ``root`` is not a folder, or has no ``images/`` with images in it.
    """
    root = Path(root)
    if not root.is_dir():
        raise S2LError(f"{root}: no such dataset folder; expected DATA/images/ inside it")
    ds = Dataset(root)
    images = _index(ds.images_dir, (".tif", ".tiff", ".png", ".jpg", ".jpeg"), "image")
    if require_images and not images:
        raise S2LError(
            f"{ds.images_dir}: no images found; put the images in DATA/images/ "
            "(TIFF, PNG or JPEG), named like their scribbles"
        )
    rois = _index(ds.rois_dir, ROI_SUFFIXES, "rois")
    scribbles = _index(ds.scribbles_dir, LABEL_SUFFIXES, "scribble")
    masks = _index(ds.masks_dir, LABEL_SUFFIXES, "mask")
    for stem in sorted(set(images) | set(rois) | set(scribbles) | set(masks)):
        ds.samples.append(
            Sample(stem, images.get(stem), rois.get(stem), scribbles.get(stem), masks.get(stem))
        )
    return ds


@dataclass
class CheckReport:
    """What ``check_dataset`` found.

    ``rows`` has one dict per image (keys :data:`CHECK_COLUMNS`); ``problems``
    are what ``s2l-scribbles`` or ``s2l-train`` would refuse (one line each);
    ``notes`` are what they would warn about or silently skip.
    """

    rows: list[dict]
    problems: list[str]
    totals: dict
    notes: list[str] = field(default_factory=list)


#: The columns of a check report's rows, in order.
CHECK_COLUMNS = ("stem", "size", "channels", "dtype", "strokes", "bg_px", "fg_px", "objects")

#: What each column of a check report means (printed under the table by ``s2l-check``).
CHECK_LEGEND = {
    "strokes": "where the scribbles are: 'mask' = scribbles/<stem>.tif (what s2l-train "
               "reads); 'ROIs' = rois/<stem>.zip and 'overlay' = the TIFF's overlay, not "
               "converted yet (run s2l-scribbles); '-' = none (the image is not trained on)",
    "bg_px / fg_px": "pixels scribbled as background / as cell",
    "objects": "cells in masks/<stem>.tif (full labels, only needed to score or for "
               "--method full); '-' = no mask",
}


def _rasterise_rois(rois, shape, where) -> tuple[np.ndarray | None, list[str], list[str]]:
    """ROIs -> scribble mask as ``s2l-scribbles`` makes it (default classes).

    Returns the mask (None when refused), the problems and the warnings.
    """
    import warnings

    from s2l_tools.errors import S2LWarning
    from s2l_tools.io.roi import rois_to_scribbles

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", S2LWarning)
        try:
            mask = rois_to_scribbles(rois, shape, source=where)
        except S2LError as exc:
            return None, [str(exc)], []
    return mask, [], [str(w.message) for w in caught if issubclass(w.category, S2LWarning)]


def check_dataset(root: str | os.PathLike, *, channel: int | None = None) -> CheckReport:
    """Read every file of a dataset and list its problems.

    Runs the checks of ``s2l-scribbles`` and ``s2l-train``: an empty
    ``report.problems`` means both will take the dataset.

    Parameters
    ----------
    root : path-like
        The dataset folder (``images/`` inside; see the module docstring).
    channel : int, optional
        Channel of multi-channel images to read (0-based); all channels when
        ``None``.

    Returns
    -------
    report : CheckReport
        A row per image (size, channels, dtype, where its strokes are,
        scribbled pixels per class, mask objects), the totals, the problems
        found and notes. Problems: unpaired files, size mismatches, empty
        scribbles, unreadable files, differing channel counts, ROIs (ROI
        sets or a TIFF's overlay) not converted to scribble masks yet or
        that ``s2l-scribbles`` refuses (an ROI without a class, a text ROI),
        no scribbles at all (unless every image has a full mask: notes
        then), and no background or no foreground stroke in any image.
        Notes: ROIs partly outside their image and ROI sets newer than
        their scribble mask.

    Raises
    ------
    S2LError
        ``root`` is not a dataset folder (see :func:`open_dataset`).
    """
    from s2l_tools.io.roi import read_rois

    ds = open_dataset(root)
    rows, problems, notes = [], [], []
    totals = {"images": 0, "background_px": 0, "foreground_px": 0, "scribbled_images": 0,
              "unconverted_images": 0}
    strokes_bg = strokes_fg = 0          # what training sees once every ROI set is converted
    unconverted = 0
    channels_seen: dict[int, str] = {}
    for s in ds.samples:
        row = dict.fromkeys(CHECK_COLUMNS, "-")
        row["stem"] = s.stem
        if s.image is None:
            where = s.scribbles or s.rois or s.mask
            problems.append(f"{where}: no image named '{s.stem}' in {ds.images_dir}; "
                            "rename it to match its image or remove it")
            continue
        totals["images"] += 1
        try:
            img = read_raw(s.image, channel=channel)
        except S2LError as exc:
            problems.append(str(exc))
            rows.append(row)
            continue
        h, w = img.shape[1:]
        row.update(size=f"{h}x{w}", channels=img.shape[0], dtype=str(img.dtype))
        channels_seen.setdefault(img.shape[0], s.stem)
        if s.scribbles is not None:
            row["strokes"] = "mask"
            try:
                scr = read_labels(s.scribbles)
                if scr.shape != (h, w):
                    problems.append(f"{s.scribbles}: size {scr.shape[0]}x{scr.shape[1]} differs "
                                    f"from its image ({h}x{w}); redraw or regenerate it")
                bg = int(np.count_nonzero(scr == L.BACKGROUND))
                fg = int(np.count_nonzero(scr == L.FOREGROUND))
                row.update(bg_px=bg, fg_px=fg)
                totals["background_px"] += bg
                totals["foreground_px"] += fg
                strokes_bg += bg
                strokes_fg += fg
                if bg + fg == 0:
                    problems.append(f"{s.scribbles}: no scribbled pixel; draw some or remove it")
                else:
                    totals["scribbled_images"] += 1
                bad = np.setdiff1d(np.unique(scr), [L.UNLABELED, L.BACKGROUND, L.FOREGROUND])
                if bad.size:
                    problems.append(f"{s.scribbles}: unexpected values {bad[:5].tolist()} "
                                    "(expected 0 unlabeled, 1 background, 2 foreground)")
            except S2LError as exc:
                problems.append(str(exc))
            if s.rois is not None and s.rois.stat().st_mtime > s.scribbles.stat().st_mtime:
                notes.append(f"{s.rois}: newer than {s.scribbles.name}; re-run s2l-scribbles "
                             f"{root} if you changed the ROIs since")
        else:
            source, rois = s.rois, None
            try:
                if s.rois is not None:
                    rois = read_rois(s.rois)
                elif s.image.suffix.lower() in (".tif", ".tiff"):
                    source, rois = s.image, read_rois(s.image) or None
            except S2LError as exc:
                problems.append(str(exc))
            if rois is not None:
                unconverted += 1
                totals["unconverted_images"] += 1
                row["strokes"] = "ROIs" if source == s.rois else "overlay"
                what = "ROIs" if source == s.rois else f"overlay's {len(rois)} ROI(s)"
                problems.append(f"{source}: {what} not converted to a scribble mask yet "
                                f"(s2l-train reads {ds.scribbles_dir.name}/); run "
                                f"s2l-scribbles {root}")
                mask, refused, warned = _rasterise_rois(rois, (h, w), source)
                problems += refused
                notes += warned
                if mask is not None:
                    bg = int(np.count_nonzero(mask == L.BACKGROUND))
                    fg = int(np.count_nonzero(mask == L.FOREGROUND))
                    row.update(bg_px=bg, fg_px=fg)
                    strokes_bg += bg
                    strokes_fg += fg
        if s.mask is not None:
            try:
                m = read_labels(s.mask)
                if m.shape != (h, w):
                    problems.append(f"{s.mask}: size {m.shape[0]}x{m.shape[1]} differs from its "
                                    f"image ({h}x{w})")
                row["objects"] = int(len(np.unique(m[m > 0])))
            except S2LError as exc:
                problems.append(str(exc))
        rows.append(row)
    if len(channels_seen) > 1:
        desc = ", ".join(f"{c} in '{stem}'" for c, stem in channels_seen.items())
        problems.append(f"{ds.images_dir}: images differ in channel count ({desc}); "
                        "use --channel to pick one channel for all")
    where = ds.scribbles_dir if totals["scribbled_images"] else ds.rois_dir
    if totals["scribbled_images"] or unconverted:
        if strokes_bg == 0:
            problems.append(f"{where}: no background scribble in any image; Scribble2Label "
                            "needs both classes: draw a few strokes across background")
        if strokes_fg == 0:
            problems.append(f"{where}: no foreground scribble in any image; "
                            "draw a few strokes through cells")
    elif not any(s.scribbles for s in ds.samples) and totals["images"]:
        with_masks = all(r["objects"] != "-" for r in rows)
        msg = (f"{ds.scribbles_dir}: no scribbles and no ROIs; draw strokes in Fiji and run "
               f"s2l-scribbles {root}, or make them from full masks with s2l-synth {root} "
               "--ratio 0.1")
        if with_masks:
            notes.append(msg.replace("; draw", "; fine as --val data or for --method full. "
                                     "To train on scribbles, draw"))
        else:
            problems.append(msg)
    return CheckReport(rows, problems, totals, notes)

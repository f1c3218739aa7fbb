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
    """What ``check_dataset`` found."""

    rows: list[dict]
    problems: list[str]
    totals: dict


def check_dataset(root: str | os.PathLike, *, channel: int | None = None) -> CheckReport:
    """Read every file of a dataset and list its problems.

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
        A row per image (size, channels, dtype, scribbled pixels per class,
        mask objects), the totals, and the problems found: unpaired files,
        size mismatches, empty scribbles, unreadable files, differing channel
        counts, and a dataset with no background or no foreground scribble at
        all. An empty ``report.problems`` means the dataset is fine.

    Raises
    ------
    S2LError
        ``root`` is not a dataset folder (see :func:`open_dataset`).
    """
    ds = open_dataset(root)
    rows, problems = [], []
    totals = {"images": 0, "background_px": 0, "foreground_px": 0, "scribbled_images": 0}
    channels_seen: dict[int, str] = {}
    for s in ds.samples:
        row = {"stem": s.stem, "size": "", "channels": "", "dtype": "", "bg_px": "",
               "fg_px": "", "objects": ""}
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
        elif s.rois is not None:
            row.update(bg_px="(rois)", fg_px="(rois)")
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
    if totals["scribbled_images"]:
        if totals["background_px"] == 0:
            problems.append(f"{ds.scribbles_dir}: no background scribble in any image; "
                            "Scribble2Label needs both classes: draw a few strokes across background")
        if totals["foreground_px"] == 0:
            problems.append(f"{ds.scribbles_dir}: no foreground scribble in any image; "
                            "draw a few strokes through cells")
    return CheckReport(rows, problems, totals)

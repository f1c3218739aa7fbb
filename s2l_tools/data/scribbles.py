"""ImageJ/Fiji ROIs -> scribble masks (the library of ``s2l-scribbles``).

:func:`find_jobs` pairs each image with its ROIs (``DATA/rois/<stem>.zip`` or
``.roi``, else the overlay saved inside ``DATA/images/<stem>.tif``),
:func:`class_maps` turns the class options into :func:`s2l_tools.io.roi.roi_class`
rules, :func:`convert` rasterises the ROIs exactly as ImageJ draws them
(:mod:`s2l_tools.io.roi`) and :func:`write_mask` writes
``DATA/scribbles/<stem>.tif`` (uint8: 0 unlabeled, 1 background, 2 foreground).
The command line is :mod:`s2l_tools.cli.scribbles`.

Every input is converted and checked before anything is written, so a bad
ROI in the last image leaves no half-converted dataset behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from s2l_tools import labels as L
from s2l_tools.data.dataset import ROI_SUFFIXES, open_dataset
from s2l_tools.errors import S2LError, first_names
from s2l_tools.io.images import IMAGE_SUFFIXES, image_stem, list_images, read_raw, write_tiff

__all__ = ["DESCRIPTION", "Job", "class_maps", "convert", "find_jobs", "write_mask"]

#: TIFF description written into every mask this tool makes: such files are
#: ours to replace on a re-run; any other file needs --overwrite.
DESCRIPTION = "s2l-scribbles mask: 0 unlabeled, 1 background, 2 foreground"


def _ours(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            desc = tif.pages[0].description or ""
    except Exception:
        return False
    return desc.startswith("s2l-")


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a scribble mask as ``s2l-scribbles`` does (atomically, tagged as ours).

    Parameters
    ----------
    path : path-like
        Output ``.tif``.
    mask : (H, W) uint8 ndarray
        0 unlabeled, 1 background, 2 foreground.
    """
    write_tiff(path, mask, description=DESCRIPTION)


class Job(NamedTuple):
    """One image to convert: its ROIs (None: the TIFF's overlay) and the output mask."""

    stem: str
    image: Path
    rois: Path | None
    out: Path


def class_maps(
    *,
    fg_groups: Sequence[int] = (),
    bg_groups: Sequence[int] = (),
    fg_name: str | None = None,
    bg_name: str | None = None,
    colors: Iterable[str] = (),
) -> tuple[dict[int, int] | None, dict[str, int] | None, dict[str, int] | None]:
    """Class rules for :func:`s2l_tools.io.roi.rois_to_scribbles` from the user's options.

    Parameters
    ----------
    fg_groups, bg_groups : sequence of int
        ROI groups meaning foreground / background. Giving only one of them
        keeps the default group of the other (foreground 1, background 2);
        neither: the default groups.
    fg_name, bg_name : str, optional
        Regular expressions for ROI names (matched at the start, any case).
    colors : iterable of str
        ``'#RRGGBB=fg'`` or ``'#RRGGBB=bg'`` (stroke colours).

    Returns
    -------
    groups, names, colors : dict or None
        None where the defaults of :func:`s2l_tools.io.roi.roi_class` apply.

    Raises
    ------
    S2LError
        A name that is not a regular expression, a colour entry not
        ``'#RRGGBB=fg|bg'``.
    """
    fg_groups, bg_groups = list(fg_groups), list(bg_groups)
    if fg_groups and not bg_groups:
        bg_groups = [L.GROUP_BACKGROUND]
    if bg_groups and not fg_groups:
        fg_groups = [L.GROUP_FOREGROUND]
    groups = {g: L.FOREGROUND_CLASS for g in fg_groups}
    groups.update({g: L.BACKGROUND_CLASS for g in bg_groups})
    names = None
    if fg_name or bg_name:
        names = {}
        for pattern, k in ((fg_name, L.FOREGROUND_CLASS), (bg_name, L.BACKGROUND_CLASS)):
            if pattern:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise S2LError(f"--{'fg' if k else 'bg'}-name {pattern!r}: not a valid "
                                   f"regular expression ({exc})") from None
                names[pattern] = k
    color_map = None
    colors = list(colors)
    if colors:
        color_map = {}
        for item in colors:
            try:
                value, cls = item.split("=")
                color_map[value.strip().lower()] = {"fg": L.FOREGROUND_CLASS,
                                                    "bg": L.BACKGROUND_CLASS}[cls.strip().lower()]
            except (ValueError, KeyError):
                raise S2LError(f"--color {item!r}: expected '#RRGGBB=fg' or '#RRGGBB=bg'") from None
    return groups or None, names, color_map


def find_jobs(
    *,
    data: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    rois: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
) -> list[Job]:
    """The images to convert, with their ROIs and output masks.

    Parameters
    ----------
    data : path-like, optional
        A dataset folder (``images/``, ``rois/``; masks go to ``scribbles/``).
    images : path-like, optional
        Instead of ``data``: an image or a folder of images.
    rois : path-like, optional
        With ``images``: a RoiSet.zip/.roi, or a folder of them named like
        the images (default: the overlay inside each TIFF).
    out : path-like, optional
        With ``images``: output folder, or a ``.tif`` for a single image.

    Returns
    -------
    jobs : list of Job

    Raises
    ------
    S2LError
        Both or neither of ``data`` and ``images``/``out``, no images, ROI
        files that match no image, or a missing ROI file or folder.
    """
    if data is not None and (images or out):
        raise S2LError("give either a dataset folder or --images/--out, not both")
    if data is not None:
        ds = open_dataset(data)
        jobs = []
        for s in ds.samples:
            if s.image is None:
                if s.rois is not None:
                    raise S2LError(f"{s.rois}: no image named '{s.stem}' in {ds.images_dir}; "
                                   "rename the ROI file to match its image")
                continue
            jobs.append(Job(s.stem, s.image, s.rois, ds.scribbles_dir / f"{s.stem}.tif"))
        return jobs
    if images is None or out is None:
        raise S2LError("give a dataset folder (s2l-scribbles DATA) or --images with --out")
    images, out = Path(images), Path(out)
    rois = None if rois is None else Path(rois)
    image_files = [images] if images.is_file() else (
        list_images(images, suffixes=IMAGE_SUFFIXES) if images.is_dir() else None)
    if not image_files:
        raise S2LError(f"{images}: no images found; give an image file or a folder of them")
    rois_by_stem: dict[str, Path] = {}
    if rois is not None:
        if rois.is_file():
            if len(image_files) != 1:
                raise S2LError(f"{rois}: one ROI file for {len(image_files)} images; give a "
                               "folder of ROI files named like the images")
            rois_by_stem[image_stem(image_files[0])] = rois
        elif rois.is_dir():
            for p in sorted(rois.iterdir()):
                if p.suffix.lower() in ROI_SUFFIXES:
                    rois_by_stem[p.stem] = p
        else:
            raise S2LError(f"{rois}: no such ROI file or folder")
        stems = {image_stem(p) for p in image_files}
        orphans = sorted(set(rois_by_stem) - stems)
        if orphans:
            raise S2LError(f"{rois}: ROI file(s) {first_names(orphans, 5)} match no image in "
                           f"{images}; name each RoiSet like its image")
    single_file = len(image_files) == 1 and out.suffix.lower() in (".tif", ".tiff")
    jobs = []
    for img in image_files:
        stem = image_stem(img)
        target = out if single_file else out / f"{stem}.tif"
        jobs.append(Job(stem, img, rois_by_stem.get(stem), target))
    return jobs


def convert(
    jobs: Sequence[Job],
    *,
    groups: dict[int, int] | None = None,
    names: dict[str, int] | None = None,
    colors: dict[str, int] | None = None,
    skip_unclassified: bool = False,
    overwrite: bool = False,
    source: str | os.PathLike | None = None,
) -> list[tuple[Path, np.ndarray]]:
    """Convert every job to a mask in memory, checking everything first.

    Parameters
    ----------
    jobs : sequence of Job
        From :func:`find_jobs`.
    groups, names, colors : dict, optional
        Class rules (:func:`class_maps`); None: the defaults.
    skip_unclassified : bool
        Skip ROIs of no class with a warning instead of refusing them.
    overwrite : bool
        Allow replacing existing masks that ``s2l-scribbles`` did not write.
    source : str or path-like, optional
        What to name in the messages about missing classes (the dataset,
        ROI or image folder).

    Returns
    -------
    results : list of (Path, (H, W) uint8 ndarray)
        Output path and mask of every image with ROIs (images without ROIs
        or overlay are skipped, with a note on stdout).

    Raises
    ------
    S2LError
        An output that would overwrite its input image or a file not
        written by ``s2l-scribbles`` (without ``overwrite``), unreadable
        ROIs, no ROIs at all, or no scribble of one of the two classes.
    """
    from s2l_tools.io import roi as roimod

    results, skipped = [], []
    for stem, image, rois_path, out in jobs:
        if image.resolve() == out.resolve():
            raise S2LError(f"{out}: the output would overwrite the input image; choose another --out")
        src = rois_path or image
        if rois_path is not None:
            rois = roimod.read_rois(rois_path)
        elif image.suffix.lower() in (".tif", ".tiff"):
            rois = roimod.read_rois(image)
        else:
            rois = []
        if not rois:
            skipped.append(stem)
            continue
        shape = read_raw(image, channel=0).shape[1:]
        mask = roimod.rois_to_scribbles(
            rois, shape, groups=groups, names=names, colors=colors,
            skip_unclassified=skip_unclassified, source=str(src),
        )
        if out.exists() and not overwrite and not _ours(out):
            raise S2LError(f"{out}: exists and was not written by s2l-scribbles; pass --overwrite "
                           "to replace it (or move it away)")
        results.append((out, mask))
    if skipped:
        print(f"note: {len(skipped)} image(s) without ROIs or overlay skipped: "
              f"{first_names(skipped, 5)}")
    if not results:
        raise S2LError("no ROIs found for any image; export them from Fiji's ROI Manager as "
                       "DATA/rois/<image name>.zip")
    bg = sum(int(np.count_nonzero(m == L.BACKGROUND)) for _, m in results)
    fg = sum(int(np.count_nonzero(m == L.FOREGROUND)) for _, m in results)
    where = source if source is not None else "ROIs"
    if bg == 0:
        raise S2LError(f"{where}: no background scribble in any image; Scribble2Label needs "
                       "both: draw a few strokes across background (group 2 or name 'bg')")
    if fg == 0:
        raise S2LError(f"{where}: no foreground scribble in any image; draw a few strokes "
                       "through cells (group 1 or name 'fg')")
    return results

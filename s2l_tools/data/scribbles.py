"""``s2l-scribbles``: ImageJ/Fiji ROIs -> scribble masks.

Reads each image's ROIs (``DATA/rois/<stem>.zip`` or ``.roi``, else the
overlay saved inside ``DATA/images/<stem>.tif``), rasterises them exactly as
ImageJ draws them (:mod:`s2l_tools.io.roi`) and writes ``DATA/scribbles/<stem>.tif``
(uint8: 0 unlabeled, 1 background, 2 foreground).

Every input is converted and checked before anything is written, so a bad
ROI in the last image leaves no half-converted dataset behind.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from s2l_tools import labels as L
from s2l_tools.cli._common import make_parser, run
from s2l_tools.data.dataset import ROI_SUFFIXES, open_dataset
from s2l_tools.errors import S2LError
from s2l_tools.io.images import IMAGE_SUFFIXES, image_stem, list_images, read_raw, write_tiff

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


def _class_maps(args):
    groups = {g: L.FOREGROUND_CLASS for g in args.fg_group}
    groups.update({g: L.BACKGROUND_CLASS for g in args.bg_group})
    names = None
    if args.fg_name or args.bg_name:
        names = {}
        for pattern, k in ((args.fg_name, L.FOREGROUND_CLASS), (args.bg_name, L.BACKGROUND_CLASS)):
            if pattern:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise S2LError(f"--{'fg' if k else 'bg'}-name {pattern!r}: not a valid "
                                   f"regular expression ({exc})") from None
                names[pattern] = k
    colors = None
    if args.color:
        colors = {}
        for item in args.color:
            try:
                value, cls = item.split("=")
                colors[value.strip().lower()] = {"fg": L.FOREGROUND_CLASS,
                                                 "bg": L.BACKGROUND_CLASS}[cls.strip().lower()]
            except (ValueError, KeyError):
                raise S2LError(f"--color {item!r}: expected '#RRGGBB=fg' or '#RRGGBB=bg'") from None
    return groups, names, colors


def _jobs(args) -> list[tuple[str, Path, Path | None, Path]]:
    """(stem, image, rois or None for the overlay, output) for every image."""
    if args.data is not None:
        ds = open_dataset(args.data)
        jobs = []
        for s in ds.samples:
            if s.image is None:
                if s.rois is not None:
                    raise S2LError(f"{s.rois}: no image named '{s.stem}' in {ds.images_dir}; "
                                   "rename the ROI file to match its image")
                continue
            jobs.append((s.stem, s.image, s.rois, ds.scribbles_dir / f"{s.stem}.tif"))
        return jobs
    if args.images is None or args.out is None:
        raise S2LError("give a dataset folder (s2l-scribbles DATA) or --images with --out")
    images = [args.images] if args.images.is_file() else (
        list_images(args.images, suffixes=IMAGE_SUFFIXES) if args.images.is_dir() else None)
    if not images:
        raise S2LError(f"{args.images}: no images found; give an image file or a folder of them")
    rois_by_stem: dict[str, Path] = {}
    if args.rois is not None:
        if args.rois.is_file():
            if len(images) != 1:
                raise S2LError(f"{args.rois}: one ROI file for {len(images)} images; give a "
                               "folder of ROI files named like the images")
            rois_by_stem[image_stem(images[0])] = args.rois
        elif args.rois.is_dir():
            for p in sorted(args.rois.iterdir()):
                if p.suffix.lower() in ROI_SUFFIXES:
                    rois_by_stem[p.stem] = p
        else:
            raise S2LError(f"{args.rois}: no such ROI file or folder")
        stems = {image_stem(p) for p in images}
        orphans = sorted(set(rois_by_stem) - stems)
        if orphans:
            raise S2LError(f"{args.rois}: ROI file(s) {', '.join(orphans[:5])} match no image in "
                           f"{args.images}; name each RoiSet like its image")
    single_file = len(images) == 1 and args.out.suffix.lower() in (".tif", ".tiff")
    jobs = []
    for img in images:
        stem = image_stem(img)
        out = args.out if single_file else args.out / f"{stem}.tif"
        jobs.append((stem, img, rois_by_stem.get(stem), out))
    return jobs


def convert(args) -> list[tuple[Path, np.ndarray]]:
    """Convert every job to a mask in memory, checking everything first."""
    from s2l_tools.io import roi as roimod

    groups, names, colors = _class_maps(args)
    results, skipped = [], []
    for stem, image, rois_path, out in _jobs(args):
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
            rois, shape, groups=groups or None, names=names, colors=colors,
            skip_unclassified=args.skip_unclassified, source=str(src),
        )
        if out.exists() and not args.overwrite and not _ours(out):
            raise S2LError(f"{out}: exists and was not written by s2l-scribbles; pass --overwrite "
                           "to replace it (or move it away)")
        results.append((out, mask))
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        print(f"note: {len(skipped)} image(s) without ROIs or overlay skipped: {shown}")
    if not results:
        raise S2LError("no ROIs found for any image; export them from Fiji's ROI Manager as "
                       "DATA/rois/<image name>.zip")
    bg = sum(int(np.count_nonzero(m == L.BACKGROUND)) for _, m in results)
    fg = sum(int(np.count_nonzero(m == L.FOREGROUND)) for _, m in results)
    where = args.data or args.rois or args.images
    if bg == 0:
        raise S2LError(f"{where}: no background scribble in any image; Scribble2Label needs "
                       "both: draw a few strokes across background (group 2 or name 'bg')")
    if fg == 0:
        raise S2LError(f"{where}: no foreground scribble in any image; draw a few strokes "
                       "through cells (group 1 or name 'fg')")
    return results


def get_parser():
    parser = make_parser(
        "s2l-scribbles",
        "Convert ImageJ/Fiji ROIs (RoiSet.zip, .roi, or a TIFF's overlay) into scribble masks "
        "(uint8: 0 unlabeled, 1 background, 2 foreground).\n\n"
        "Class of each ROI: its group (1 = foreground, 2 = background), else its name "
        "(fg/cell/fore..., bg/back...), else a --color map. Where strokes of different "
        "classes overlap, see s2l_tools.io.roi.rois_to_scribbles.",
        "  s2l-scribbles my_data                 # my_data/rois/*.zip -> my_data/scribbles/*.tif\n"
        "  s2l-scribbles --images img.tif --rois RoiSet.zip --out img_scribbles.tif\n"
        "  s2l-scribbles my_data --color '#ffff00=fg' --color '#00ffff=bg'",
    )
    parser.add_argument("data", nargs="?", type=Path, help="dataset folder (images/, rois/)")
    parser.add_argument("--images", type=Path, help="an image or a folder of images")
    parser.add_argument("--rois", type=Path, help="a RoiSet.zip/.roi or a folder of them "
                        "(default: the overlay inside each TIFF)")
    parser.add_argument("--out", type=Path, help="output folder (or .tif for one image)")
    parser.add_argument("--fg-group", type=int, action="append", default=[],
                        help="ROI group(s) meaning foreground (default 1)")
    parser.add_argument("--bg-group", type=int, action="append", default=[],
                        help="ROI group(s) meaning background (default 2)")
    parser.add_argument("--fg-name", help="regular expression for foreground ROI names")
    parser.add_argument("--bg-name", help="regular expression for background ROI names")
    parser.add_argument("--color", action="append", default=[],
                        help="stroke colour map, e.g. '#ffff00=fg' (repeatable)")
    parser.add_argument("--skip-unclassified", action="store_true",
                        help="warn about ROIs of no class instead of stopping")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing masks not written by s2l-scribbles")
    return parser


def _main(args) -> int:
    if args.data is not None and (args.images or args.out):
        raise S2LError("give either a dataset folder or --images/--out, not both")
    if args.fg_group and not args.bg_group:
        args.bg_group = [2]
    if args.bg_group and not args.fg_group:
        args.fg_group = [1]
    results = convert(args)
    for out, mask in results:
        write_tiff(out, mask, description=DESCRIPTION)
    bg = sum(int(np.count_nonzero(m == L.BACKGROUND)) for _, m in results)
    fg = sum(int(np.count_nonzero(m == L.FOREGROUND)) for _, m in results)
    print(f"wrote {len(results)} scribble mask(s) to {results[0][0].parent}: "
          f"{bg} background and {fg} foreground pixels")
    return 0


def main(argv=None) -> int:
    return run(_main, get_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())


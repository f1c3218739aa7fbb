"""``s2l-scribbles``: ImageJ/Fiji ROIs -> scribble masks.

Reads each image's ROIs (``DATA/rois/<stem>.zip`` or ``.roi``, else the
overlay saved inside ``DATA/images/<stem>.tif``), rasterises them exactly as
ImageJ draws them (:mod:`s2l_tools.io.roi`) and writes ``DATA/scribbles/<stem>.tif``
(uint8: 0 unlabeled, 1 background, 2 foreground); the work is done by
:mod:`s2l_tools.data.scribbles`.

Every input is converted and checked before anything is written, so a bad
ROI in the last image leaves no half-converted dataset behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from s2l_tools import labels as L
from s2l_tools.cli._common import make_parser, run
from s2l_tools.data.scribbles import class_maps, convert, find_jobs, write_mask

__all__ = ["get_parser", "main"]


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
    jobs = find_jobs(data=args.data, images=args.images, rois=args.rois, out=args.out)
    groups, names, colors = class_maps(
        fg_groups=args.fg_group, bg_groups=args.bg_group, fg_name=args.fg_name,
        bg_name=args.bg_name, colors=args.color,
    )
    results = convert(
        jobs, groups=groups, names=names, colors=colors,
        skip_unclassified=args.skip_unclassified, overwrite=args.overwrite,
        source=args.data or args.rois or args.images,
    )
    for out, mask in results:
        write_mask(out, mask)
    bg = sum(int(np.count_nonzero(m == L.BACKGROUND)) for _, m in results)
    fg = sum(int(np.count_nonzero(m == L.FOREGROUND)) for _, m in results)
    print(f"wrote {len(results)} scribble mask(s) to {results[0][0].parent}: "
          f"{bg} background and {fg} foreground pixels")
    return 0


def main(argv=None) -> int:
    return run(_main, get_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

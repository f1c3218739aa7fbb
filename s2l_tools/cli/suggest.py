"""``s2l-suggest``: where new strokes would help most, from a run's EMA store.

The work is :mod:`s2l_tools.inference.suggest`'s; this module parses the
command line, refuses an output folder inside the dataset's ROI or scribble
folders, and says what was written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from s2l_tools.cli import _common as _cli
from s2l_tools.errors import S2LError, first_names

__all__ = ["get_parser", "main"]


def get_parser():
    """The argument parser of ``s2l-suggest``."""
    parser = _cli.make_parser(
        "s2l-suggest",
        "Suggest where new strokes would help most. Per image, the regions where the run's\n"
        "EMA store is below the consistency threshold or disagrees with the current\n"
        "prediction (images the run trained on), or where the prediction is uncertain\n"
        "(images without scribbles). Writes OUT/<image>_suggestions.zip (Fiji ROIs in group\n"
        "3, magenta, named suggest_01...; s2l-scribbles leaves them out; Fiji: Plugins >\n"
        "Scribble2Label > Show Suggestions), OUT/<image>_suggestions.png (an overview) and\n"
        "OUT/suggestions.csv (every region, in the order to draw: each image's best\n"
        "first, then each image's second, ...). Draw strokes there, then\n"
        "s2l-train DATA --out NEW --from RUN.",
        "  s2l-suggest runs/first --out runs/first/suggestions\n"
        "  s2l-suggest runs/first my_data --out suggestions --top-k 3",
    )
    parser.add_argument("run", metavar="RUN", help="run folder of s2l-train --method s2l")
    parser.add_argument("data", metavar="DATA", nargs="?", default=None,
                        help="dataset folder (images/, scribbles/); default: the run's")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="regions suggested per image")
    parser.add_argument("--min-area", type=int, default=16, metavar="N",
                        help="smallest region suggested (pixels)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to predict")
    return parser


def _main(args) -> int:
    from s2l_tools.inference.suggest import suggest, write_suggestions

    if args.top_k < 1:
        raise S2LError(f"--top-k {args.top_k}: must be at least 1")
    if args.min_area < 1:
        raise S2LError(f"--min-area {args.min_area}: must be at least 1")
    out = Path(args.out).resolve()
    if args.data is not None:
        data = Path(args.data).resolve()
        if out in (data / "rois", data / "scribbles", data / "images", data / "masks"):
            raise S2LError(f"--out {args.out}: a folder of the dataset; give another folder "
                           "(suggestions are not scribbles)")
    results = suggest(args.run, args.data, top_k=args.top_k, min_area=args.min_area,
                      device=args.device)
    table = write_suggestions(results, args.out)
    n = sum(len(r.regions) for r in results)
    print(f"done: {n} suggested region(s) in {len(results)} image(s); ranked in {table}; "
          f"ROIs and overviews in {args.out}")
    unusual = [r.stem for r in results if r.source == "unusual"]
    if unusual:
        print(f"s2l-suggest: {len(unusual)} image(s) called far more cell than any training "
              f"image ({first_names(unusual, 5)}): they may be unlike the images you "
              "scribbled; their regions (what the network calls cell there) come first: look "
              "at them and scribble what they really are", file=sys.stderr)
    under = [r.stem for r in results if r.source == "undercalled"]
    if under:
        print(f"s2l-suggest: {len(under)} image(s) where the network outlined far more cells "
              f"than it called ({first_names(under, 5)}): its masks may miss cells there; "
              "their regions (cells it outlined, not called) come first: scribble the cells "
              "there", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

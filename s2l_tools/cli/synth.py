"""``s2l-synth``: synthetic scribbles for every label image of a data folder.

The command line of :func:`s2l_tools.data.synth.synthesize_folder`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from s2l_tools.cli import _common as _cli
from s2l_tools.data.synth import BACKGROUND_STYLES, NEAR_DISTANCE, PROTOCOLS, synthesize_folder
from s2l_tools.errors import S2LError
from s2l_tools.labels import BACKGROUND, FOREGROUND

__all__ = ["get_parser", "main"]

_DESCRIPTION = """\
Make synthetic scribbles from full instance annotations. --protocol skeleton
(the paper's Table 2): the skeletons of a fraction of the cells (foreground)
and as many segments of the background's skeleton (background). --protocol
hand: short wobbly strokes 1-3 px wide, as a person draws them in Fiji, inside
a fraction of the cells, and as many background strokes, half across the open
background and half just beside a cell.

Reads DATA/masks/<stem>.tif (or .tiff/.png; 0 = background, 1..N = cells) and
writes DATA/scribbles/<stem>.tif (uint8: 0 unlabeled, 1 background,
2 foreground); with --rois (always with --protocol hand) also
DATA/rois/<stem>.zip for Fiji's ROI Manager. Hand-drawn strokes are written as
line ROIs first and converted to the scribble masks by s2l-scribbles' code.
Existing scribbles and ROI sets are never replaced without --overwrite."""

_EXAMPLE = """\
  s2l-synth data/dsb --ratio 0.1 --seed 0          # 10 % of the cells
  s2l-synth data/dsb --ratio 0.3 --seed 0 --rois --overwrite
  s2l-synth data/dsb --ratio 0.3 --background mixed  # background also beside the cells
  s2l-synth data/dsb --ratio 0.3 --protocol hand     # Fiji-like strokes: rois/ + scribbles/"""


def get_parser():
    """The ``s2l-synth`` argument parser."""
    parser = _cli.make_parser("s2l-synth", _DESCRIPTION, _EXAMPLE)
    parser.add_argument("data", metavar="DATA",
                        help="data folder holding masks/<stem>.tif instance label images")
    parser.add_argument("--ratio", type=float, required=True, default=argparse.SUPPRESS,
                        help="fraction of the cells to scribble, in (0, 1] (paper: 0.1 0.3 0.5 1)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed (each image gets its own, derived from it and its name)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="skeleton",
                        help="'skeleton': the paper's whole skeletons, 1 px wide; 'hand': short "
                        "strokes 1-3 px wide as drawn in Fiji, written as ROI sets and "
                        "converted like s2l-scribbles does")
    parser.add_argument("--background", choices=BACKGROUND_STYLES, default=None,
                        help="--protocol skeleton only: background scribbles on the "
                        "background's skeleton, midway between cells (the paper's; default: "
                        f"skeleton); 'near': {NEAR_DISTANCE} px outside the cells; 'mixed': half "
                        "of each, as a biologist draws them")
    parser.add_argument("--rois", action="store_true",
                        help="also write the scribbles as Fiji ROI sets in DATA/rois/<stem>.zip "
                        "(always done with --protocol hand)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing scribbles (and ROI sets with --rois or "
                        "--protocol hand)")
    return parser


def _main(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    ratio, seed = args.ratio, args.seed
    if not 0 < ratio <= 1:
        raise S2LError(
            f"--ratio {ratio:g}: must be in (0, 1], the fraction of cells to scribble "
            "(e.g. 0.1 for 10 %)"
        )
    if seed < 0:
        raise S2LError(f"--seed {seed}: must be 0 or more")
    hand = args.protocol == "hand"
    if hand and args.background is not None:
        raise S2LError(
            f"--background {args.background}: applies to --protocol skeleton only; "
            "--protocol hand places its own background strokes (half across the open "
            "background, half beside cells), so drop --background"
        )
    console = Console(stderr=True)
    with Progress(console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task("scribbling", total=None)
        result = synthesize_folder(
            Path(args.data), ratio=ratio, seed=seed, protocol=args.protocol,
            background=args.background or "skeleton", write_rois=args.rois,
            overwrite=args.overwrite, on_image=lambda _path: progress.advance(task),
        )
    n = len(result.scribbles)
    roi_note = f" and {n} ROI sets to {result.rois[0].parent}" if result.rois else ""
    plural = "s" if n > 1 else ""
    how = ", hand-drawn strokes" if hand else ""
    print(
        f"wrote {n} scribble mask{plural} to {result.scribble_dir}{roi_note} (ratio {ratio:g}, "
        f"seed {seed}{how}): {result.counts[BACKGROUND]} background and "
        f"{result.counts[FOREGROUND]} foreground scribble pixels"
    )
    return 0


def main(argv=None) -> int:
    """``s2l-synth``: synthetic scribbles for every label image of a data folder."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

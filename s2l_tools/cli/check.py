"""``s2l-check``: summarise a dataset folder and list every problem found.

The checks are :func:`s2l_tools.data.dataset.check_dataset`; this module
parses the command line and prints the report.
"""

from __future__ import annotations

from pathlib import Path

from s2l_tools.cli import _common as _cli
from s2l_tools.data.dataset import CHECK_COLUMNS, CHECK_LEGEND, CheckReport, check_dataset

__all__ = ["get_parser", "main"]

def get_parser():
    """The argument parser of ``s2l-check``."""
    parser = _cli.make_parser(
        "s2l-check",
        "Summarise a dataset (DATA/images, rois, scribbles, masks) and list every problem "
        "that s2l-scribbles or s2l-train would stop at (unconverted ROIs, no background "
        "stroke, mismatched names or sizes, ...).",
        "  s2l-check my_data            # exit 1 when problems are found",
    )
    parser.add_argument("data", type=Path, help="dataset folder (with images/ inside)")
    parser.add_argument("--channel", type=int, default=None,
                        help="channel to use for multi-channel images (0-based)")
    return parser


def print_report(report: CheckReport, *, root: Path) -> None:
    """Show a check report as a rich table and a list of problems."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"dataset {root}")
    for col in CHECK_COLUMNS:
        table.add_column(col, justify="left" if col in ("stem", "strokes") else "right",
                         overflow="fold")
    for row in report.rows:
        table.add_row(*(str(row[c]) for c in CHECK_COLUMNS))
    console.print(table)
    for col, meaning in CHECK_LEGEND.items():
        console.print(f"  {col}: {meaning}", highlight=False, soft_wrap=True)
    t = report.totals
    console.print(f"{t['images']} images, {t['scribbled_images']} with scribble masks "
                  f"({t['background_px']} background and {t['foreground_px']} foreground "
                  f"pixels), {t['unconverted_images']} with ROIs not converted yet",
                  highlight=False, soft_wrap=True)
    for n in report.notes:
        console.print(f"note: {n}", markup=False, highlight=False, soft_wrap=True)
    for p in report.problems:
        console.print("[red]problem:[/red] ", end="", markup=True)
        console.print(p, markup=False, highlight=False, soft_wrap=True)
    if not report.problems:
        console.print("no problems found: s2l-scribbles and s2l-train will take this dataset")


def _main(args) -> int:
    report = check_dataset(args.data, channel=args.channel)
    print_report(report, root=args.data)
    return 1 if report.problems else 0


def main(argv=None) -> int:
    """Entry point of ``s2l-check``; returns the exit status (1 when problems are found)."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""``s2l-check``: summarise a dataset folder and list every problem found.

The checks are :func:`s2l_tools.data.dataset.check_dataset`; this module
parses the command line and prints the report.
"""

from __future__ import annotations

from pathlib import Path

from s2l_tools.cli import _common as _cli
from s2l_tools.data.dataset import CheckReport, check_dataset

__all__ = ["get_parser", "main"]

_COLUMNS = ("stem", "size", "channels", "dtype", "bg_px", "fg_px", "objects")


def get_parser():
    """The argument parser of ``s2l-check``."""
    parser = _cli.make_parser(
        "s2l-check",
        "Summarise a dataset (DATA/images, rois, scribbles, masks) and list every problem.",
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
    for col in _COLUMNS:
        table.add_column(col, justify="left" if col == "stem" else "right")
    for row in report.rows:
        table.add_row(*(str(row[c]) for c in _COLUMNS))
    console.print(table)
    t = report.totals
    console.print(f"{t['images']} images, {t['scribbled_images']} with scribbles, "
                  f"{t['background_px']} background and {t['foreground_px']} foreground "
                  "scribbled pixels")
    for p in report.problems:
        console.print(f"[red]problem:[/red] {p}", markup=True, highlight=False)
    if not report.problems:
        console.print("no problems found")


def _main(args) -> int:
    report = check_dataset(args.data, channel=args.channel)
    print_report(report, root=args.data)
    return 1 if report.problems else 0


def main(argv=None) -> int:
    """Entry point of ``s2l-check``; returns the exit status (1 when problems are found)."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""``s2l-eval``: score predicted label images against ground truth.

The scoring is :mod:`s2l_tools.evaluation.evaluate`; this module parses the
command line, prints the table and says where the scores went.
"""

from __future__ import annotations

import sys
from pathlib import Path

from s2l_tools.cli import _common as _cli
from s2l_tools.evaluation.evaluate import (
    METRICS,
    check_outputs,
    evaluate_folders,
    output_paths,
    write_scores,
)

__all__ = ["get_parser", "main"]


def get_parser():
    """The argument parser of ``s2l-eval``."""
    parser = _cli.make_parser(
        "s2l-eval",
        "Score predicted label images against ground truth (foreground IoU, instance "
        "mDice, F1 and AP at IoU > 0.5), paired by file stem.\n"
        "A prediction may be named <stem>.tif or <stem>_labels.tif (.tiff, .png too); "
        "s2l-predict's <stem>_prob.tif files are skipped.",
        "s2l-eval --pred runs/exp1/pred --truth data/test/labels --json runs/exp1/scores.json",
    )
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted label images")
    parser.add_argument("--truth", required=True, type=Path, help="folder of ground-truth label images")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="summary JSON (means and stds over images) (default: PRED/scores.json)",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="per-image scores (default: the JSON path with .csv, e.g. PRED/scores.csv)",
    )
    return parser


def _print_table(rows: list[dict], summary: dict, *, max_rows: int = 50) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"s2l-eval: {summary['n_images']} image(s)")
    table.add_column("image")
    for key in METRICS:
        table.add_column(key, justify="right")
    for key in ("n_true", "n_pred"):
        table.add_column(key, justify="right")
    for row in rows[:max_rows]:
        table.add_row(
            row["stem"],
            *(f"{row[k]:.4f}" for k in METRICS),
            str(row["n_true"]),
            str(row["n_pred"]),
        )
    if len(rows) > max_rows:
        table.add_row(f"... {len(rows) - max_rows} more (see the CSV)", *[""] * 6)
    table.add_section()
    table.add_row(
        "mean ± std",
        *(f"{summary[k]:.4f} ± {summary[k + '_std']:.4f}" for k in METRICS),
        str(summary["n_true"]),
        str(summary["n_pred"]),
    )
    Console(file=sys.stdout, width=max(120, Console(file=sys.stdout).width)).print(table)


def _main(args) -> int:
    json_path, csv_path = output_paths(args.pred, json_path=args.json, csv_path=args.csv)
    rows, summary = evaluate_folders(args.pred, args.truth)
    check_outputs(json_path, csv_path, inputs=(args.pred, args.truth))
    _print_table(rows, summary)
    write_scores(rows, summary, json_path=json_path, csv_path=csv_path)
    print(f"wrote {csv_path} and {json_path}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    """Entry point of ``s2l-eval``; returns the exit status."""
    return _cli.run(_main, get_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

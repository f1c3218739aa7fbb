"""Score predicted label images against ground truth (the work of ``s2l-eval``).

Label images are paired by file stem: ``truth/<stem>.tif`` with
``pred/<stem>.tif`` or ``pred/<stem>_labels.tif`` (``.tif``, ``.tiff`` and
``.png`` are read; ``pred/<stem>_prob.tif``, the probability map of
``s2l-predict --prob``, is skipped). Each pair is scored with
:func:`s2l_tools.evaluation.metrics.score_pair`
(foreground IoU, instance mDice, F1 and DSB2018 AP at IoU > 0.5); the means
and standard deviations over images form the summary. Predictions are scored
as given (post-processing happens in ``s2l-predict``). The command line is
:mod:`s2l_tools.cli.evaluate`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from s2l_tools.io.atomic import atomic_path, write_csv_atomic
from s2l_tools.errors import S2LError, S2LWarning
from s2l_tools.io.images import LABEL_SUFFIXES, read_labels
from s2l_tools.evaluation.metrics import score_pair

__all__ = ["evaluate_folders", "output_paths", "check_outputs", "write_scores", "METRICS",
           "COLUMNS"]

#: summary metrics (means over images, with ``<name>_std``)
METRICS = ("iou", "mdice", "f1_50", "ap_50")
#: per-image CSV columns
COLUMNS = ("stem", "iou", "mdice", "f1_50", "ap_50", "n_true", "n_pred", "tp", "fp", "fn")
PRED_SUFFIX = "_labels"
#: ``s2l-predict --prob`` writes ``<stem>_prob.tif`` beside the labels: skipped on the pred side
PROB_SUFFIX = "_prob"


def _list_labels(folder: Path, role: str, *, strip_suffix: bool) -> dict[str, Path]:
    """Map stem -> file for the label images in ``folder``."""
    if not folder.exists():
        raise S2LError(f"{folder}: {role} folder does not exist; check the path given to --{role}")
    if not folder.is_dir():
        raise S2LError(f"{folder}: {role} path is not a folder; pass the folder of label images")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in LABEL_SUFFIXES:
            continue
        stem = path.stem
        if strip_suffix and stem.endswith(PROB_SUFFIX) and len(stem) > len(PROB_SUFFIX):
            continue  # s2l-predict --prob's probability map, not labels
        if strip_suffix and stem.endswith(PRED_SUFFIX) and len(stem) > len(PRED_SUFFIX):
            stem = stem[: -len(PRED_SUFFIX)]
        if stem in found:
            raise S2LError(
                f"{folder}: both {found[stem].name} and {path.name} are labels for image "
                f"'{stem}'; keep only one of them"
            )
        found[stem] = path
    if not found:
        raise S2LError(
            f"{folder}: no label images (.tif, .tiff, .png) in the {role} folder; "
            f"check the path given to --{role}"
        )
    return found


def _few(names, n: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def _summarize(rows: list[dict]) -> dict:
    summary: dict = {}
    for key in METRICS:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        summary[key] = float(values.mean()) if values.size else math.nan
        summary[f"{key}_std"] = float(values.std()) if values.size else math.nan
    summary["n_images"] = len(rows)
    for key in ("n_true", "n_pred", "tp", "fp", "fn"):
        summary[key] = int(sum(r[key] for r in rows))
    return summary


def evaluate_folders(pred_dir: str | os.PathLike, truth_dir: str | os.PathLike):
    """Score every predicted label image against its ground truth.

    Parameters
    ----------
    pred_dir : path
        Folder of predicted label images ``<stem>.tif`` or
        ``<stem>_labels.tif`` (``.tiff``, ``.png`` too).
    truth_dir : path
        Folder of ground-truth label images ``<stem>.tif`` (``.tiff``,
        ``.png``).

    Returns
    -------
    rows : list of dict
        One per common stem, sorted by stem: ``stem`` plus the keys of
        :func:`s2l_tools.evaluation.metrics.score_pair`.
    summary : dict
        ``iou``, ``mdice``, ``f1_50``, ``ap_50`` (means over images, each
        image weighted equally), ``<metric>_std`` (population standard
        deviation over images), ``n_images`` and the totals ``n_true``,
        ``n_pred``, ``tp``, ``fp``, ``fn``.

    Raises
    ------
    S2LError
        A folder is missing or has no label images, no stem is in both,
        a file cannot be read, or a pair's shapes differ.

    Warns
    -----
    S2LWarning
        Stems present on one side only (they are not scored).
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    preds = _list_labels(pred_dir, "pred", strip_suffix=True)
    truths = _list_labels(truth_dir, "truth", strip_suffix=False)
    common = sorted(set(preds) & set(truths))
    if not common:
        raise S2LError(
            f"{pred_dir}: no image in common with {truth_dir} (pred: {_few(preds)}; "
            f"truth: {_few(truths)}); name predictions <stem>.tif or <stem>_labels.tif "
            "after the ground-truth files"
        )
    no_truth = set(preds) - set(truths)
    no_pred = set(truths) - set(preds)
    if no_pred:
        warnings.warn(
            f"{pred_dir}: no prediction for {len(no_pred)} ground-truth image(s) "
            f"({_few(no_pred)}); they are not scored",
            S2LWarning,
            stacklevel=2,
        )
    if no_truth:
        warnings.warn(
            f"{truth_dir}: no ground truth for {len(no_truth)} predicted image(s) "
            f"({_few(no_truth)}); they are not scored",
            S2LWarning,
            stacklevel=2,
        )
    rows = []
    for stem in common:
        pred = read_labels(preds[stem])
        true = read_labels(truths[stem])
        if pred.shape != true.shape:
            raise S2LError(
                f"{preds[stem]}: shape {pred.shape} differs from the ground truth "
                f"{truths[stem]} {true.shape}; predict on the same images as the ground truth"
            )
        rows.append({"stem": stem, **score_pair(pred, true)})
    return rows, _summarize(rows)


def output_paths(pred_dir: str | os.PathLike, *, json_path: str | os.PathLike | None = None,
                 csv_path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Where :func:`write_scores` puts the summary JSON and the per-image CSV.

    Parameters
    ----------
    pred_dir : path-like
        Folder of predicted label images.
    json_path : path-like, optional
        The summary JSON; default ``pred_dir/scores.json``.
    csv_path : path-like, optional
        The per-image CSV; default ``json_path`` with the suffix ``.csv``.

    Returns
    -------
    json_path, csv_path : Path

    Raises
    ------
    S2LError
        Both name the same file.
    """
    json_path = Path(json_path) if json_path is not None else Path(pred_dir) / "scores.json"
    csv_path = Path(csv_path) if csv_path is not None else json_path.with_suffix(".csv")
    if json_path.resolve() == csv_path.resolve():
        raise S2LError(f"{json_path}: --json and --csv name the same file; give two files")
    return json_path, csv_path


def check_outputs(json_path: str | os.PathLike, csv_path: str | os.PathLike, *,
                  inputs: tuple[str | os.PathLike, ...]) -> None:
    """Refuse output files that would overwrite an input label image or are folders.

    Parameters
    ----------
    json_path, csv_path : path-like
        The files :func:`write_scores` will write.
    inputs : tuple of path-like
        The folders read (predictions and ground truth).

    Raises
    ------
    S2LError
        An output is one of the label images in ``inputs``, or a folder.
    """
    label_files = {
        p.resolve()
        for folder in map(Path, inputs)
        for p in folder.iterdir()
        if p.suffix.lower() in LABEL_SUFFIXES
    }
    for path, flag in ((Path(json_path), "--json"), (Path(csv_path), "--csv")):
        if path.resolve() in label_files:
            raise S2LError(f"{path}: {flag} would overwrite an input label image; "
                           "choose another file")
        if path.exists() and path.is_dir():
            raise S2LError(f"{path}: {flag} is a folder; give a file name")


def write_scores(rows: list[dict], summary: dict, *, json_path: str | os.PathLike,
                 csv_path: str | os.PathLike) -> None:
    """Write the per-image CSV and the summary JSON (each atomically).

    Parameters
    ----------
    rows, summary
        As returned by :func:`evaluate_folders`.
    json_path : path-like
        The summary (indented JSON).
    csv_path : path-like
        One row per image with the columns :data:`COLUMNS` (metrics with 6
        decimals).
    """
    write_csv_atomic(csv_path, COLUMNS,
                     ({k: (f"{row[k]:.6f}" if k in METRICS else row[k]) for k in COLUMNS}
                      for row in rows))
    with atomic_path(json_path) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

"""What a run reports: metrics.csv, curves.png, pseudo-label panels, the epoch line.

Each writer takes the run's history (one dict per epoch, as
:func:`s2l_tools.training.engine.fit` builds it) or its data and EMA store,
and writes one file atomically; file names are :mod:`s2l_tools.training.rundir`'s.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from s2l_tools import labels as L
from s2l_tools.io.atomic import write_bytes_atomic
from s2l_tools.training.config import TrainConfig

if TYPE_CHECKING:
    from s2l_tools.training.data import TrainingData

__all__ = ["write_metrics_csv", "plot_curves", "plot_panel", "epoch_summary"]


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """One row per epoch (columns: every key seen, in order of appearance)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_bytes_atomic(path, buf.getvalue().encode())


def plot_curves(path: Path, history: list[dict]) -> None:
    """Loss and score curves as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ep = [r["epoch"] for r in history]
    for key in ("loss", "l_sp", "l_up"):
        axes[0].plot(ep, [r.get(key, np.nan) for r in history], label=key)
    axes[0].set_xlabel("epoch"), axes[0].set_title("losses"), axes[0].legend()
    for key in ("coverage", "train_iou", "val_iou", "val_mdice", "val_f1_50"):
        pts = [(r["epoch"], r[key]) for r in history if r.get(key) not in (None, "")]
        if pts:
            axes[1].plot(*zip(*pts), marker=".", label=key)
    axes[1].set_xlabel("epoch"), axes[1].set_ylim(0, 1.02), axes[1].set_title("scores")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def plot_panel(path: Path, data: TrainingData, store, *, threshold: float, n: int,
               epoch: int, indices: list[int] | None = None) -> None:
    """Image / scribbles / filtered pseudo-label for a few images (paper Fig. 1).

    Pseudo-label colours: white cell, black background, red below the
    consistency threshold (ignored). Scribbles: blue cell, yellow background.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    indices = list(range(len(data.images)) if indices is None else indices)[:n]
    n = len(indices)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    for row, r in enumerate(indices):
        img = data.images[r]
        show = img[0] if img.shape[0] != 3 else np.moveaxis(img, 0, -1)
        axes[row, 0].imshow(np.clip(show, 0, 1), cmap="gray")
        scr = data.scribbles[r]
        rgb = np.zeros(scr.shape + (3,), np.float32)
        rgb[scr == L.FOREGROUND] = (0.2, 0.4, 1.0)
        rgb[scr == L.BACKGROUND] = (1.0, 0.9, 0.1)
        axes[row, 1].imshow(rgb)
        y = store.get(r)
        pl = np.zeros(scr.shape + (3,), np.float32)
        pl[:] = (0.85, 0.1, 0.1)
        pl[y > threshold] = 1.0
        pl[(1 - y) > threshold] = 0.0
        axes[row, 2].imshow(pl)
        for c, title in enumerate(("image", "scribbles", f"pseudo-label, epoch {epoch}")):
            axes[row, c].set_title(f"{data.stems[r]}: {title}" if c == 0 else title, fontsize=8)
            axes[row, c].axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def epoch_summary(row: dict, cfg: TrainConfig) -> str:
    """One line per epoch for the console: losses, pseudo-label coverage, scores, time."""
    parts = [f"epoch {row['epoch']:>4}/{cfg.epochs}", f"loss {row.get('loss', 0):.4f}",
             f"L_sp {row.get('l_sp', 0):.4f}"]
    if cfg.method in ("s2l", "pseudo"):
        parts += [f"L_up {row.get('l_up', 0):.4f}",
                  f"pseudo {100 * row.get('coverage', 0):5.1f}%"]
    for key, name in (("train_iou", "train IoU"), ("val_iou", "val IoU"),
                      ("val_mdice", "val mDice"), ("val_f1_50", "val F1")):
        if key in row:
            parts.append(f"{name} {row[key]:.3f}")
    parts.append(f"{row.get('epoch_s', 0):.1f}s")
    return " | ".join(parts)

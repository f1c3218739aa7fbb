"""What a run reports: metrics.csv, curves.png, pseudo-label panels, the epoch line.

Each writer takes the run's history (one dict per epoch, as
:func:`s2l_tools.training.engine.fit` builds it) or its data and EMA store,
and writes one file atomically; file names are :mod:`s2l_tools.training.rundir`'s.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from s2l_tools import labels as L
from s2l_tools.io.atomic import write_bytes_atomic, write_csv_atomic
from s2l_tools.training.config import TrainConfig

if TYPE_CHECKING:
    from s2l_tools.training.data import TrainingData

__all__ = ["write_metrics_csv", "plot_curves", "plot_panel", "epoch_summary", "holdout_split",
           "holdout_result"]


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """One row per epoch (columns: every key seen, in order of appearance)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    write_csv_atomic(path, keys, ({k: (f"{v:.6g}" if isinstance(v, float) else v)
                                   for k, v in row.items()} for row in history))


#: Class colours of the panels, as in the Fiji docs' colour map (``#ffff00=fg #00ffff=bg``).
CELL_COLOR = (1.0, 1.0, 0.0)          # yellow, #ffff00
BACKGROUND_COLOR = (0.0, 1.0, 1.0)    # cyan, #00ffff
IGNORED_COLOR = (0.35, 0.35, 0.35)    # grey: no pseudo-label there (not sure enough)

#: What each curve of ``curves.png`` is, in words (metrics.csv column -> label).
CURVE_LABELS = {
    "loss": "total loss",
    "l_sp": "loss on strokes (scribbled pixels)",
    "l_up": "loss on pseudo-labels",
    "l_crf": "CRF loss (boundaries on image edges)",
    "coverage": "share of pixels pseudo-labelled",
    "train_iou": "IoU on the training masks",
    "holdout_fg": "held-out strokes right: foreground",
    "holdout_bg": "held-out strokes right: background",
    "val_iou": "validation IoU (cells vs background)",
    "val_mdice": "validation mean Dice per cell",
    "val_f1_50": "validation F1 (cells found, IoU > 0.5)",
}


def _curves_figure(history: list[dict], *, warmup_epochs: int | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ep = [r["epoch"] for r in history]
    for key in ("loss", "l_sp", "l_up", "l_crf"):
        if any(key in r for r in history):
            axes[0].plot(ep, [r.get(key, np.nan) for r in history], label=CURVE_LABELS[key])
    axes[0].set_xlabel("epoch"), axes[0].set_ylabel("loss (lower is better)")
    axes[0].set_title("training losses")
    for key in ("coverage", "train_iou", "holdout_fg", "holdout_bg", "val_iou", "val_mdice",
                "val_f1_50"):
        pts = [(r["epoch"], r[key]) for r in history if r.get(key) not in (None, "")]
        if pts:
            axes[1].plot(*zip(*pts), marker=".", label=CURVE_LABELS[key])
    axes[1].set_xlabel("epoch"), axes[1].set_ylim(0, 1.02)
    axes[1].set_title("pseudo-labels and scores (higher is better)")
    if warmup_epochs and ep and warmup_epochs < max(ep):
        for ax in axes:
            ax.axvline(warmup_epochs + 0.5, color="0.4", linestyle="--", linewidth=1,
                       label=f"end of warm-up (epoch {warmup_epochs}): pseudo-labels from here")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_curves(path: Path, history: list[dict], *, warmup_epochs: int | None = None) -> None:
    """Loss and score curves as a PNG, labelled in words.

    Parameters
    ----------
    path : Path
        The PNG to write (atomically).
    history : list of dict
        One row per epoch (``epoch``, ``loss``, ``l_sp``, ``l_up``, ``coverage``, scores).
    warmup_epochs : int, optional
        Draw a dashed line where the warm-up ends (the pseudo-label loss starts).
    """
    import matplotlib.pyplot as plt

    fig = _curves_figure(history, warmup_epochs=warmup_epochs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def _short(name: str, width: int = 34) -> str:
    """A file name cut in the middle to ``width`` characters (its start and end kept)."""
    if len(name) <= width:
        return name
    keep = width - 3
    return name[: (keep + 1) // 2] + "..." + name[len(name) - keep // 2:]


def _panel_figure(data: TrainingData, store, *, threshold: float, n: int, epoch: int,
                  indices: list[int] | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    indices = list(range(len(data.images)) if indices is None else indices)[:n]
    n = len(indices)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n + 0.9), squeeze=False)
    for row, r in enumerate(indices):
        img = data.images[r]
        show = np.clip(img[0] if img.shape[0] != 3 else np.moveaxis(img, 0, -1), 0, 1)
        gray = show if show.ndim == 2 else show.mean(axis=-1)
        axes[row, 0].imshow(show, cmap="gray", vmin=0, vmax=1)
        scr = data.scribbles[r]
        rgb = np.repeat(0.6 * gray[..., None], 3, axis=-1).astype(np.float32)  # dimmed image
        rgb[scr == L.FOREGROUND] = CELL_COLOR
        rgb[scr == L.BACKGROUND] = BACKGROUND_COLOR
        axes[row, 1].imshow(rgb)
        if store is not None and store.initialized(r):
            y = store.get(r)
            pl = np.empty(scr.shape + (3,), np.float32)
            pl[:] = IGNORED_COLOR
            pl[y > threshold] = CELL_COLOR
            pl[(1 - y) > threshold] = BACKGROUND_COLOR
            axes[row, 2].imshow(pl)
        else:
            axes[row, 2].imshow(np.full(scr.shape + (3,), IGNORED_COLOR, np.float32))
            axes[row, 2].text(0.5, 0.5, "no pseudo-label map\n(warm-up, or a method\n"
                              "without one: strokes only)",
                              ha="center", va="center", fontsize=8, color="white",
                              transform=axes[row, 2].transAxes)
        third = f"pseudo-label, epoch {epoch}"
        for c, title in enumerate((_short(data.stems[r]), "scribbles", third)):
            axes[row, c].set_title(title, fontsize=8)
            axes[row, c].axis("off")
    handles = [Patch(color=CELL_COLOR, label="cell (foreground, group 1)"),
               Patch(color=BACKGROUND_COLOR, label="background (group 2)"),
               Patch(color=IGNORED_COLOR,
                     label=f"ignored: prediction less sure than tau = {threshold:g}")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.9 / (3 * n + 0.9), 1, 1))
    return fig


def plot_panel(path: Path, data: TrainingData, store, *, threshold: float, n: int,
               epoch: int, indices: list[int] | None = None) -> None:
    """Image / scribbles / filtered pseudo-label for a few images (paper Fig. 1).

    Colours, as in the Fiji docs' colour map and shown in a legend under the
    panels: yellow cell (foreground), cyan background; in the pseudo-label,
    grey where the EMA prediction is less sure than the consistency
    threshold (those pixels are ignored). Scribbles are drawn over the
    dimmed image. Long image names are cut in the middle.

    Parameters
    ----------
    path : Path
        The PNG to write (atomically).
    data : TrainingData
        The images and scribble masks.
    store : EmaStore or None
        The EMA predictions; an image without one (warm-up) says so.
    threshold : float
        The consistency threshold tau.
    n : int
        Images shown (the first ``n`` of ``indices``).
    epoch : int
        Shown in the headings.
    indices : list of int, optional
        The images to choose from (default: all).
    """
    import matplotlib.pyplot as plt

    fig = _panel_figure(data, store, threshold=threshold, n=n, epoch=epoch, indices=indices)
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
        if key == "train_iou" and ("holdout_fg" in row or "holdout_bg" in row):
            fg, bg = (_percent(row[k], sep="") if k in row else "n/a"
                      for k in ("holdout_fg", "holdout_bg"))
            parts.append(f"held-out fg {fg} bg {bg}")
    parts.append(f"{row.get('epoch_s', 0):.1f}s")
    return " | ".join(parts)


def auto_threshold_line(cut: float, *, floor: float, network: float, at_cut: float,
                        forest: float, seconds: float) -> str:
    """The line saying which mask threshold ``--auto-threshold`` saved in the model, and why.

    Examples
    --------
    >>> auto_threshold_line(0.62, floor=0.5, network=0.054, at_cut=0.031, forest=0.031,
    ...                     seconds=2.0)
    'mask threshold 0.62 (--auto-threshold): at 0.5 the network calls 5.4 % of the training \
pixels cell, the forest on the same strokes 3.1 %; at 0.62 it calls 3.1 % (2.0 s)'

    A forest share under :data:`~s2l_tools.training.auto_threshold.MIN_KEPT` of the
    network's is not followed all the way, and the line says so.
    """
    from s2l_tools.training.auto_threshold import MIN_KEPT

    shown = f"{cut:.4g}" if cut < 0.999 else f"{cut:.7f}"  # not a false "1"
    where = (f"at {shown} it calls {100 * at_cut:.1f} %" if cut > floor else
             f"no more than the forest: kept at {floor:g}")
    if cut > floor and forest < MIN_KEPT * network:
        where += (f", {100 * MIN_KEPT:.0f} % of its own, the least the threshold keeps (the forest "
                  "found almost no cell: are there cell strokes on cells in most images?)")
    return (f"mask threshold {shown} (--auto-threshold): at {floor:g} the network calls "
            f"{100 * network:.1f} % of the training pixels cell, the forest on the same strokes "
            f"{100 * forest:.1f} %; {where} ({seconds:.1f} s)")


def _percent(share: float, sep: str = " ") -> str:
    """``96 %``; a share just short of 1 keeps a decimal (``99.7 %``, never a false 100 %)."""
    p = 100 * share
    return f"{p:.1f}{sep}%" if 99.5 <= p < 100 else f"{p:.0f}{sep}%"


def holdout_split(stroke_counts: dict[int, tuple[int, int]]) -> str:
    """The line saying which strokes a run holds out (``TrainingData.stroke_counts``)."""
    names = {L.FOREGROUND: "foreground", L.BACKGROUND: "background"}
    held = sum(h for h, _ in stroke_counts.values())
    total = sum(n for _, n in stroke_counts.values())
    parts = [f"{names.get(c, f'class {c - 1}')} {h} of {n}" if h else
             f"{names.get(c, f'class {c - 1}')} none of {n} (too few to spare)"
             for c, (h, n) in sorted(stroke_counts.items(), reverse=True)]
    return (f"held-out strokes: {held} of {total} kept out of training to measure the model "
            f"({', '.join(parts)})")


def holdout_result(result: dict, cfg: TrainConfig) -> str | None:
    """The end-of-run line on the held-out strokes, from the last epoch's metrics.

    ``result`` is what :func:`s2l_tools.training.engine.fit` returns (``holdout_fg``,
    ``holdout_bg``, ``holdout_strokes_out``, ``holdout_strokes_all``). None when the
    run trained no epoch (a finished run resumed).
    """
    if cfg.method == "full":
        return "held-out strokes: off (--method full trains on full masks)"
    if not cfg.holdout_strokes:
        return "held-out strokes: off (--holdout-strokes 0)" + (
            "; --val measured the model" if cfg.val else
            "; nothing measured the model: give --holdout-strokes 0.1, or --val with full masks")
    if "holdout_strokes_all" not in result:
        return None
    held, total = int(result["holdout_strokes_out"]), int(result["holdout_strokes_all"])
    if not held:
        return (f"held-out strokes: n/a (none of {total} strokes could be held out: each "
                "image keeps one of each class); draw more strokes, or give --val with full "
                "masks, to measure the model")
    head = f"held-out strokes ({held} of {total} strokes, never trained on): "
    fg, bg = result.get("holdout_fg"), result.get("holdout_bg")
    if fg is not None and bg is not None:
        return (head + f"{_percent(fg)} of foreground and {_percent(bg)} of background "
                "pixels right")
    for share, name, other in ((fg, "foreground", "background"),
                               (bg, "background", "foreground")):
        if share is not None:
            return (head + f"{_percent(share)} of {name} pixels right; {other} n/a (too few "
                    f"{other} strokes to hold any out)")
    return head + "not measured"

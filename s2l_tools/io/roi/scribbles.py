"""ROIs as scribbles: the class of an ROI, and the scribble mask of a set of ROIs.

An ROI's class comes from its ROI group (:data:`~s2l_tools.labels.GROUP_FOREGROUND`
= 1, :data:`~s2l_tools.labels.GROUP_BACKGROUND` = 2), else its name, else its
stroke colour (:func:`roi_class`); :func:`rois_to_scribbles` paints the ROIs,
rasterised exactly as ImageJ draws them (:mod:`s2l_tools.io.roi.rasterize`),
into a scribble mask (:mod:`s2l_tools.labels`: 1 background, 2 foreground).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from roifile import ImagejRoi

from s2l_tools.errors import S2LError, S2LWarning
from s2l_tools.io.roi.files import roi_label
from s2l_tools.io.roi.rasterize import check_supported, count_inside_outside, rasterize_roi
from s2l_tools.labels import (
    BACKGROUND_CLASS,
    FOREGROUND_CLASS,
    GROUP_BACKGROUND,
    GROUP_FOREGROUND,
    GROUP_SUGGESTION,
    class_to_code,
)

__all__ = ["DEFAULT_GROUPS", "DEFAULT_NAMES", "roi_class", "rois_to_scribbles"]

#: ROI group -> class (ImageJ's Edit > Selection > Properties > Group).
DEFAULT_GROUPS: dict[int, int] = {GROUP_FOREGROUND: FOREGROUND_CLASS, GROUP_BACKGROUND: BACKGROUND_CLASS}
#: Name regex (matched at the start, case-insensitive) -> class.
DEFAULT_NAMES: dict[str, int] = {
    r"(fg|cell|fore|nuc)": FOREGROUND_CLASS,
    r"(bg|back)": BACKGROUND_CLASS,
}


def _normalize_color(color: str) -> str:
    c = color.strip().lower()
    if not c.startswith("#"):
        c = "#" + c
    if len(c) == 9:  # #aarrggbb
        c = "#" + c[3:]
    if not re.fullmatch(r"#[0-9a-f]{6}", c):
        raise ValueError(f"colour {color!r} is not '#rrggbb'")
    return c


def roi_class(
    roi: ImagejRoi,
    *,
    groups: Mapping[int, int] | None = None,
    names: Mapping[str, int] | None = None,
    colors: Mapping[str, int] | None = None,
) -> int | None:
    """Class index of an ROI (0 background, 1 foreground), or None.

    The first rule that matches decides:

    1. its ROI group (Edit > Selection > Properties), looked up in ``groups``
       (default :data:`DEFAULT_GROUPS`: group 1 foreground, group 2 background);
    2. its name, against the regexes in ``names`` (matched at the start of the
       name, case-insensitive; default :data:`DEFAULT_NAMES`: ``fg``, ``cell``,
       ``fore...``, ``nuc...`` foreground; ``bg``, ``back...`` background).
       ImageJ's automatic names (``0012-0034``) match nothing;
    3. its stroke colour, looked up in ``colors`` (``{'#ff0000': 1}``; alpha is
       ignored; default: no colour rule).

    Parameters
    ----------
    roi : roifile.ImagejRoi
    groups : mapping int -> int, optional
    names : mapping str -> int, optional
        Regex -> class, tried in order.
    colors : mapping str -> int, optional
        ``'#rrggbb'`` -> class.

    Returns
    -------
    k : int or None
    """
    groups = DEFAULT_GROUPS if groups is None else groups
    names = DEFAULT_NAMES if names is None else names
    if roi.group and roi.group in groups:
        return int(groups[roi.group])
    if roi.name:
        for pattern, k in names.items():
            if re.match(pattern, roi.name, flags=re.IGNORECASE):
                return int(k)
    if colors:
        hexcolor = roi.hexcolor(roi.stroke_color)
        if hexcolor is not None:
            table = {_normalize_color(c): k for c, k in colors.items()}
            if hexcolor.lower() in table:
                return int(table[hexcolor.lower()])
    return None


def rois_to_scribbles(
    rois: Sequence[ImagejRoi],
    shape: tuple[int, int],
    *,
    groups: Mapping[int, int] | None = None,
    names: Mapping[str, int] | None = None,
    colors: Mapping[str, int] | None = None,
    skip_unclassified: bool = False,
    source: str | os.PathLike | None = None,
) -> np.ndarray:
    """Rasterise classified ROIs into a scribble mask.

    Each ROI gets its class from :func:`roi_class` and marks the pixels of
    :func:`rasterize_roi` with the code ``class + 1`` (1 background,
    2 foreground). ROIs of group :data:`~s2l_tools.labels.GROUP_SUGGESTION`
    (``s2l-suggest``'s regions, saved with the strokes drawn in them) are
    never scribbles: they are left out.

    **Overlap rule: the later ROI wins**, in list order (the ROI Manager's
    order), as if each ROI were painted with Edit > Fill in turn. Where ROIs of
    different classes overlap, an :class:`S2LWarning` says how many pixels and
    which ROIs, since a pixel that is both background and foreground is
    probably a slip of the brush.

    Parameters
    ----------
    rois : sequence of roifile.ImagejRoi
    shape : (H, W) tuple of int
    groups, names, colors : mapping, optional
        Passed to :func:`roi_class`.
    skip_unclassified : bool
        Skip (with a warning) ROIs without a class instead of refusing them.
    source : str or path-like, optional
        File name used in messages.

    Returns
    -------
    mask : (H, W) uint8 ndarray
        0 unlabeled, 1 background, 2 foreground.

    Raises
    ------
    S2LError
        An ROI without a class (unless ``skip_unclassified``), or an ROI type
        that cannot be a scribble (text, arrow, ...).

    Warns
    -----
    S2LWarning
        An ROI partly outside the image (clipped), entirely outside (skipped),
        skipped unclassified ROIs, and overlaps between classes.
    """
    where = os.fspath(source) if source is not None else "ROIs"
    h, w = (int(s) for s in shape[:2])
    out = np.zeros((h, w), dtype=np.uint8)
    owner = np.full((h, w), -1, dtype=np.int64)
    conflicts: dict[tuple[int, int], int] = {}
    for i, roi in enumerate(rois):
        if roi.group == GROUP_SUGGESTION:  # an s2l-suggest region saved beside the strokes
            continue
        label = roi_label(roi, i)
        k = roi_class(roi, groups=groups, names=names, colors=colors)
        if k is None:
            msg = (
                f"{where}: {label} has no class; set its group (Edit > Selection > Properties: "
                "group 1 foreground, group 2 background) or name it 'fg...'/'bg...'"
            )
            if skip_unclassified:
                warnings.warn(msg.split(";")[0] + "; skipped", S2LWarning, stacklevel=2)
                continue
            raise S2LError(msg)
        code = class_to_code(k)
        check_supported(roi, where)
        inside, outside = count_inside_outside(roi, (h, w))
        if inside == 0:
            warnings.warn(f"{where}: {label} lies entirely outside the {w}x{h} image; skipped", S2LWarning, stacklevel=2)
            continue
        if outside:
            warnings.warn(
                f"{where}: {label} lies partly outside the {w}x{h} image ({outside} pixels); clipped",
                S2LWarning,
                stacklevel=2,
            )
        m = rasterize_roi(roi, (h, w))
        prev = out[m]
        clash = (prev != 0) & (prev != code)
        if clash.any():
            others = owner[m][clash]
            for j in np.unique(others).tolist():
                conflicts[(int(j), i)] = int((others == j).sum())
        out[m] = code
        owner[m] = i
    if conflicts:
        parts = ", ".join(
            f"{roi_label(rois[j], j)} and {roi_label(rois[i], i)}: {n} px" for (j, i), n in conflicts.items()
        )
        warnings.warn(
            f"{where}: ROIs of different classes overlap ({parts}); the later ROI wins there",
            S2LWarning,
            stacklevel=2,
        )
    return out


"""ImageJ ROIs <-> masks, pixel for pixel as ImageJ 1 (1.53t) makes them.

Reading and writing the ROI file format is left to :mod:`roifile`; this
package validates the files, decides which class an ROI belongs to and
rasterises ROIs exactly as ImageJ does, so that a scribble drawn in Fiji
covers the same pixels here. One job per module:

==========================================  =====================================
:mod:`s2l_tools.io.roi.files`               read RoiSet.zip / .roi / TIFF overlays
                                            (:func:`read_rois`, with size and
                                            zip-bomb guards); write a RoiSet.zip
                                            (:func:`write_roiset`, atomic)
:mod:`s2l_tools.io.roi.rasterize`           one ROI -> the pixels ImageJ marks
                                            (:func:`rasterize_roi`)
:mod:`s2l_tools.io.roi.scribbles`           class of an ROI (:func:`roi_class`),
                                            ROIs -> scribble mask
                                            (:func:`rois_to_scribbles`)
:mod:`s2l_tools.io.roi.outlines`            label image / scribble mask -> traced
                                            ROIs in a RoiSet.zip
                                            (:func:`labels_to_roiset`,
                                            :func:`scribbles_to_roiset`)
==========================================  =====================================

The public names of all four are importable from here
(``from s2l_tools.io.roi import read_rois``). The limits
:data:`~s2l_tools.io.roi.files.MAX_ZIP_MEMBERS` and
:data:`~s2l_tools.io.roi.files.MAX_ZIP_BYTES` are read from
:mod:`s2l_tools.io.roi.files` (set them there).
"""

from __future__ import annotations

from s2l_tools.io.roi.files import (
    MAX_ROI_BYTES,
    MAX_ZIP_BYTES,
    MAX_ZIP_MEMBERS,
    read_rois,
    roiset_member_names,
    write_roiset,
)
from s2l_tools.io.roi.outlines import labels_to_roiset, scribbles_to_roiset, trace_outlines
from s2l_tools.io.roi.rasterize import check_supported, rasterize_roi
from s2l_tools.io.roi.scribbles import DEFAULT_GROUPS, DEFAULT_NAMES, roi_class, rois_to_scribbles
from s2l_tools.labels import GROUP_BACKGROUND, GROUP_FOREGROUND

__all__ = [
    "DEFAULT_GROUPS",
    "DEFAULT_NAMES",
    "GROUP_BACKGROUND",
    "GROUP_FOREGROUND",
    "MAX_ROI_BYTES",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "check_supported",
    "labels_to_roiset",
    "rasterize_roi",
    "read_rois",
    "roi_class",
    "rois_to_scribbles",
    "roiset_member_names",
    "scribbles_to_roiset",
    "trace_outlines",
    "write_roiset",
]

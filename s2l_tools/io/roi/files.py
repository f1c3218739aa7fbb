"""Reading and writing ImageJ ROI files: RoiSet.zip, .roi, a TIFF's overlay.

The ROI format itself is :mod:`roifile`'s (``ImagejRoi.frombytes``,
``roifile.roiwrite``); this module adds the checks a file from elsewhere
needs (size and zip-bomb limits, unsafe member names, members that are not
ROIs) and one-line :class:`~s2l_tools.errors.S2LError` messages, and writes
atomically.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import roifile
from roifile import ImagejRoi

from s2l_tools.errors import S2LError, S2LWarning
from s2l_tools.io.atomic import atomic_path

__all__ = ["MAX_ROI_BYTES", "MAX_ZIP_BYTES", "MAX_ZIP_MEMBERS", "read_rois", "write_roiset"]

#: A RoiSet.zip with more members than this is refused (zip bomb guard).
MAX_ZIP_MEMBERS = 100_000
#: A RoiSet.zip whose members add up to more than this (uncompressed) is refused.
MAX_ZIP_BYTES = 1 << 30
#: Largest single .roi file or zip member read.
MAX_ROI_BYTES = 256 << 20

_MAGIC = b"Iout"


def roi_label(roi: ImagejRoi, index: int | None = None) -> str:
    """How messages name an ROI: ``ROI 'fg-1' (#3)`` or ``unnamed ROI``."""
    name = f"ROI {roi.name!r}" if roi.name else "unnamed ROI"
    return f"{name} (#{index})" if index is not None else name


# --------------------------------------------------------------------------- reading


def read_rois(path: str | os.PathLike) -> list[ImagejRoi]:
    """Read ImageJ ROIs from a RoiSet.zip, a single .roi file or an ImageJ TIFF.

    Parameters
    ----------
    path : path-like
        ``RoiSet.zip`` (as saved by the ROI Manager), a ``.roi`` file, or a
        ``.tif``/``.tiff`` whose ImageJ overlay (and selection) holds the ROIs.

    Returns
    -------
    rois : list of roifile.ImagejRoi
        In file order (the ROI Manager's order). A TIFF without an overlay
        gives an empty list; the caller decides whether that is an error.

    Raises
    ------
    S2LError
        Missing or unreadable file; a zip member that is not a ROI; a zip with
        unsafe member names ('..', absolute paths) or implausibly large (more
        than :data:`MAX_ZIP_MEMBERS` members or :data:`MAX_ZIP_BYTES` bytes);
        a RoiSet.zip without ROIs.
    """
    path = Path(path)
    if not path.is_file():
        raise S2LError(f"{path}: no such file; give a RoiSet.zip, a .roi file or an ImageJ TIFF")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _read_tiff_overlay(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as fh:
        data = fh.read(MAX_ROI_BYTES + 1)
    if len(data) > MAX_ROI_BYTES:
        raise S2LError(f"{path}: larger than {MAX_ROI_BYTES} bytes, not an ImageJ .roi file")
    if data[:4] != _MAGIC:
        raise S2LError(
            f"{path}: not a RoiSet.zip, .roi file or ImageJ TIFF; "
            "save ROIs from the ROI Manager with More > Save..."
        )
    return [_decode(data, f"{path}")]


def _one_line(exc: BaseException, limit: int = 120) -> str:
    """An exception as one short line (libraries' messages may span lines)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


class _RoifileLog(logging.Handler):
    """roifile's log lines (odd values in a ROI) as one-line S2LWarnings naming the file."""

    def __init__(self, where: str):
        super().__init__(logging.WARNING)
        self.where = where

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())[:160]
        warnings.warn(f"{self.where}: {text}; check this ROI in ImageJ", S2LWarning,
                      stacklevel=2)


@contextlib.contextmanager
def _roifile_log_as_warnings(where: str):
    log = logging.getLogger("roifile")
    handler, propagate = _RoifileLog(where), log.propagate
    log.addHandler(handler)
    log.propagate = False  # not also printed by logging's last-resort handler
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def _decode(data: bytes, where: str) -> ImagejRoi:
    if data[:4] != _MAGIC:
        raise S2LError(f"{where}: not an ImageJ ROI (no 'Iout' header); remove it or re-save the ROIs from ImageJ")
    try:
        with _roifile_log_as_warnings(where):
            roi = ImagejRoi.frombytes(data)
            if roi.composite:  # decoded lazily by roifile: a damaged path fails here
                ImagejRoi.path2coords(roi.multi_coordinates)
        return roi
    except Exception as exc:  # roifile raises ValueError/struct.error/IndexError on damage
        raise S2LError(f"{where}: damaged ImageJ ROI ({_one_line(exc)}); re-save the ROIs "
                       "from ImageJ") from None


def _unsafe_member_name(name: str) -> bool:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return ".." in parts


def _read_zip(path: Path) -> list[ImagejRoi]:
    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # noqa: BLE001 - BadZipFile, OSError, ValueError, EOFError, ...
        raise S2LError(f"{path}: unreadable zip file ({_one_line(exc)}); re-save the "
                       "RoiSet.zip from the ROI Manager") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            raise S2LError(
                f"{path}: {len(infos)} zip members, more than the {MAX_ZIP_MEMBERS} a RoiSet.zip may hold; "
                "this is not a RoiSet.zip (or a zip bomb)"
            )
        total = sum(info.file_size for info in infos)
        if total > MAX_ZIP_BYTES:
            raise S2LError(
                f"{path}: {total} bytes uncompressed, more than {MAX_ZIP_BYTES}; "
                "this is not a RoiSet.zip (or a zip bomb)"
            )
        rois = []
        for info in infos:
            name = info.filename
            if not name.strip():
                raise S2LError(f"{path}: a zip member without a name; this zip is damaged, "
                               "re-save the RoiSet.zip from the ROI Manager")
            if _unsafe_member_name(name):
                raise S2LError(
                    f"{path}: member {name!r} has an unsafe path (absolute or '..'); "
                    "refusing this zip, re-save the ROIs from the ROI Manager"
                )
            if info.is_dir():
                continue
            where = f"{path}: member {name!r}"
            if not name.lower().endswith(".roi"):
                raise S2LError(f"{where}: not an ImageJ .roi file; remove it from the zip")
            if info.file_size > MAX_ROI_BYTES:
                raise S2LError(f"{where}: larger than {MAX_ROI_BYTES} bytes, not an ImageJ ROI")
            try:
                with zf.open(info) as fh:
                    data = fh.read(MAX_ROI_BYTES + 1)
            except Exception as exc:  # noqa: BLE001 - zlib.error, unsupported zip versions, ...
                raise S2LError(f"{where}: unreadable ({type(exc).__name__}: {_one_line(exc)}); "
                               "re-save the RoiSet.zip from the ROI Manager") from None
            rois.append(_decode(data, where))
    if not rois:
        raise S2LError(f"{path}: the RoiSet.zip holds no ROIs; add ROIs to the ROI Manager and save again")
    return rois


def _read_tiff_overlay(path: Path) -> list[ImagejRoi]:
    """The overlay (and selection) ROIs of an ImageJ TIFF.

    ``roifile.roiread`` reads these too, but recognises a TIFF by the suffix
    ``.tif`` only (a ``.tiff`` would be taken for a ``.roi`` file), refuses a
    TIFF without ImageJ metadata, and does not say which ROI is damaged; so
    the ROIs are taken from tifffile's ImageJ metadata here and decoded one by
    one with ``ImagejRoi.frombytes``.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            meta = tif.imagej_metadata
    except Exception as exc:  # tifffile raises many kinds
        raise S2LError(f"{path}: unreadable TIFF ({_one_line(exc)}); check that it opens in "
                       "Fiji and save it again") from None
    if not meta:
        return []
    blobs: list[bytes] = []
    for key in ("Overlays", "ROI"):
        value = meta.get(key) if isinstance(meta, dict) else None
        if value is None:
            continue
        for blob in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(blob, (bytes, bytearray)):
                raise S2LError(f"{path}: damaged ImageJ overlay ({key} holds "
                               f"{type(blob).__name__}, not ROI bytes); save the image again "
                               "from Fiji")
            blobs.append(blob)
    return [_decode(bytes(b), f"{path}: overlay ROI #{i}") for i, b in enumerate(blobs)]


# --------------------------------------------------------------------------- writing


def roiset_member_names(rois: Iterable[ImagejRoi]) -> list[str]:
    """Zip member names (without ``.roi``) as the ROI Manager makes them.

    The ROI's name, or for an unnamed ROI the ``yyyy-xxxx`` of its centre;
    ``/``, ``\\`` and ``:`` become ``_``; repeated names get ``-1``, ``-2``...

    Parameters
    ----------
    rois : iterable of roifile.ImagejRoi

    Returns
    -------
    names : list of str
        One per ROI, all different.
    """
    used: set[str] = set()
    names = []
    for roi in rois:
        name = roi.name or f"{(roi.top + roi.bottom) // 2:04d}-{(roi.left + roi.right) // 2:04d}"
        name = re.sub(r"[/\\:]", "_", name)
        if name.lower().endswith(".roi"):
            name = name[:-4]
        base, n = name, 1
        while name in used:
            name = f"{base}-{n}"
            n += 1
        used.add(name)
        names.append(name)
    return names


def write_roiset(rois: Iterable[ImagejRoi], path: str | os.PathLike) -> int:
    """Write ROIs as an ImageJ RoiSet.zip (as the ROI Manager's More > Save...).

    Parameters
    ----------
    rois : iterable of roifile.ImagejRoi
        In the order the ROI Manager is to list them (for scribbles: the
        later ROI wins where two overlap).
    path : path-like
        Output ``.zip``, written atomically (an existing file is replaced
        whole, or not at all).

    Returns
    -------
    n : int
        Number of ROIs written.

    Notes
    -----
    Each ROI becomes the member ``<name>.roi`` (see
    :func:`roiset_member_names`), written by ``roifile.roiwrite``;
    :func:`read_rois` and ImageJ read the file back in the same order.
    """
    rois = list(rois)
    names = roiset_member_names(rois)
    with atomic_path(path) as tmp:
        roifile.roiwrite(tmp, rois, name=names, mode="w")
    return len(rois)

"""Reading microscopy images and label images.

Images are read through `bioio <https://github.com/bioio-devs/bioio>`_ (its
tifffile, OME-TIFF and imageio plugins) and returned as float32 ``(C, H, W)``
arrays. Label images (scribble masks, instance masks) are read with tifffile
(or imageio for PNG) exactly as stored.

Normalisation
-------------
``read_image`` normalises each channel of each image by its own percentiles
(default 1 and 99.8): ``(x - p_low) / (p_high - p_low)``, not clipped. This is
invariant to any affine rescaling of the pixel values, so the same network
works on 8-bit, 16-bit and float images, and on CellProfiler's 0..1-scaled
``pixel_data``, with no extra setting.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from s2l_tools.errors import S2LError, S2LWarning

#: file suffixes recognised as images (lower case)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
#: label images (scribbles, masks)
LABEL_SUFFIXES = (".tif", ".tiff", ".png")
#: images with more pixels than this are refused (about 32k x 32k)
MAX_PIXELS = 1 << 30
#: default normalisation percentiles
PERCENTILES = (1.0, 99.8)


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix (``a.ome.tif`` -> ``a``)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in (".ome.tiff", ".ome.tif", *IMAGE_SUFFIXES):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def list_images(folder: str | os.PathLike, *, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """Image files in ``folder`` (not recursive, hidden files skipped), sorted."""
    folder = Path(folder)
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(suffixes)
    )


@contextlib.contextmanager
def _quiet_readers():
    """Silence the readers' log chatter (bioio tries plugins; tifffile warns)."""
    loggers = [logging.getLogger(n) for n in ("bioio", "bioio_base", "tifffile", "imageio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _reader_for(path: Path):
    name = path.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        import bioio_ome_tiff

        return bioio_ome_tiff.Reader
    if name.endswith((".tif", ".tiff")):
        import bioio_tifffile

        return bioio_tifffile.Reader
    if name.endswith((".png", ".jpg", ".jpeg")):
        import bioio_imageio

        return bioio_imageio.Reader
    raise S2LError(
        f"{path}: unsupported image type '{path.suffix}'; convert it to TIFF "
        f"(supported: {', '.join(IMAGE_SUFFIXES)})"
    )


def read_raw(path: str | os.PathLike, *, channel: int | None = None) -> np.ndarray:
    """Read a 2-D image as stored, as a ``(C, H, W)`` array of its own dtype.

    Parameters
    ----------
    path : path-like
        TIFF, OME-TIFF, PNG or JPEG file.
    channel : int, optional
        Keep only this channel (0-based). Needed for images with more than
        three channels.

    Returns
    -------
    image : (C, H, W) ndarray
        ``C`` is 1 to 3 (RGB samples count as channels).

    Raises
    ------
    S2LError
        Missing, empty or unreadable file, an image of no pixels, NaN or
        infinite pixels, a 3-D stack or time series, more than 3 channels
        without ``channel``, a channel out of range, or more than
        :data:`MAX_PIXELS` pixels.
    """
    from bioio import BioImage

    path = Path(path)
    if not path.is_file():
        raise S2LError(f"{path}: no such image file; check the path")
    if path.stat().st_size == 0:
        raise S2LError(f"{path}: the file is empty (0 bytes); export the image again")
    reader = _reader_for(path)
    try:
        with _quiet_readers():
            img = BioImage(path, reader=reader)
            dims = img.dims
            sizes = {d: getattr(dims, d) for d in dims.order}
            if sizes.get("Z", 1) > 1 or sizes.get("T", 1) > 1:
                raise S2LError(
                    f"{path}: a 3-D stack or time series (Z={sizes.get('Z', 1)}, "
                    f"T={sizes.get('T', 1)}); s2l-tools works on 2-D images: save one "
                    "plane or a projection (Fiji: Image > Stacks > Z Project)"
                )
            n_pixels = sizes["Y"] * sizes["X"]
            if n_pixels > MAX_PIXELS:
                raise S2LError(
                    f"{path}: image is huge ({sizes['Y']} x {sizes['X']} pixels, limit "
                    f"{MAX_PIXELS} pixels); crop or tile it into smaller images"
                )
            order = "CYXS" if "S" in dims.order else "CYX"
            data = np.asarray(img.get_image_data(order, T=0, Z=0))
    except S2LError:
        raise
    except Exception as exc:  # readers raise anything on corrupt files
        text = " ".join(str(exc).split())[:200]  # bioio's messages span lines
        raise S2LError(
            f"{path}: cannot read the image ({type(exc).__name__}: {text}); check that it "
            "opens in Fiji and save it again as TIFF"
        ) from None
    if data.size == 0 or min(data.shape) == 0:
        raise S2LError(f"{path}: the image has no pixels (shape {tuple(data.shape)}); export "
                       "the image again")
    if data.ndim == 4:  # C, Y, X, S
        if data.shape[0] > 1 and data.shape[3] > 1:
            raise S2LError(
                f"{path}: both channels ({data.shape[0]}) and RGB samples; save one "
                "channel per file or pass --channel"
            )
        data = np.moveaxis(data, 3, 0)[:, 0] if data.shape[0] == 1 else data[..., 0]
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise S2LError(f"{path}: unsupported pixel type {data.dtype}; save as 8/16-bit or float")
    n_channels = data.shape[0]
    if channel is not None:
        if not 0 <= channel < n_channels:
            raise S2LError(
                f"{path}: --channel {channel} is out of range; the image has "
                f"{n_channels} channel(s) (0..{n_channels - 1})"
            )
        data = data[channel : channel + 1]
    elif n_channels > 3:
        raise S2LError(
            f"{path}: {n_channels} channels; pick the one to segment with --channel N "
            f"(0..{n_channels - 1})"
        )
    if data.dtype.kind in "fc" and not np.isfinite(data).all():
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise S2LError(
            f"{path}: {bad} pixel(s) are NaN or infinite; replace them (Fiji: Process > Math > "
            "Remove NaNs..., or set them to 0) and save again"
        )
    if data.shape[0] == 3 and np.array_equal(data[0], data[1]) and np.array_equal(data[0], data[2]):
        data = data[:1]  # grey image stored as RGB
    return data


def normalize(
    image: np.ndarray, *, method: str = "percentile", low: float = PERCENTILES[0],
    high: float = PERCENTILES[1], source: str | None = None,
) -> np.ndarray:
    """Normalise each channel of a ``(C, H, W)`` image to float32.

    Parameters
    ----------
    image : (C, H, W) ndarray
    method : {'percentile', 'none'}
        ``'percentile'``: ``(x - p_low) / (p_high - p_low)`` per channel,
        not clipped. ``'none'``: cast to float32 only.
    low, high : float
        Percentiles, ``0 <= low < high <= 100``.
    source : str, optional
        File name used in warnings.

    Returns
    -------
    out : (C, H, W) float32 ndarray

    Examples
    --------
    >>> x = np.arange(100, dtype=np.uint16).reshape(1, 10, 10)
    >>> y = normalize(x, low=0, high=100)
    >>> float(y.min()), float(y.max())
    (0.0, 1.0)
    """
    if method == "none":
        return np.ascontiguousarray(image, dtype=np.float32)
    if method != "percentile":
        raise ValueError(f"unknown normalisation {method!r}; use 'percentile' or 'none'")
    # one implementation, shared with the CellProfiler module (numpy only)
    from s2l_tools.inference.onnx import normalize_percentile

    out = normalize_percentile(image, low, high)
    for c in range(out.shape[0]):
        if not out[c].any() and np.ptp(np.asarray(image[c])) == 0:
            import warnings

            warnings.warn(
                f"{source or 'image'}: channel {c} is constant; it carries no information",
                S2LWarning,
                stacklevel=2,
            )
    return out


def read_image(
    path: str | os.PathLike, *, channel: int | None = None, method: str = "percentile",
    low: float = PERCENTILES[0], high: float = PERCENTILES[1],
) -> np.ndarray:
    """Read a 2-D image as normalised float32 ``(C, H, W)``.

    See :func:`read_raw` for the accepted files and :func:`normalize` for
    the normalisation.
    """
    return normalize(read_raw(path, channel=channel), method=method, low=low, high=high,
                     source=str(path))


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read a 2-D label image (scribble mask or instance labels) as stored.

    Raises
    ------
    S2LError
        Missing or unreadable file, not 2-D (after dropping length-1 axes), not
        integer (floats are accepted when every value is a whole number), or
        with negative values (labels are 0 = background/unlabeled, 1..N).
    """
    path = Path(path)
    if not path.is_file():
        raise S2LError(f"{path}: no such label file; check the path")
    try:
        with _quiet_readers():
            if path.name.lower().endswith((".tif", ".tiff")):
                import tifffile

                data = tifffile.imread(path)
            else:
                import imageio.v3 as iio

                data = iio.imread(path)
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        raise S2LError(
            f"{path}: cannot read the label image ({type(exc).__name__}: {text}); "
            "save it again as an integer TIFF"
        ) from None
    data = np.squeeze(np.asarray(data))
    if data.size == 0:
        raise S2LError(f"{path}: the label image has no pixels (shape {data.shape}); save it "
                       "again")
    if data.ndim != 2:
        raise S2LError(
            f"{path}: label image must be 2-D, got shape {data.shape}; save one plane"
        )
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if not np.issubdtype(data.dtype, np.integer):
        if (np.issubdtype(data.dtype, np.floating) and np.isfinite(data).all()
                and np.all(np.mod(data, 1) == 0)):
            data = data.astype(np.int64)
        else:
            raise S2LError(
                f"{path}: label image has non-integer values ({data.dtype}); save labels as "
                "an 8/16/32-bit integer TIFF"
            )
    if data.dtype.kind == "i" and data.size and data.min() < 0:
        raise S2LError(
            f"{path}: label image has negative values; use 0 for background (or unlabeled) "
            "and 1..N for cells"
        )
    return data


def write_tiff(path: str | os.PathLike, array: np.ndarray, *, description: str | None = None,
               compression: str | None = "zlib", imagej: bool = False) -> None:
    """Write ``array`` as a TIFF atomically (never a half-written file).

    Parameters
    ----------
    path : path-like
        Output file; its folder is created.
    array : (H, W) or (C, H, W) ndarray
    description : str, optional
        The TIFF's ImageDescription (not with ``imagej``).
    compression : str or None
        tifffile's compression (default ``'zlib'``); None writes it
        uncompressed.
    imagej : bool
        Write an ImageJ hyperstack TIFF (grey, ``minisblack``), as Fiji saves
        one, instead of a plain TIFF without metadata.
    """
    import tifffile

    from s2l_tools.io.atomic import atomic_path

    if imagej and description is not None:
        raise ValueError("write_tiff: an ImageJ TIFF keeps ImageJ's own description; drop description")
    if imagej:
        options = {"imagej": True, "photometric": "minisblack"}
    else:
        options = {"description": description, "metadata": None}
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, array, compression=compression, **options)

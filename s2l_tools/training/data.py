"""Training data: the dataset in memory, each epoch's crops, who holds which EMA map.

:func:`load_training_data` reads a dataset folder (:mod:`s2l_tools.data.dataset`)
into a :class:`TrainingData`, :func:`load_validation` the images and masks of
``--val``. :func:`epoch_plan` draws the images of an epoch's crops and
:class:`CropDataset` makes them (augmented); :func:`store_owners` splits the
EMA store between distributed workers.

Determinism: the crops of epoch ``e`` come from ``numpy.random.default_rng(
[seed, e, k])``, so a run resumed from a checkpoint draws exactly what a
straight run draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from s2l_tools import labels as L
from s2l_tools.data.dataset import open_dataset
from s2l_tools.errors import S2LError
from s2l_tools.io.images import read_image, read_labels
from s2l_tools.training.config import TrainConfig

__all__ = ["TrainingData", "load_training_data", "array_digest", "inputs_record",
           "compare_inputs", "load_validation", "samples_per_epoch",
           "epoch_plan", "REPLICATED_STORE_LIMIT", "store_owners", "CropDataset"]


@dataclass
class TrainingData:
    """Normalised images, scribble masks and optional full masks, by index."""

    stems: list[str]
    images: list[np.ndarray]            # (C, H, W) float32
    scribbles: list[np.ndarray]         # (H, W) uint8
    masks: list[np.ndarray | None] = field(default_factory=list)  # (H, W) int labels
    #: per image: SHA-256 of its image and the user's whole scribble arrays (:func:`array_digest`)
    digests: list[dict] = field(default_factory=list)
    #: per image: the strokes held out of training (:func:`s2l_tools.data.holdout.split_strokes`;
    #: None: none of this image's); empty: nothing held out
    heldout: list[np.ndarray | None] = field(default_factory=list)
    #: mask code -> (strokes held out, strokes in all) over the user's scribbles; empty: off
    stroke_counts: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: per image: the factor it was resized by (``--diameter``, s2l_tools.training.scale);
    #: empty: every image at its own size
    scales: list[float] = field(default_factory=list)
    #: per image with ``scales``: its (H, W) as read
    source_shapes: list[tuple[int, int]] = field(default_factory=list)

    @property
    def in_channels(self) -> int:
        return self.images[0].shape[0]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [im.shape[1:] for im in self.images]


def load_training_data(root, *, channel=None, need_scribbles=True, need_masks=False,
                       holdout: float = 0.0, seed: int = 0, progress=None) -> TrainingData:
    """Read a dataset folder (see :mod:`s2l_tools.data.dataset`) into memory.

    Images without a scribble mask are left out. With ``need_masks`` (and
    not ``need_scribbles``: ``--method full``) every image needs a full mask,
    which becomes its "scribble" on every pixel. Images must agree in
    channel count; masks must match their image's size.

    With ``holdout`` > 0 (and scribbles), that share of each class's strokes is
    held out (:func:`s2l_tools.data.holdout.split_strokes` with ``seed``): the
    result's ``scribbles`` are the training part, ``heldout`` the rest. The
    ``digests`` stay those of the whole scribbles, so a resumed run checks the
    user's files.
    """
    ds = open_dataset(root)
    stems, images, scribbles, masks, digests = [], [], [], [], []
    for s in ds.samples:
        if s.image is None:
            where = s.scribbles or s.mask or s.rois
            raise S2LError(f"{where}: no image named '{s.stem}' in {ds.images_dir}; rename it "
                           "to match its image")
        if need_masks and s.mask is None:
            raise S2LError(f"{ds.masks_dir}: no mask for '{s.stem}'; --method full needs "
                           "DATA/masks/<stem>.tif for every image")
        if need_scribbles and s.scribbles is None:
            if s.rois is not None:
                raise S2LError(f"{s.rois}: ROIs not converted yet; run s2l-scribbles {root}")
            continue  # images without scribbles take no part in scribble training
        img = read_image(s.image, channel=channel)
        h, w = img.shape[1:]
        if images and img.shape[0] != images[0].shape[0]:
            raise S2LError(f"{s.image}: {img.shape[0]} channel(s) but '{stems[0]}' has "
                           f"{images[0].shape[0]}; use --channel to pick one channel for all")
        scr = m = None
        if s.scribbles is not None and need_scribbles:
            scr = read_labels(s.scribbles)
            if scr.shape != (h, w):
                raise S2LError(f"{s.scribbles}: size {scr.shape[0]}x{scr.shape[1]} differs from "
                               f"its image ({h}x{w}); regenerate it with s2l-scribbles")
            if scr.max() > L.FOREGROUND:
                raise S2LError(f"{s.scribbles}: values above {L.FOREGROUND}; a scribble mask "
                               "holds 0 unlabeled, 1 background, 2 foreground")
            scr = scr.astype(np.uint8)
        if s.mask is not None:
            m = read_labels(s.mask)
            if m.shape != (h, w):
                raise S2LError(f"{s.mask}: size {m.shape[0]}x{m.shape[1]} differs from its "
                               f"image ({h}x{w})")
        if scr is None:  # full supervision: every pixel labelled by the mask
            scr = np.where(m > 0, L.FOREGROUND, L.BACKGROUND).astype(np.uint8)
        stems.append(s.stem)
        images.append(img)
        scribbles.append(scr)
        masks.append(m)
        digests.append({"image": array_digest(img), "scribbles": array_digest(scr)})
        if progress:
            progress()
    if not images:
        raise S2LError(f"{ds.scribbles_dir}: no scribble masks; run s2l-scribbles {root} "
                       "(Fiji ROIs) or s2l-synth (from masks) first")
    if need_scribbles:
        if not any((s == L.BACKGROUND).any() for s in scribbles):
            raise S2LError(f"{ds.scribbles_dir}: no background scribble in any image; "
                           "Scribble2Label needs both classes")
        if not any((s == L.FOREGROUND).any() for s in scribbles):
            raise S2LError(f"{ds.scribbles_dir}: no foreground scribble in any image; "
                           "Scribble2Label needs both classes")
    data = TrainingData(stems, images, scribbles, masks, digests)
    if need_scribbles and holdout > 0:
        from s2l_tools.data.holdout import count_strokes, split_strokes

        data.scribbles, data.heldout = split_strokes(scribbles, holdout, seed=seed)
        total = count_strokes(scribbles)
        held = count_strokes(data.heldout)
        data.stroke_counts = {code: (held.get(code, 0), n) for code, n in total.items()}
    return data


def array_digest(a: np.ndarray) -> str:
    """SHA-256 (hex) of an array's dtype, shape and values: equal arrays, equal digests
    (a file saved again with other metadata keeps its digest)."""
    import hashlib

    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.data)
    return h.hexdigest()


def inputs_record(data: TrainingData) -> dict:
    """What a run trains on, for ``RUN/inputs.json`` and its checkpoints.

    Returns
    -------
    record : dict
        ``{"version": 1, "images": [{"stem", "shape": [H, W], "image", "scribbles"}]}``
        in training order; ``image`` and ``scribbles``: the :func:`array_digest` of
        the normalised image and of the scribble mask as read; ``shape`` the size
        trained at. With ``--diameter`` also ``scale`` and ``source_shape`` (the size
        as read: ``shape`` is it times ``scale``).
    """
    images = [{"stem": stem, "shape": [int(v) for v in shape], **digest}
              for stem, shape, digest in zip(data.stems, data.shapes, data.digests)]
    for e, scale, source in zip(images, data.scales, data.source_shapes):
        e.update(scale=scale, source_shape=[int(v) for v in source])
    return {"version": 1, "images": images}


def compare_inputs(record: dict, data: TrainingData) -> dict[str, list[str]]:
    """How ``data`` differs from a run's ``record`` (:func:`inputs_record`).

    Returns
    -------
    diff : dict of list of str
        Stems by kind: ``added`` (not in the record), ``removed`` (in the record
        only), ``images`` (image content or size changed), ``scribbles``
        (scribbles changed, image the same). All empty: the same inputs.
    """
    old = {e["stem"]: e for e in record.get("images", [])}
    new = inputs_record(data)["images"]
    diff: dict[str, list[str]] = {"added": [], "removed": [], "images": [], "scribbles": []}
    for e in new:
        o = old.get(e["stem"])
        if o is None:
            diff["added"].append(e["stem"])
        elif o.get("image") != e["image"] or list(o.get("shape", [])) != e["shape"]:
            diff["images"].append(e["stem"])
        elif o.get("scribbles") != e["scribbles"]:
            diff["scribbles"].append(e["stem"])
    seen = {e["stem"] for e in new}
    diff["removed"] = [s for s in old if s not in seen]
    if not any(diff.values()) and [e["stem"] for e in new] != list(old):
        diff["images"] = ["(the order of the images)"]
    return diff


def load_validation(root, *, channel) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Images and full masks of a validation dataset (``--val``)."""
    ds = open_dataset(root)
    stems, images, masks = [], [], []
    for s in ds.samples:
        if s.image is None or s.mask is None:
            continue
        img = read_image(s.image, channel=channel)
        m = read_labels(s.mask)
        if m.shape != img.shape[1:]:
            raise S2LError(f"{s.mask}: size differs from its image {s.image}")
        stems.append(s.stem)
        images.append(img)
        masks.append(m)
    if not images:
        raise S2LError(f"{root}: no image with a mask (DATA/masks/<stem>.tif); --val needs "
                       "full masks to score")
    return stems, images, masks


def epoch_plan(cfg: TrainConfig, data: TrainingData, epoch: int,
               owners: list[int] | None = None, world_size: int = 1) -> np.ndarray:
    """Image index of every crop of ``epoch`` (with replacement, by area as read).

    Rank ``r`` of ``world_size`` trains on crops ``r, r + W, ...``. With
    ``owners`` (a sharded EMA store: rank ``owners[i]`` holds image ``i``),
    those crops are drawn from rank ``r``'s images only, and the plan has
    ``ceil(samples / W) * W`` crops.
    """
    # by each image's own area: one resized by --diameter keeps its share
    sizes = data.source_shapes or data.shapes
    areas = np.array([max(h * w, cfg.crop * cfg.crop) for h, w in sizes], float)
    n = samples_per_epoch(cfg, data)
    if owners is None:
        rng = np.random.default_rng([cfg.seed, epoch])
        return rng.choice(len(areas), size=n, p=areas / areas.sum())
    plan = np.empty(math.ceil(n / world_size) * world_size, dtype=np.int64)
    owners_ = np.asarray(owners)
    for r in range(world_size):
        mine = np.flatnonzero(owners_ == r)
        rng = np.random.default_rng([cfg.seed, epoch, world_size, r])
        plan[r::world_size] = rng.choice(mine, size=len(plan[r::world_size]),
                                         p=areas[mine] / areas[mine].sum())
    return plan


#: ``--store auto`` shards the EMA store when a replica would take more than this per worker.
REPLICATED_STORE_LIMIT = 2 << 30


def store_owners(cfg: TrainConfig, shapes: list[tuple[int, int]], world_size: int,
                 bytes_per_pixel: int = 2) -> list[int] | None:
    """Which rank holds each image's EMA map when the store is sharded; None: replicated.

    ``cfg.store`` 'auto' shards when a replica would exceed
    :data:`REPLICATED_STORE_LIMIT` bytes. Shards balance pixels: images go,
    largest first, to the rank holding the fewest pixels so far (ties: the
    lower index and rank), so every rank has a similar share of the area.
    """
    if world_size <= 1 or cfg.store == "replicated":
        return None
    pixels = [h * w for h, w in shapes]
    if cfg.store == "auto" and sum(pixels) * bytes_per_pixel <= REPLICATED_STORE_LIMIT:
        return None
    if len(shapes) < world_size:
        raise S2LError(f"--store sharded: {len(shapes)} training image(s) for {world_size} "
                       "workers; every worker needs at least one: use --store replicated "
                       "or fewer --num-workers")
    owners = [0] * len(shapes)
    load = [0] * world_size
    for i in sorted(range(len(shapes)), key=lambda i: (-pixels[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += pixels[i]
    return owners


def samples_per_epoch(cfg: TrainConfig, data: TrainingData) -> int:
    """Crops per epoch: ``--samples-per-epoch``, else max(images, 8 x batch size)."""
    return cfg.samples_per_epoch or max(len(data.images), 8 * cfg.batch_size)


class CropDataset(torch.utils.data.Dataset):
    """Augmented crops of one epoch: item ``k`` uses ``rng([seed, epoch, k])``."""

    def __init__(self, cfg: TrainConfig, data: TrainingData, store, plan: np.ndarray,
                 epoch: int, ks: np.ndarray, with_ema: bool):
        self.cfg, self.data, self.store, self.plan = cfg, data, store, plan
        self.epoch, self.ks, self.with_ema = epoch, ks, with_ema

    def __len__(self):
        return len(self.ks)

    def __getitem__(self, j):
        from s2l_tools.data.augment import augment

        k = int(self.ks[j])
        i = int(self.plan[k])
        rng = np.random.default_rng([self.cfg.seed, self.epoch, k])
        ema = self.store.get(i) if self.with_ema else None
        image, scribble, ema = augment(self.data.images[i], self.data.scribbles[i], ema,
                                       rng=rng, crop=self.cfg.crop, noise=self.cfg.noise_aug,
                                       gain=self.cfg.gain_aug)
        item = {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                "scribble": torch.from_numpy(np.ascontiguousarray(scribble).astype(np.int64))}
        if ema is not None:
            item["ema"] = torch.from_numpy(np.ascontiguousarray(ema, dtype=np.float32))
        return item

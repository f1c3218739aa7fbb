"""The Scribble2Label training loop: epochs, EMA ensemble, checkpoints, reports.

Read it top to bottom: :func:`load_training_data`, :class:`CropDataset`,
:func:`ensemble_step`, :func:`validate`, :func:`fit`. The work of one step
is :func:`s2l_tools.training.step.train_step`, a plain function of tensors; this
module only feeds it. Distribution (Ray) plugs in through :class:`Context`,
which by default is a single process.

Determinism: the crops of epoch ``e`` come from ``numpy.random.default_rng(
[seed, e, k])``, so a run resumed from a checkpoint draws exactly what a
straight run draws.
"""

from __future__ import annotations

import csv
import io
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from s2l_tools import labels as L
from s2l_tools.io.atomic import write_bytes_atomic
from s2l_tools.training.checkpoint import ModelMeta, load_checkpoint, save_checkpoint, save_model
from s2l_tools.training.config import TrainConfig
from s2l_tools.data.dataset import open_dataset
from s2l_tools.device import autocast_dtype, inference_dtype, select_device, torch_prob_fn
from s2l_tools.errors import S2LError
from s2l_tools.io.images import read_image, read_labels

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
#: A sharded EMA store's maps: one file per rank beside ``checkpoint.pt``.
SHARD = "ema_shard_{rank:04d}.pt"
SHARD_GLOB = "ema_shard_*.pt"


# --------------------------------------------------------------------------- data
@dataclass
class TrainingData:
    """Normalised images, scribble masks and optional full masks, by index."""

    stems: list[str]
    images: list[np.ndarray]            # (C, H, W) float32
    scribbles: list[np.ndarray]         # (H, W) uint8
    masks: list[np.ndarray | None] = field(default_factory=list)  # (H, W) int labels

    @property
    def in_channels(self) -> int:
        return self.images[0].shape[0]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [im.shape[1:] for im in self.images]


def load_training_data(root, *, channel=None, need_scribbles=True, need_masks=False,
                       progress=None) -> TrainingData:
    """Read a dataset folder (see :mod:`s2l_tools.data.dataset`) into memory.

    Images without a scribble mask are left out. With ``need_masks`` (and
    not ``need_scribbles``: ``--method full``) every image needs a full mask,
    which becomes its "scribble" on every pixel. Images must agree in
    channel count; masks must match their image's size.
    """
    ds = open_dataset(root)
    stems, images, scribbles, masks = [], [], [], []
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
    return TrainingData(stems, images, scribbles, masks)


def epoch_plan(cfg: TrainConfig, data: TrainingData, epoch: int,
               owners: list[int] | None = None, world_size: int = 1) -> np.ndarray:
    """Image index of every crop of ``epoch`` (with replacement, by area).

    Rank ``r`` of ``world_size`` trains on crops ``r, r + W, ...``. With
    ``owners`` (a sharded EMA store: rank ``owners[i]`` holds image ``i``),
    those crops are drawn from rank ``r``'s images only, and the plan has
    ``ceil(samples / W) * W`` crops.
    """
    areas = np.array([max(h * w, cfg.crop * cfg.crop) for h, w in data.shapes], float)
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
                                       rng=rng, crop=self.cfg.crop)
        item = {"image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                "scribble": torch.from_numpy(np.ascontiguousarray(scribble).astype(np.int64))}
        if ema is not None:
            item["ema"] = torch.from_numpy(np.ascontiguousarray(ema, dtype=np.float32))
        return item


# --------------------------------------------------------------------- distribution
class Context:
    """How the loop talks to its peers. The default is one process, no peers.

    A distributed wrapper (see :mod:`s2l_tools.training.distributed`) overrides
    ``rank``, ``world_size``, :meth:`wrap_model`, :meth:`sync_store`,
    :meth:`mean` and :meth:`report`, and where needed :meth:`device`,
    :meth:`sync_buffers`, :meth:`checkpoint_dir` and :meth:`initial_checkpoint`.
    """

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str):
        """The torch device this process trains on (``--device`` name)."""
        return select_device(name)

    def wrap_model(self, model):
        return model

    def sync_buffers(self, model) -> None:
        """Make non-trained state (BatchNorm running statistics) equal on every rank."""

    def sync_store(self, store, owners: list[int]) -> None:
        """Make ``store`` identical on every rank (rank ``owners[i]`` computed image i)."""

    def mean(self, values: dict) -> dict:
        return values

    def checkpoint_dir(self, out: Path) -> Path:
        """Where the main rank writes ``checkpoint.pt`` and ``model.pt``."""
        return out

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        """Called after every epoch (checkpoint_dir when one was written)."""

    def initial_checkpoint(self) -> Path | None:
        return None


# ------------------------------------------------------------------------ ensemble
def predict_full(model, image: np.ndarray, *, device, amp_dtype=None, tile=512) -> np.ndarray:
    """Foreground probability of an un-augmented full image (eval mode, tiled)."""
    from s2l_tools.inference.tiling import predict_tiled

    was_training = model.training
    try:
        fn = torch_prob_fn(model, device=device, amp=amp_dtype)
        probs = predict_tiled(fn, image, tile=tile, overlap=tile // 8, batch_size=1,
                              pad_multiple=32)
    finally:
        model.train(was_training)
    return probs[1]


def _my_images(store, n_images: int, ctx: Context) -> tuple[list[int], list[int] | None]:
    """The images this rank predicts for the store, and who predicts each (None: sharded).

    A sharded store: the images the rank holds. A replicated one: image ``i``
    goes to rank ``i % world``, and :meth:`Context.sync_store` shares the maps.
    """
    if store.is_shard:
        return list(store.owned), None
    owners = [i % ctx.world_size for i in range(n_images)]
    return [i for i, o in enumerate(owners) if o == ctx.rank], owners


def ensemble_step(model, store, data: TrainingData, ctx: Context, *, device, amp_dtype,
                  tile) -> dict:
    """Update the EMA store from fresh predictions; return train-mask scores.

    A replicated store: each rank predicts its share (image ``i`` goes to rank
    ``i % world``), then :meth:`Context.sync_store` makes the store identical
    everywhere. A sharded store (``store.is_shard``): each rank predicts the
    images it holds, and nothing is exchanged.
    """
    mine, owners = _my_images(store, len(data.images), ctx)
    ctx.sync_buffers(model)  # every rank predicts with the same BatchNorm statistics
    ious = []
    for i in mine:
        prob = predict_full(model, data.images[i], device=device, amp_dtype=amp_dtype, tile=tile)
        store.update(i, prob)
        if data.masks[i] is not None:
            ious.append(_iou(prob > 0.5, data.masks[i] > 0))
    if not store.is_shard:
        ctx.sync_store(store, owners)
    if ctx.world_size > 1:  # ratio of the ranks' sums: the same on every rank
        s = ctx.mean({"iou_sum": float(np.sum(ious)), "iou_n": float(len(ious))})
        return {"train_iou": s["iou_sum"] / s["iou_n"]} if s["iou_n"] > 0 else {}
    return {"train_iou": float(np.mean(ious))} if ious else {}


def fast_start(store, data: TrainingData, ctx: Context, *, kind: str, seed: int) -> float:
    """``--fast-start``: the EMA store's first map from classic segmentation of the scribbles.

    ``kind`` 'forest': a random-forest pixel classifier's foreground probability
    (:mod:`s2l_tools.classic.forest`, trained on the scribbles of every training image:
    the same seeded forest on every rank); 'grabcut': each image's GrabCut
    proposal (:mod:`s2l_tools.classic.grabcut`) as 0 / 1; 'forest+grabcut': their mean,
    so a pixel is confident only where both agree. Each rank computes its share
    of the images as :func:`ensemble_step` does. Returns the seconds it took.
    """
    from s2l_tools.classic.forest import ForestSettings, fit_forest, forest_probability
    from s2l_tools.classic.grabcut import grabcut_proposal, to_bgr8

    t = time.perf_counter()
    settings = ForestSettings(n_jobs=torch.get_num_threads())
    forest = (fit_forest(data.images, data.scribbles, settings=settings, seed=seed)
              if "forest" in kind else None)
    mine, owners = _my_images(store, len(data.images), ctx)
    for i in mine:
        maps = []
        if forest is not None:
            maps.append(forest_probability(forest, data.images[i], settings=settings))
        if "grabcut" in kind:
            maps.append(grabcut_proposal(to_bgr8(data.images[i]), data.scribbles[i])
                        .astype(np.float32))
        store.update(i, np.mean(maps, axis=0))
    if not store.is_shard:
        ctx.sync_store(store, owners)
    return time.perf_counter() - t


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


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


def validate(model, val, *, device, amp_dtype, tile, min_size) -> dict:
    """Mean IoU, mDice, F1@0.5 of the model on validation images."""
    from s2l_tools.evaluation.metrics import score_pair
    from s2l_tools.inference.postprocess import instances_from_probability

    scores = []
    for image, truth in zip(val[1], val[2]):
        prob = predict_full(model, image, device=device, amp_dtype=amp_dtype, tile=tile)
        pred = instances_from_probability(prob, threshold=0.5, min_size=min_size)
        scores.append(score_pair(pred, truth))
    return {f"val_{k}": float(np.mean([s[k] for s in scores]))
            for k in ("iou", "mdice", "f1_50")}


# --------------------------------------------------------------------------- report
def write_metrics_csv(path: Path, history: list[dict]) -> None:
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


# ------------------------------------------------------------------------------ fit
def latest_checkpoint(out: Path) -> Path | None:
    """``out/checkpoint.pt``, else the newest ``out/checkpoint_epoch_*/checkpoint.pt``
    (a run trained on Ray, resumed in one process); None if there is neither."""
    if (out / CHECKPOINT).is_file():
        return out / CHECKPOINT
    ray_ckpts = sorted(out.glob(f"checkpoint_epoch_*/{CHECKPOINT}"))
    return ray_ckpts[-1] if ray_ckpts else None


def load_store(store, ckpt_path: Path, ckpt: dict) -> None:
    """Fill ``store`` (whole or a shard) from a checkpoint, replicated or sharded."""
    if ckpt.get("ema") is not None:
        loaded = store.load_state_dict(ckpt["ema"])
    else:
        loaded = []
        for f in sorted(ckpt_path.parent.glob(SHARD_GLOB)):
            loaded += store.load_state_dict(load_checkpoint(f)["ema"])
    missing = sorted(set(store.owned) - set(loaded))
    if missing:
        raise S2LError(f"{ckpt_path.parent}: the EMA maps of {len(missing)} training image(s) "
                       f"are missing ({SHARD_GLOB} files of a sharded "
                       "run); resume from a complete checkpoint folder")


def _build(cfg: TrainConfig, in_channels: int, device):
    from s2l_tools.training.model import build_model, param_groups

    model = build_model(encoder=cfg.encoder, in_channels=in_channels, classes=2,
                        weights=cfg.encoder_weights, seed=cfg.seed)
    # channels_last always: prediction (torch_prob_fn) uses it too, and a model
    # whose memory format changed mid-run would not resume bit for bit
    model = model.to(device=device, memory_format=torch.channels_last)
    groups = param_groups(model, cfg.lr, decoder_mult=cfg.decoder_lr_mult,
                          weight_decay=cfg.weight_decay)
    optimizer = torch.optim.RAdam(groups, lr=cfg.lr)
    return model, optimizer


def model_meta(cfg: TrainConfig, in_channels: int) -> ModelMeta:
    return ModelMeta(encoder=cfg.encoder, in_channels=in_channels, classes=2,
                     channel=cfg.channel, tile=cfg.tile, overlap=cfg.tile // 8,
                     threshold=0.5, min_size=cfg.min_size)


class _Interrupt:
    """Turn the first Ctrl-C into a flag, so the loop can checkpoint and stop."""

    def __init__(self):
        self.hit = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread (e.g. a Ray worker)
            self._old = None
        return self

    def _handle(self, signum, frame):
        if self.hit:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def fit(cfg: TrainConfig, *, resume: bool = False, ctx: Context | None = None,
        console=None) -> dict:
    """Train a model as ``cfg`` says; write checkpoints, metrics and the model to ``cfg.out``.

    Returns the last epoch's metrics. With ``resume``, continues from
    ``cfg.out/checkpoint.pt`` exactly where it stopped.
    """
    from rich.console import Console

    from s2l_tools.training.ema import EmaStore
    from s2l_tools.training.step import train_step

    ctx = ctx or Context()
    cfg.validate()
    out = Path(cfg.out)
    console = console or Console(stderr=True, quiet=not ctx.is_main)
    device = ctx.device(cfg.device)
    amp_dtype = autocast_dtype(cfg.amp, device)  # training steps
    infer_dtype = inference_dtype(cfg.amp, device)  # ensemble passes and validation
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    t0 = time.perf_counter()
    full = cfg.method == "full"
    data = load_training_data(cfg.data, channel=cfg.channel, need_scribbles=not full,
                              need_masks=full)
    val = load_validation(cfg.val, channel=cfg.channel) if cfg.val else None
    console.print(f"loaded {len(data.images)} training image(s)"
                  + (f", {len(val[0])} validation image(s)" if val else "")
                  + f" in {time.perf_counter() - t0:.1f} s; device {device}")

    model, optimizer = _build(cfg, data.in_channels, device)
    n_samples = samples_per_epoch(cfg, data)
    per_rank_batch = max(1, math.ceil(cfg.batch_size / ctx.world_size))
    # every rank takes the same number of crops (and so of DDP steps): the last
    # crops wrap around to the first ones, as torch's DistributedSampler pads
    per_rank_samples = math.ceil(n_samples / ctx.world_size)
    iters = math.ceil(per_rank_samples / per_rank_batch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=max(1, cfg.restart_epochs * iters))
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    owners = store_owners(cfg, data.shapes, ctx.world_size)  # None: every rank holds all
    store = EmaStore(data.shapes, alpha=cfg.ema_alpha,
                     owned=None if owners is None else
                     [i for i, o in enumerate(owners) if o == ctx.rank])
    history: list[dict] = []
    start_epoch = 0
    # the ensemble pass due after the last epoch would change nothing that is used;
    # it is skipped and, if the run is resumed for more epochs, made up first
    ensemble_pending = False

    ckpt_path = ctx.initial_checkpoint() or (latest_checkpoint(out) if resume else None)
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["config"].get("method") != cfg.method or ckpt["config"].get("encoder") != cfg.encoder:
            raise S2LError(f"{ckpt_path}: the checkpoint was trained with method "
                           f"{ckpt['config'].get('method')}, encoder {ckpt['config'].get('encoder')};"
                           " resume with the same settings or use a new --out")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        load_store(store, ckpt_path, ckpt)
        torch.set_rng_state(ckpt["torch_rng"])
        history = list(ckpt.get("history", []))
        start_epoch = int(ckpt["epoch"])
        ensemble_pending = bool(ckpt.get("ensemble_pending", False))
        console.print(f"resumed from {ckpt_path} after epoch {start_epoch}")
    elif resume:
        raise S2LError(f"{out / CHECKPOINT}: nothing to resume; start without --resume")

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.to_json(out / "config.json")
    fast = cfg.fast_start != "none"
    if fast and ckpt_path is None:
        seconds = fast_start(store, data, ctx, kind=cfg.fast_start, seed=cfg.seed)
        console.print(f"fast start: {cfg.fast_start} pseudo-labels for {len(data.images)} "
                      f"image(s) in {seconds:.1f} s")
    train_model = ctx.wrap_model(model)
    # --method full: the masks were loaded as "scribbles" on every pixel, so the
    # scribble loss is the full cross entropy
    step_method = "pce" if cfg.method == "full" else cfg.method
    meta = model_meta(cfg, data.in_channels)

    def checkpoint(epoch: int) -> Path | None:
        if not ctx.is_main and not store.is_shard:
            return None
        where = ctx.checkpoint_dir(out)
        if store.is_shard:  # every rank saves its own maps beside the main checkpoint
            save_checkpoint(where / SHARD.format(rank=ctx.rank), {
                "ema": store.state_dict(), "epoch": epoch})
            if not ctx.is_main:
                return where
        save_checkpoint(where / CHECKPOINT, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "ema": None if store.is_shard else store.state_dict(),
            "ema_shards": ctx.world_size if store.is_shard else 0,
            "torch_rng": torch.get_rng_state(),
            "config": cfg.to_dict(), "meta": meta.__dict__, "epoch": epoch,
            "history": history, "ensemble_pending": ensemble_pending,
        })
        save_model(where / MODEL, model.state_dict(), meta)
        return where

    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                        transient=False, disable=not ctx.is_main)
    last: dict = {}
    with progress, _Interrupt() as interrupt:
        ep_task = progress.add_task("epochs", total=cfg.epochs, completed=start_epoch)
        if ensemble_pending and start_epoch < cfg.epochs:
            # the pass skipped after the last epoch of the run being resumed: the
            # checkpoint holds the weights it needs, and it draws no random numbers
            ensemble_step(model, store, data, ctx, device=device, amp_dtype=infer_dtype,
                          tile=cfg.tile)
            ensemble_pending = False
        for epoch in range(start_epoch, cfg.epochs):
            te = time.perf_counter()
            plan = epoch_plan(cfg, data, epoch, owners, ctx.world_size)
            ks = np.arange(per_rank_samples * ctx.world_size) % len(plan)
            ks = ks[ctx.rank::ctx.world_size]
            after_warmup = epoch >= cfg.warmup_epochs
            # a fast start fills the store before epoch 1: its pseudo-labels act at once,
            # and the network's own predictions join the store after the warm-up
            with_ema = cfg.method == "s2l" and (after_warmup or fast) and store.all_initialized
            use_pseudo = (cfg.method == "s2l" and with_ema) or (cfg.method == "pseudo"
                                                                and after_warmup)
            loader = torch.utils.data.DataLoader(
                CropDataset(cfg, data, store, plan, epoch, ks, with_ema),
                batch_size=per_rank_batch, shuffle=False, num_workers=cfg.loader_workers,
                pin_memory=device.type == "cuda", persistent_workers=False)
            sums: dict[str, float] = {}
            n_batches = 0
            b_task = progress.add_task(f"epoch {epoch + 1}", total=len(loader))
            train_model.train()
            for batch in loader:
                losses = train_step(train_model, optimizer, batch, method=step_method,
                                    use_pseudo=use_pseudo, threshold=cfg.threshold,
                                    pseudo_weight=cfg.pseudo_weight, scaler=scaler,
                                    autocast_dtype=amp_dtype, device=device)
                scheduler.step()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n_batches += 1
                progress.advance(b_task)
                if interrupt.hit:
                    break
            progress.remove_task(b_task)
            if interrupt.hit:
                console.print(f"interrupted in epoch {epoch + 1}: saving a checkpoint after "
                              f"epoch {epoch} (resume with --resume repeats epoch {epoch + 1})")
                # weights have moved on within the epoch; the store and epoch count have not
                checkpoint(epoch)
                raise KeyboardInterrupt
            row = {"epoch": epoch + 1, **ctx.mean({k: v / max(n_batches, 1)
                                                  for k, v in sums.items()})}
            row["lr"] = optimizer.param_groups[0]["lr"]
            ensemble_due = (cfg.method == "s2l" and (epoch + 1) % cfg.ensemble_every == 0
                            and (after_warmup or not fast))
            if ensemble_due and epoch + 1 == cfg.epochs:
                ensemble_pending = True
            elif ensemble_due:
                ts = time.perf_counter()
                row.update(ensemble_step(model, store, data, ctx, device=device,
                                         amp_dtype=infer_dtype, tile=cfg.tile))
                row["ensemble_s"] = time.perf_counter() - ts
                if ctx.is_main and cfg.panel_images:
                    plot_panel(out / "panels" / f"epoch_{epoch + 1:04d}.png", data, store,
                               threshold=cfg.threshold, n=cfg.panel_images, epoch=epoch + 1,
                               indices=store.owned)
            val_every = cfg.val_every or cfg.ensemble_every
            if val is not None and ctx.is_main and ((epoch + 1) % val_every == 0
                                                    or epoch + 1 == cfg.epochs):
                row.update(validate(model, val, device=device, amp_dtype=infer_dtype,
                                    tile=cfg.tile, min_size=cfg.min_size))
            row["epoch_s"] = time.perf_counter() - te
            history.append(row)
            last = row
            progress.advance(ep_task)
            console.print(_summary(row, cfg), highlight=False)
            ckpt_dir = None
            if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                ckpt_dir = checkpoint(epoch + 1)
            if ctx.is_main:
                write_metrics_csv(out / "metrics.csv", history)
                if ckpt_dir is not None or epoch + 1 == cfg.epochs:
                    plot_curves(out / "curves.png", history)
            ctx.report(row, ckpt_dir)
    return last


def _summary(row: dict, cfg: TrainConfig) -> str:
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

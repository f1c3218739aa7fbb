"""The Scribble2Label training loop: epochs, the EMA ensemble, checkpoints.

Read it top to bottom, as torchvision's ``references/segmentation/train.py``:
:class:`Context` (how the loop talks to its peers), :func:`_build` (model and
optimiser), :func:`ensemble_step` and :func:`fast_start` (the EMA store),
:func:`measure_holdout` (the held-out strokes), :func:`validate`,
:func:`train_one_epoch`, :class:`TrainState` with :func:`save_state` and
:func:`restore_state`, and :func:`fit`.

The rest lives beside it: the data in memory and each epoch's crops
(:mod:`s2l_tools.training.data`), the work of one step, a plain function of
tensors (:func:`s2l_tools.training.step.train_step`), the reports
(:mod:`s2l_tools.training.reports`), the run folder's files
(:mod:`s2l_tools.training.rundir`), whole-image prediction
(:func:`s2l_tools.inference.predict.predict_probability`, shared with
``s2l-predict``), Ray (:mod:`s2l_tools.training.distributed`, plugged in
through :class:`Context`) and test-only hooks (:mod:`s2l_tools.training._faults`).

Determinism: the crops of epoch ``e`` come from ``numpy.random.default_rng(
[seed, e, k])``, so a run resumed from a checkpoint draws exactly what a
straight run draws.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from s2l_tools import labels as L
from s2l_tools.device import (CpuThreads, autocast_dtype, inference_dtype, select_device,
                              usable_cpus)
from s2l_tools.errors import S2LError
from s2l_tools.training import rundir
from s2l_tools.training.checkpoint import ModelMeta, load_checkpoint
from s2l_tools.training.config import SELF_SUPERVISED, TrainConfig, upgrade_settings
from s2l_tools.training.data import (
    CropDataset,
    TrainingData,
    compare_inputs,
    epoch_plan,
    inputs_record,
    load_training_data,
    load_validation,
    samples_per_epoch,
    store_owners,
)

__all__ = ["Context", "ensemble_step", "fast_start", "start_from", "measure_holdout",
           "validate", "train_one_epoch", "TrainState", "save_state", "restore_state",
           "model_meta", "fit", "RESUME_FREE"]

#: Settings a resumed run may change: where and how fast it runs, how long, what it
#: reports. Any other change (method, lr, crops, ...) is refused: train a new run.
RESUME_FREE = frozenset({
    "data", "out", "val", "epochs", "device", "amp", "deterministic", "checkpoint_every",
    "val_every", "panel_images", "min_size", "mask_threshold", "auto_threshold",
    "loader_workers", "num_workers",
    "use_gpu", "address", "cpus_per_worker", "max_failures", "store", "threads"})



# --------------------------------------------------------------------- distribution
class Context:
    """How the loop talks to its peers. The default is one process, no peers.

    A distributed wrapper (see :mod:`s2l_tools.training.distributed`) overrides
    ``rank``, ``world_size``, :meth:`wrap_model`, :meth:`sync_store`,
    :meth:`mean` and :meth:`report`, and where needed :meth:`device`,
    :meth:`sync_buffers`, :meth:`all_gather_bytes`, :meth:`checkpoint_dir`
    and :meth:`initial_checkpoint`.
    """

    rank = 0
    world_size = 1
    #: one process alone: its CPU threads follow ``--threads`` or the machine's load
    #: (:class:`s2l_tools.device.CpuThreads`); a distributed worker keeps the threads
    #: its launcher gave it (``--cpus-per-worker``)
    adapts_threads = True
    #: Test-only hooks (:class:`s2l_tools.training._faults.FaultHooks`); None in real runs.
    test_hooks = None

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

    def all_gather_bytes(self, data: bytes) -> list[bytes]:
        """Every rank's ``data`` (of the same length on every rank), in rank order."""
        return [bytes(data)]

    def checkpoint_dir(self, out: Path) -> Path:
        """Where the main rank writes ``checkpoint.pt`` and ``model.pt``."""
        return out

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        """Called after every epoch (checkpoint_dir when one was written)."""

    def initial_checkpoint(self) -> Path | None:
        return None


# -------------------------------------------------------------------------- model
def _build(cfg: TrainConfig, in_channels: int, device, weights=None):
    from s2l_tools.training.model import build_model, param_groups

    model = build_model(encoder=cfg.encoder, in_channels=in_channels, classes=2,
                        weights=weights, seed=cfg.seed)
    # channels_last always: prediction (torch_prob_fn) uses it too, and a model
    # whose memory format changed mid-run would not resume bit for bit
    model = model.to(device=device, memory_format=torch.channels_last)
    groups = param_groups(model, cfg.lr, decoder_mult=cfg.decoder_lr_mult,
                          weight_decay=cfg.weight_decay)
    # foreach: the multi-tensor update, torch's default on CUDA, also on the CPU, where
    # torch would loop over the tensors in Python (152 for the preset's resnet18): 0.52-0.68
    # of the loop's time on 2 cores (benchmarks/speed.py's optim row; docs/benchmarks.md
    # "RAdam's multi-tensor update on the CPU"); the same arithmetic, rounded differently
    # in the last bit
    optimizer = torch.optim.RAdam(groups, lr=cfg.lr, foreach=True)
    return model, optimizer


def _encoder_weights(cfg: TrainConfig, data: TrainingData, restored, device, console):
    """``cfg.encoder_weights``; ``'self'``: the cached file of the encoder pretrained on
    ``data``'s images (None when a checkpoint or ``--from`` run replaces the weights).
    Under Ray every worker finds (or makes) the same file; DDP starts all from rank 0's."""
    if cfg.encoder_weights != SELF_SUPERVISED:
        return cfg.encoder_weights
    if restored or cfg.from_run:
        return None
    from s2l_tools.training.pretrain import PretrainSettings, cached_pretrained

    settings = PretrainSettings(encoder=cfg.encoder, steps=cfg.pretrain_steps,
                                crop=cfg.crop, batch_size=cfg.batch_size, seed=cfg.seed)
    t = time.perf_counter()
    path = cached_pretrained(data.images, settings, device=device)  # at fit's thread count
    console.print(f"encoder: self-supervised on {len(data.images)} image(s), {path} "
                  f"({time.perf_counter() - t:.1f} s)", highlight=False)
    return path


def model_meta(cfg: TrainConfig, in_channels: int) -> ModelMeta:
    """What ``model.pt`` tells prediction: the tiling and post-processing training used."""
    return ModelMeta(encoder=cfg.encoder, in_channels=in_channels, classes=2,
                     channel=cfg.channel, tile=cfg.tile, overlap=cfg.tile // 8,
                     threshold=cfg.mask_threshold, min_size=cfg.min_size,
                     diameter=float(cfg.diameter))


def _tiling(in_channels: int, tile: int) -> ModelMeta:
    """The tiling of whole-image prediction in training (that of :func:`model_meta`)."""
    return ModelMeta(in_channels=in_channels, tile=tile, overlap=tile // 8)


# ------------------------------------------------------------------------ ensemble
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
    """Update the EMA store from fresh predictions; return train-mask and held-out scores.

    A replicated store: each rank predicts its share (image ``i`` goes to rank
    ``i % world``), then :meth:`Context.sync_store` makes the store identical
    everywhere. A sharded store (``store.is_shard``): each rank predicts the
    images it holds, and nothing is exchanged. Images are predicted whole
    (tiled, un-augmented, eval mode) by
    :func:`s2l_tools.inference.predict.predict_probability`, as ``s2l-predict`` does.
    The same predictions score the held-out strokes (see :func:`measure_holdout`).
    """
    from s2l_tools.evaluation.metrics import foreground_iou
    from s2l_tools.inference.predict import predict_probability

    mine, owners = _my_images(store, len(data.images), ctx)
    ctx.sync_buffers(model)  # every rank predicts with the same BatchNorm statistics
    meta = _tiling(data.in_channels, tile)
    ious = []
    tally = _HoldoutTally(data.heldout)
    for i in mine:
        prob = predict_probability(model, data.images[i], meta, device=device, amp=amp_dtype,
                                   batch_size=1)
        store.update(i, prob)
        if data.masks[i] is not None:
            ious.append(foreground_iou(prob > 0.5, data.masks[i] > 0))
        tally.add(i, prob)
    if not store.is_shard:
        ctx.sync_store(store, owners)
    scores = tally.scores(ctx) if data.heldout else {}
    if ctx.world_size > 1:  # ratio of the ranks' sums: the same on every rank
        s = ctx.mean({"iou_sum": float(np.sum(ious)), "iou_n": float(len(ious))})
        return ({"train_iou": s["iou_sum"] / s["iou_n"]} if s["iou_n"] > 0 else {}) | scores
    return ({"train_iou": float(np.mean(ious))} if ious else {}) | scores


#: what :func:`_holdout_counts` counts, in order (summed over images and ranks)
_HOLDOUT_KEYS = ("holdout_fg_right", "holdout_fg_px", "holdout_bg_right", "holdout_bg_px")


def _holdout_counts(prob: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """Pixels of one image's held-out strokes: (foreground predicted foreground, foreground,
    background predicted background, background), at probability 0.5."""
    fg = heldout == L.FOREGROUND
    bg = heldout == L.BACKGROUND
    cell = prob > 0.5
    return np.array([np.count_nonzero(cell & fg), np.count_nonzero(fg),
                     np.count_nonzero(bg & ~cell), np.count_nonzero(bg)], dtype=np.float64)


class _HoldoutTally:
    """The held-out strokes' pixel counts (:func:`_holdout_counts`) over the images a rank
    predicts; :meth:`scores` sums them over the ranks (a collective)."""

    def __init__(self, heldout):
        self.heldout = heldout
        self.counts = np.zeros(len(_HOLDOUT_KEYS))

    def add(self, i: int, prob: np.ndarray) -> None:
        """Count image ``i``'s held-out pixels against its probability map (none held out:
        nothing)."""
        if self.heldout and self.heldout[i] is not None:
            self.counts += _holdout_counts(prob, self.heldout[i])

    def scores(self, ctx: Context) -> dict:
        return _holdout_scores(dict(zip(_HOLDOUT_KEYS, self.counts.tolist())), ctx)


def _holdout_scores(sums: dict, ctx: Context) -> dict:
    """``holdout_fg`` / ``holdout_bg`` (shares right, 0-1) from this rank's pixel counts
    (:data:`_HOLDOUT_KEYS`), summed over the ranks; a class with no held-out pixel is left out.
    A collective: every rank calls it."""
    if ctx.world_size > 1:  # ratios of the ranks' means = ratios of their sums
        sums = ctx.mean(sums)
    out = {}
    if sums["holdout_fg_px"] > 0:
        out["holdout_fg"] = sums["holdout_fg_right"] / sums["holdout_fg_px"]
    if sums["holdout_bg_px"] > 0:
        out["holdout_bg"] = sums["holdout_bg_right"] / sums["holdout_bg_px"]
    return out


def measure_holdout(model, data: TrainingData, ctx: Context, *, device, amp_dtype,
                    tile) -> dict:
    """The model's accuracy on the strokes held out of training (``--holdout-strokes``).

    Predicts, as :func:`ensemble_step` does (whole, tiled, eval mode), the images
    with held-out strokes only, and leaves the EMA store alone. Rank ``r`` of ``W``
    predicts every ``W``-th of them; the pixel counts are summed over the ranks.

    Returns
    -------
    scores : dict
        ``holdout_fg``: share of held-out foreground pixels predicted foreground
        (p > 0.5); ``holdout_bg``: the same for background. A class without
        held-out strokes is left out; nothing held out: empty.
    """
    from s2l_tools.inference.predict import predict_probability

    if not data.heldout:
        return {}
    todo = [i for i, h in enumerate(data.heldout) if h is not None]
    ctx.sync_buffers(model)  # every rank predicts with the same BatchNorm statistics
    meta = _tiling(data.in_channels, tile)
    tally = _HoldoutTally(data.heldout)
    for i in todo[ctx.rank::ctx.world_size]:
        tally.add(i, predict_probability(model, data.images[i], meta, device=device,
                                         amp=amp_dtype, batch_size=1))
    return tally.scores(ctx)


def fast_start(store, data: TrainingData, ctx: Context, *, kind: str, seed: int,
               min_agreement: float) -> tuple[float, str, float | None]:
    """``--fast-start``: the EMA store's first map from classic segmentation of the scribbles.

    ``kind`` 'forest', 'grabcut' or 'forest+grabcut' (:mod:`s2l_tools.classic.start`:
    the forest is trained on the scribbles of every training image, the same seeded
    forest on every rank; for 'forest+grabcut', GrabCut is left out when its foreground
    and the forest's overlap by less than ``min_agreement`` on the median of a sample
    of the images, the same sample on every rank). Each rank computes its share of the
    images as :func:`ensemble_step` does, on as many threads as torch has (GrabCut and
    the forest's trees release the GIL; the maps do not depend on the thread count).
    Returns the seconds it took, for 'forest+grabcut' a note on the choice, and the
    share of the training pixels the forest calls cell (None without a forest; see
    :func:`s2l_tools.training.auto_threshold.forest_share`).
    """
    from concurrent.futures import ThreadPoolExecutor

    from s2l_tools.classic import start
    from s2l_tools.classic.forest import ForestSettings, fit_forest
    from s2l_tools.evaluation.metrics import foreground_iou
    from s2l_tools.training.auto_threshold import forest_share

    t = time.perf_counter()
    threads = max(1, torch.get_num_threads())
    forest = (fit_forest(data.images, data.scribbles, settings=ForestSettings(n_jobs=threads),
                         seed=seed) if "forest" in kind else None)
    if forest is not None:
        forest.set_params(n_jobs=1)  # the images are spread over the threads instead

    def maps(i: int, grabcut: bool):
        return start.classic_maps(data.images[i], data.scribbles[i], forest=forest,
                                  grabcut=grabcut, seed=seed)

    mine, owners = _my_images(store, len(data.images), ctx)
    use_grabcut, note, done = "grabcut" in kind, "", {}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        if kind == "forest+grabcut":
            sample = start.sample_images(len(data.images))
            done = dict(zip(sample, pool.map(lambda i: maps(i, True), sample)))
            agree = [foreground_iou(p > 0.5, g) for p, g in done.values()]
            use_grabcut = start.keep_grabcut(agree, min_agreement)
            median = float(np.median(agree)) if agree else 1.0
            note = (f" (GrabCut kept: its foreground and the forest's overlap by IoU "
                    f"{median:.2f} on the median image)" if use_grabcut else
                    f" (GrabCut left out: its foreground and the forest's overlap by IoU "
                    f"{median:.2f} on the median image, under --grabcut-agreement "
                    f"{min_agreement:g}; the forest alone)")

        def first(i: int) -> tuple[np.ndarray, int]:
            prob, proposal = done[i] if i in done else maps(i, use_grabcut)
            cells = int(np.count_nonzero(prob >= 0.5)) if prob is not None else 0
            return start.combine(prob, proposal if use_grabcut else None), cells

        cells = pixels = 0
        for i, (first_map, n) in zip(mine, pool.map(first, mine)):
            store.update(i, first_map)
            cells, pixels = cells + n, pixels + first_map.size
    if not store.is_shard:
        ctx.sync_store(store, owners)
    share = (forest_share(data, ctx, seed=seed, counts=(cells, pixels)) if forest is not None
             else None)
    return time.perf_counter() - t, note, share


def start_from(state: TrainState, run, cfg: TrainConfig, data: TrainingData, ctx: Context,
               *, device, amp_dtype, tile) -> str:
    """``--from RUN``: start ``state`` from RUN's weights and EMA store; return a summary.

    The model takes RUN's latest weights and the optimiser RUN's moments (Adam's
    running averages, so the first steps on the new strokes are not the jolt of a
    fresh Adam: every weight moved by the full learning rate); the schedule starts
    afresh (:func:`s2l_tools.training.config.retrain_settings`). Each image of ``data`` that RUN trained on, at the same size,
    takes RUN's EMA map; where its scribbles changed, the map is reset to 0.5
    where the strokes contradict it (:func:`s2l_tools.training.ema.forget_disagreement`).
    Every other image (new, or RUN kept no map for it: a pce run) gets the
    model's prediction as its first map. Checks first, so a refused ``--from``
    writes nothing: RUN must hold a checkpoint of the same encoder, for images
    of ``data``'s channel count.
    """
    from s2l_tools.training.ema import EmaStore, forget_disagreement
    from s2l_tools.inference.predict import predict_probability

    ckpt_path = rundir.latest_checkpoint(Path(run))
    if ckpt_path is None:
        raise S2LError(f"--from {run}: no {rundir.CHECKPOINT} there; give the run folder of an "
                       "earlier s2l-train")
    ckpt = load_checkpoint(ckpt_path)
    encoder = ckpt.get("config", {}).get("encoder")
    if encoder != cfg.encoder:
        raise S2LError(f"--from {run}: a {encoder} model, and this run's --encoder is "
                       f"{cfg.encoder}; drop --encoder (RUN's is used) or train from scratch")
    channels = ckpt.get("meta", {}).get("in_channels")
    if channels != data.in_channels:
        raise S2LError(f"{cfg.data}: images of {data.in_channels} channel(s), the model in {run} "
                       f"takes {channels}; give images like RUN's (or the --channel it used)")
    state.model.load_state_dict(ckpt["model"])
    saved = ckpt.get("optimizer") or {}
    groups = state.optimizer.state_dict()
    if [len(g["params"]) for g in saved.get("param_groups", [])] == [
            len(g["params"]) for g in groups["param_groups"]]:
        state.optimizer.load_state_dict({**groups, "state": saved.get("state", {})})
    record = ckpt.get("inputs") or rundir.read_inputs(run)
    old_maps: dict[str, tuple[np.ndarray, str]] = {}
    if record is not None and ckpt.get("config", {}).get("method") == "s2l":
        old = EmaStore([tuple(e["shape"]) for e in record["images"]], dtype="float32")
        rundir.load_store(old, ckpt_path, ckpt)
        for j, e in enumerate(record["images"]):
            if old.initialized(j):
                old_maps[e["stem"]] = (old.get(j), e)
    store = state.store
    mine, owners = _my_images(store, len(data.images), ctx)
    meta = _tiling(data.in_channels, tile)
    carried = changed = predicted = reset_px = 0
    for i in mine:
        stem, shape = data.stems[i], list(data.shapes[i])
        got = old_maps.get(stem)
        if got is not None and got[1]["shape"] == shape and got[1]["image"] == data.digests[i]["image"]:
            y, entry = got
            if entry["scribbles"] != data.digests[i]["scribbles"]:
                y, n = forget_disagreement(y, data.scribbles[i])
                changed += 1
                reset_px += n
            store.update(i, y)
            carried += 1
        else:
            store.update(i, predict_probability(state.model, data.images[i], meta, device=device,
                                                amp=amp_dtype, batch_size=1))
            predicted += 1
    if not store.is_shard:
        ctx.sync_store(store, owners)
    return (f"from {run} (epoch {ckpt.get('epoch')}): EMA maps of {carried} image(s) kept, "
            f"{changed} with changed scribbles ({reset_px} px reset where new strokes "
            f"disagree), {predicted} image(s) predicted afresh")


# ----------------------------------------------------------------------- validation
def validate(model, val, *, device, amp_dtype, tile, min_size, threshold,
             diameter: float = 0.0) -> dict:
    """Mean IoU, mDice, F1@0.5 of the model on validation images.

    Each image is segmented by :func:`s2l_tools.inference.predict.predict_image`
    (foreground where the probability is above ``threshold``, holes filled, objects
    below ``min_size`` removed; with ``diameter``, at the scale a first pass finds), as
    ``s2l-predict`` segments it with the saved model.
    """
    from dataclasses import replace

    from s2l_tools.evaluation.metrics import score_pair
    from s2l_tools.inference.predict import predict_image

    scores = []
    for image, truth in zip(val[1], val[2]):
        meta = replace(_tiling(image.shape[0], tile), diameter=float(diameter))
        pred, _ = predict_image(model, image, meta, device=device,
                                amp=amp_dtype, threshold=threshold, min_size=min_size,
                                batch_size=1)
        scores.append(score_pair(pred, truth))
    return {f"val_{k}": float(np.mean([s[k] for s in scores]))
            for k in ("iou", "mdice", "f1_50")}


# -------------------------------------------------------------------------- epochs
def train_one_epoch(train_model, state: TrainState, loader, *, cfg: TrainConfig, method: str,
                    use_pseudo: bool, amp_dtype, device, progress, interrupt) -> dict:
    """One pass over ``loader``: a :func:`~s2l_tools.training.step.train_step` and a
    scheduler step per batch. Returns this rank's mean of each loss term.

    Stops early (after the current step) when ``interrupt.hit``.
    """
    from s2l_tools.training.step import train_step

    sums: dict[str, float] = {}
    n_batches = 0
    task = progress.add_task(f"epoch {state.epoch + 1}", total=len(loader))
    train_model.train()
    for batch in loader:
        losses = train_step(train_model, state.optimizer, batch, method=method,
                            use_pseudo=use_pseudo, threshold=cfg.threshold,
                            pseudo_weight=cfg.pseudo_weight,
                            crf_weight=cfg.crf_weight_used, pseudo_margin=cfg.pseudo_margin,
                            scaler=state.scaler,
                            autocast_dtype=amp_dtype, device=device)
        state.scheduler.step()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n_batches += 1
        progress.advance(task)
        if interrupt.hit:
            break
    progress.remove_task(task)
    return {k: v / max(n_batches, 1) for k, v in sums.items()}




# ---------------------------------------------------------------------- checkpoints
@dataclass
class TrainState:
    """Everything a checkpoint restores: what is trained and where the loop stands."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    store: object  # EmaStore (whole, or this rank's shard)
    #: epochs finished
    epoch: int = 0
    #: one metrics row per finished epoch
    history: list[dict] = field(default_factory=list)
    #: the ensemble pass due after the last epoch is skipped (it would change nothing
    #: that is used); a run resumed for more epochs makes it up first
    ensemble_pending: bool = False
    #: what the run trains on (:func:`~s2l_tools.training.data.inputs_record`)
    inputs: dict | None = None
    #: the share of the training pixels the strokes' forest calls cell (kept from the fast
    #: start for ``--auto-threshold``; None: not known yet)
    forest_share: float | None = None


def save_state(state: TrainState, *, cfg: TrainConfig, meta: ModelMeta, ctx: Context,
                    out: Path) -> Path | None:
    """Write ``checkpoint.pt`` and ``model.pt`` (main rank) and the EMA shards (every rank
    of a sharded store) into ``ctx.checkpoint_dir(out)``; return it (None: nothing written)."""
    store = state.store
    if not ctx.is_main and not store.is_shard:
        return None
    where = ctx.checkpoint_dir(out)
    entries = {"epoch": state.epoch}
    if ctx.is_main:
        entries = {
            "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict() if state.scaler is not None else {},
            "ema_shards": ctx.world_size if store.is_shard else 0,
            "torch_rng": torch.get_rng_state(),
            "config": cfg.to_dict(), "meta": meta.__dict__, "epoch": state.epoch,
            "history": state.history, "ensemble_pending": state.ensemble_pending,
            "inputs": state.inputs, "forest_share": state.forest_share,
        }
    rundir.save_training_files(where, entries, store=store, rank=ctx.rank, is_main=ctx.is_main,
                               model_state=state.model.state_dict() if ctx.is_main else None,
                               meta=meta)
    return where


def _changed_settings(saved: dict, cfg: TrainConfig) -> list[str]:
    """``--name old -> new`` for each setting outside :data:`RESUME_FREE` that differs."""
    now, saved = cfg.to_dict(), upgrade_settings(saved)
    return [f"--{k.replace('_', '-')} {saved.get(k, '(unset)')} -> {now[k]}"
            for k in now if k not in RESUME_FREE and k in saved and saved[k] != now[k]]


def _inputs_differ(diff: dict[str, list[str]]) -> str:
    """``diff`` (:func:`~s2l_tools.training.data.compare_inputs`) in words."""
    words = {"scribbles": ("scribbles changed", "scribbles changed"),
             "images": ("image changed", "images changed"),
             "added": ("new image", "new images"), "removed": ("image gone", "images gone")}
    parts = []
    for kind, stems in diff.items():
        if stems:
            more = f" and {len(stems) - 3} more" if len(stems) > 3 else ""
            parts.append(f"{words[kind][len(stems) > 1]}: {', '.join(stems[:3])}{more}")
    return "; ".join(parts)


def restore_state(state: TrainState, ckpt_path: Path, cfg: TrainConfig,
                  data: TrainingData | None = None) -> None:
    """Load a checkpoint written by :func:`save_state` into ``state``, in place.

    Refuses (S2LError) a checkpoint trained with other settings (those outside
    :data:`RESUME_FREE`) or, given ``data``, on other images or scribbles than
    ``data`` (the record of :func:`~s2l_tools.training.data.inputs_record` in the
    checkpoint; checkpoints written before it was kept are not checked).
    """
    ckpt = load_checkpoint(ckpt_path)
    run = Path(ckpt_path).parent
    if ckpt["config"].get("method") != cfg.method or ckpt["config"].get("encoder") != cfg.encoder:
        raise S2LError(f"{ckpt_path}: the checkpoint was trained with method "
                       f"{ckpt['config'].get('method')}, encoder {ckpt['config'].get('encoder')};"
                       " resume with the same settings or use a new --out")
    changed = _changed_settings(ckpt["config"], cfg)
    if changed:
        raise S2LError(f"{ckpt_path}: --resume with other settings than the run's "
                       f"({', '.join(changed)}); resume with the run's settings (only --epochs, "
                       "--device and the like may change), or train a new --out with "
                       f"--from {run}")
    if data is not None and ckpt.get("inputs") is not None:
        diff = compare_inputs(ckpt["inputs"], data)
        if any(diff.values()):
            fix = (f"to train on the new strokes use s2l-train {cfg.data} --out NEW --from {run}"
                   if not (diff["images"] or diff["removed"]) else
                   f"resume with the data the run trained on, or start from its weights with "
                   f"s2l-train {cfg.data} --out NEW --from {run}")
            raise S2LError(f"{cfg.data}: not the data this run trained on "
                           f"({_inputs_differ(diff)}); {fix}")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    if state.scaler is not None and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    rundir.load_store(state.store, ckpt_path, ckpt)
    torch.set_rng_state(ckpt["torch_rng"])
    state.history = list(ckpt.get("history", []))
    state.epoch = int(ckpt["epoch"])
    state.ensemble_pending = bool(ckpt.get("ensemble_pending", False))
    state.forest_share = ckpt.get("forest_share")


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


def _progress(console, ctx: Context):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    transient=False, disable=not ctx.is_main)


def _not_finite(row: dict, cfg: TrainConfig, out: Path, saved_at: int | None) -> str:
    """The one-line error of a run whose loss stopped being a finite number."""
    kept = (f"the last good checkpoint (epoch {saved_at}) is kept in {out}" if saved_at
            else "no checkpoint was written")
    terms = ", ".join(f"{k} {row[k]:.3g}" for k in ("l_sp", "l_up", "l_crf") if k in row)
    what = (f"the training loss is {row['loss']}" if not math.isfinite(row["loss"])
            else "the weights are not finite")
    return (f"--lr {cfg.lr:g}, --pseudo-weight {cfg.pseudo_weight:g}: {what} "
            f"in epoch {row['epoch']} ({terms}); stopped, {kept}; lower --lr "
            "or fix the loss weights and train a new --out (--from RUN starts from a kept "
            "checkpoint)")


def _auto_threshold(model, state: TrainState, data: TrainingData, ctx: Context,
                    cfg: TrainConfig, console, predict: dict,
                    holdout: bool = False) -> tuple[ModelMeta, dict]:
    """``--auto-threshold``: the model's metadata with the cut of
    :func:`s2l_tools.training.auto_threshold.final_threshold` (the forest's share from the
    fast start, or fitted now), and metrics.csv's record of it; says what it did. With
    ``holdout`` the record starts with the held-out strokes' scores, counted on the same
    pass (:func:`measure_holdout`'s, without a pass of its own). A collective: every rank
    calls it."""
    from dataclasses import replace

    from s2l_tools.training import auto_threshold as auto
    from s2l_tools.training import reports

    t = time.perf_counter()
    if state.forest_share is None:  # no forest start (or --from): fit the forest now
        state.forest_share = auto.forest_share(data, ctx, seed=cfg.seed)
    tally = _HoldoutTally(data.heldout)
    cut, net, at_cut, image_max = auto.final_threshold(
        model, data, ctx, share=state.forest_share, floor=cfg.mask_threshold,
        meta=_tiling(data.in_channels, predict["tile"]), device=predict["device"],
        amp_dtype=predict["amp_dtype"], each=tally.add if holdout else None)
    scores = tally.scores(ctx) if holdout else {}
    console.print(reports.auto_threshold_line(cut, floor=cfg.mask_threshold, network=net,
                                              at_cut=at_cut, forest=state.forest_share,
                                              seconds=time.perf_counter() - t),
                  highlight=False, soft_wrap=True)
    record = {**scores, "mask_threshold": cut, "forest_share": state.forest_share,
              "network_share": net, "train_share_max": image_max}
    return (replace(model_meta(cfg, data.in_channels), threshold=cut,
                    train_share_max=round(image_max, 4)), record)


def _drop_stray_foreground(data: TrainingData, when: str, console) -> TrainingData:
    """``--clean-strokes on|auto``: foreground scribble pixels coloured like the background
    left out (:mod:`s2l_tools.data.clean`; ``auto``: only when more than
    :data:`~s2l_tools.data.clean.AUTO_SHARE` of them are). Says how many."""
    from dataclasses import replace

    from s2l_tools.data.clean import AUTO_SHARE, drop_stray_foreground

    t = time.perf_counter()
    scribbles, dropped, total = drop_stray_foreground(data.images, data.scribbles)
    share = dropped / max(total, 1)
    keep = when == "auto" and share <= AUTO_SHARE
    console.print(f"clean strokes{' (auto)' if when == 'auto' else ''}: {dropped} of {total} "
                  f"foreground scribble pixels ({100 * share:.1f} %) are coloured like the "
                  "background: " + (f"{100 * AUTO_SHARE:g} % or less, so the strokes are kept "
                                    "as drawn" if keep else "left out")
                  + f" ({time.perf_counter() - t:.1f} s)", highlight=False, soft_wrap=True)
    return data if keep else replace(data, scribbles=scribbles)


def _one_object_size(cfg: TrainConfig, data: TrainingData, *, resume: bool,
                     console) -> TrainingData:
    """``--diameter``: ``data`` resized so each image's median object has that diameter
    (:mod:`s2l_tools.training.scale`); the scales an earlier run recorded for the same
    images (``--resume``, ``--from``) are kept. Says what it did."""
    from s2l_tools.training import scale

    t = time.perf_counter()
    source = cfg.from_run or (cfg.out if resume else None)
    record = rundir.read_inputs(source) if source else None
    scales, found = scale.training_scales(data, cfg.diameter, record=record,
                                          from_masks=cfg.method == "full", seed=cfg.seed,
                                          threads=max(1, torch.get_num_threads()))
    data = scale.rescale(data, scales)
    how = ("measured on the masks" if cfg.method == "full" else
           "estimated from a random forest on the scribbles")
    kept = len(scales) - len(found)
    console.print(f"one object size: {len(scales)} image(s) resized so their median object is "
                  f"{cfg.diameter:g} px across (x{min(scales):.2f} to x{max(scales):.2f}, "
                  f"median x{float(np.median(scales)):.2f}; diameters {how}"
                  + (f", {kept} scale(s) kept from {source}" if kept else "")
                  + f"; {time.perf_counter() - t:.1f} s)", highlight=False, soft_wrap=True)
    return data


def _check_batches(cfg: TrainConfig, batch: int, last: int, world_size: int) -> None:
    """A crop of 32 px leaves the encoder's deepest features 1 x 1: batch norm cannot train
    on a batch of one such crop (one value per channel), so every step needs two."""
    if cfg.crop == 32 and min(batch, last) < 2:
        per = f" on each of {world_size} workers" if world_size > 1 else ""
        raise S2LError(f"--crop {cfg.crop} with a step of 1 crop{per}: the network's deepest "
                       "features are then 1 x 1 px, too few for batch norm to train on; use "
                       "--crop 64 or more, or a --batch-size and --samples-per-epoch that give "
                       "every step at least 2 crops" + (" per worker" if per else ""))


# ------------------------------------------------------------------------------ fit
def fit(cfg: TrainConfig, *, resume: bool = False, ctx: Context | None = None,
        console=None) -> dict:
    """Train a model as ``cfg`` says; write checkpoints, metrics and the model to ``cfg.out``.

    Returns the last epoch's metrics, with ``holdout_strokes_out`` and
    ``holdout_strokes_all`` (strokes held out, strokes in all) when strokes are held
    out (``cfg.holdout_strokes``). With ``resume``, continues from
    ``cfg.out/checkpoint.pt`` exactly where it stopped.
    """
    from rich.console import Console

    from s2l_tools.training import reports
    from s2l_tools.training.ema import EmaStore

    ctx = ctx or Context()
    cfg.validate()
    out = Path(cfg.out)
    console = console or Console(stderr=True, quiet=not ctx.is_main, soft_wrap=True)
    device = ctx.device(cfg.device)
    # the thread count changes float rounding: --deterministic keeps it fixed
    threads = (CpuThreads(cfg.threads or (usable_cpus() if cfg.deterministic else None))
               if ctx.adapts_threads and device.type == "cpu" else None)
    amp_dtype = autocast_dtype(cfg.amp, device)  # training steps
    infer_dtype = inference_dtype(cfg.amp, device)  # ensemble passes and validation
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # data
    t0 = time.perf_counter()
    full = cfg.method == "full"
    # the held-out strokes: the same on every rank (the same seed, all the data)
    data = load_training_data(cfg.data, channel=cfg.channel, need_scribbles=not full,
                              need_masks=full, holdout=0.0 if full else cfg.holdout_strokes,
                              seed=cfg.seed)
    val = load_validation(cfg.val, channel=cfg.channel) if cfg.val else None
    console.print(f"loaded {len(data.images)} training image(s)"
                  + (f", {len(val[0])} validation image(s)" if val else "")
                  + f" in {time.perf_counter() - t0:.1f} s; device {device}")
    if data.stroke_counts:
        console.print(reports.holdout_split(data.stroke_counts), highlight=False,
                      soft_wrap=True)
    if cfg.clean_strokes != "off" and not full:
        data = _drop_stray_foreground(data, cfg.clean_strokes, console)
    if cfg.diameter:
        data = _one_object_size(cfg, data, resume=resume, console=console)
    # what the run's last report (and fit's result) says of the held-out strokes
    split_info = ({"holdout_strokes_out": sum(h for h, _ in data.stroke_counts.values()),
                   "holdout_strokes_all": sum(n for _, n in data.stroke_counts.values())}
                  if data.stroke_counts else {})

    # model, optimiser, schedule and EMA store; every rank takes the same number of
    # crops (and so of DDP steps): the last crops wrap around to the first ones, as
    # torch's DistributedSampler pads
    per_rank_batch = max(1, math.ceil(cfg.batch_size / ctx.world_size))
    per_rank_samples = math.ceil(samples_per_epoch(cfg, data) / ctx.world_size)
    iters = math.ceil(per_rank_samples / per_rank_batch)
    _check_batches(cfg, per_rank_batch, per_rank_samples - (iters - 1) * per_rank_batch,
                   ctx.world_size)
    model, optimizer = _build(cfg, data.in_channels, device,
                              _encoder_weights(cfg, data, resume or ctx.initial_checkpoint(),
                                               device, console))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=max(1, cfg.restart_epochs * iters))
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    owners = store_owners(cfg, data.shapes, ctx.world_size)  # None: every rank holds all
    store = EmaStore(data.shapes, alpha=cfg.ema_alpha,
                     owned=None if owners is None else
                     [i for i, o in enumerate(owners) if o == ctx.rank])
    state = TrainState(model, optimizer, scheduler, scaler, store)

    # resume
    state.inputs = inputs_record(data)
    ckpt_path = ctx.initial_checkpoint() or (rundir.latest_checkpoint(out) if resume else None)
    if ckpt_path is not None:
        restore_state(state, ckpt_path, cfg, data)
        console.print(f"resumed from {ckpt_path} after epoch {state.epoch}")
    elif resume:
        raise S2LError(f"{out / rundir.CHECKPOINT}: nothing to resume; start without --resume")
    elif cfg.from_run:
        if Path(cfg.from_run).resolve() == out.resolve():
            raise S2LError(f"--from {cfg.from_run}: the same folder as --out; give a new --out "
                           "(or continue the run itself with --resume)")
        console.print(start_from(state, cfg.from_run, cfg, data, ctx, device=device,
                                 amp_dtype=infer_dtype, tile=cfg.tile))
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.to_json(out / rundir.CONFIG)
        rundir.write_inputs(out, state.inputs)
    # --from: the store is the earlier run's, so the warm-up trains on the strokes alone
    fast = cfg.fast_start != "none" and not cfg.from_run
    if fast and ckpt_path is None:
        seconds, note, state.forest_share = fast_start(
            store, data, ctx, kind=cfg.fast_start, seed=cfg.seed,
            min_agreement=cfg.grabcut_agreement)
        console.print(f"fast start: {cfg.fast_start} pseudo-labels for {len(data.images)} "
                      f"image(s) in {seconds:.1f} s{note}", highlight=False)
    train_model = ctx.wrap_model(model)
    # --method full: the masks were loaded as "scribbles" on every pixel, so the
    # scribble loss is the full cross entropy
    step_method = "pce" if cfg.method == "full" else cfg.method
    meta = model_meta(cfg, data.in_channels)
    predict = dict(device=device, amp_dtype=infer_dtype, tile=cfg.tile)

    last: dict = {}
    saved_at = state.epoch if ckpt_path is not None else None  # the last checkpoint's epoch
    with (_progress(console, ctx) as progress, _Interrupt() as interrupt,
          threads or contextlib.nullcontext()):
        ep_task = progress.add_task("epochs", total=cfg.epochs, completed=state.epoch)
        if state.ensemble_pending and state.epoch < cfg.epochs:
            # the pass skipped after the last epoch of the run being resumed: the
            # checkpoint holds the weights it needs, and it draws no random numbers
            ensemble_step(model, store, data, ctx, **predict)
            state.ensemble_pending = False
        for epoch in range(state.epoch, cfg.epochs):
            te = time.perf_counter()
            if threads is not None and (line := threads.update()):
                console.print(line, highlight=False, soft_wrap=True)
            after_warmup = epoch >= cfg.warmup_epochs
            # a fast start fills the store before epoch 1: its pseudo-labels act at once,
            # and the network's own predictions join the store after the warm-up
            with_ema = cfg.method == "s2l" and (after_warmup or fast) and store.all_initialized
            use_pseudo = (cfg.method == "s2l" and with_ema) or (cfg.method == "pseudo"
                                                                and after_warmup)
            plan = epoch_plan(cfg, data, epoch, owners, ctx.world_size)
            ks = np.arange(per_rank_samples * ctx.world_size) % len(plan)
            loader = torch.utils.data.DataLoader(
                CropDataset(cfg, data, store, plan, epoch, ks[ctx.rank::ctx.world_size],
                            with_ema),
                batch_size=per_rank_batch, shuffle=False, num_workers=cfg.loader_workers,
                pin_memory=device.type == "cuda", persistent_workers=False)
            lr_used = optimizer.param_groups[0]["lr"]  # its first step's (the encoder's)
            losses = train_one_epoch(train_model, state, loader, cfg=cfg, method=step_method,
                                     use_pseudo=use_pseudo, amp_dtype=amp_dtype,
                                     device=device, progress=progress, interrupt=interrupt)
            if interrupt.hit:
                console.print(f"interrupted in epoch {epoch + 1}: saving a checkpoint after "
                              f"epoch {epoch} (resume with --resume repeats epoch {epoch + 1})")
                # weights have moved on within the epoch; the store and epoch count have not
                save_state(state, cfg=cfg, meta=meta, ctx=ctx, out=out)
                raise KeyboardInterrupt
            row = {"epoch": epoch + 1, **ctx.mean(losses)}
            # not the scheduler's value now, the next epoch's (at a cycle's end, the restart's)
            row["lr"] = lr_used
            # the same on every rank: the mean loss, and the weights DDP keeps equal
            if not (math.isfinite(row.get("loss", 0.0))
                    and all(bool(torch.isfinite(p).all()) for p in model.parameters())):
                raise S2LError(_not_finite(row, cfg, out, saved_at))

            # the EMA ensemble (skipped after the last epoch: see TrainState)
            ensemble_due = (cfg.method == "s2l" and (epoch + 1) % cfg.ensemble_every == 0
                            and (after_warmup or not fast))
            if ensemble_due and epoch + 1 == cfg.epochs:
                state.ensemble_pending = True
            elif ensemble_due:
                ts = time.perf_counter()
                row.update(ensemble_step(model, store, data, ctx, **predict))
                row["ensemble_s"] = time.perf_counter() - ts
            # the held-out strokes: measured by each ensemble pass (free), at the epochs
            # of an explicit --val-every (a pass of its own) and always after the last
            # epoch (the final model)
            val_every = cfg.val_every or cfg.ensemble_every
            holdout_due = bool(data.heldout and "ensemble_s" not in row
                               and (epoch + 1 == cfg.epochs
                                    or (cfg.val_every and (epoch + 1) % cfg.val_every == 0)))
            # after the last epoch --auto-threshold's pass over every image counts them too
            final_cut = cfg.auto_threshold and epoch + 1 == cfg.epochs
            if holdout_due and not final_cut:
                row.update(measure_holdout(model, data, ctx, **predict))
            if ctx.is_main and cfg.panel_images and ("ensemble_s" in row
                                                      or epoch + 1 == cfg.epochs):
                # after each ensemble pass, and always after the last epoch
                reports.plot_panel(rundir.panel_path(out, epoch + 1), data, store,
                                   threshold=cfg.threshold, n=cfg.panel_images,
                                   epoch=epoch + 1, indices=store.owned)

            # --auto-threshold: the final model's cut, before it is validated and saved
            if final_cut:
                meta, record = _auto_threshold(model, state, data, ctx, cfg, console, predict,
                                               holdout=holdout_due)
                row.update(record)

            # validation
            if val is not None and ctx.is_main and ((epoch + 1) % val_every == 0
                                                    or epoch + 1 == cfg.epochs):
                row.update(validate(model, val, min_size=cfg.min_size,
                                    threshold=meta.threshold, diameter=cfg.diameter,
                                    **predict))

            # record, checkpoint, report
            row["epoch_s"] = time.perf_counter() - te
            state.history.append(row)
            state.epoch = last_epoch = epoch + 1
            last = {**row, **split_info}
            progress.advance(ep_task)
            console.print(reports.epoch_summary(row, cfg), highlight=False, soft_wrap=True)
            ckpt_dir = None
            if last_epoch % cfg.checkpoint_every == 0 or last_epoch == cfg.epochs:
                ckpt_dir = save_state(state, cfg=cfg, meta=meta, ctx=ctx, out=out)
                saved_at = last_epoch
            if ctx.is_main:
                reports.write_metrics_csv(out / rundir.METRICS, state.history)
                if ckpt_dir is not None or last_epoch == cfg.epochs:
                    reports.plot_curves(out / rundir.CURVES, state.history,
                                        warmup_epochs=cfg.warmup_epochs)
            metrics = {**row, **split_info}
            if ctx.test_hooks is not None:  # tests only: faults, cross-rank checks
                metrics = ctx.test_hooks.epoch_end(ctx, store, metrics)
            ctx.report(metrics, ckpt_dir)
    return last

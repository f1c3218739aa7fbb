"""Data-parallel training on a Ray cluster: the only module that imports Ray.

The training loop is :func:`s2l_tools.training.engine.fit`, unchanged; this module
runs it in every worker of a Ray Train ``TorchTrainer`` (Train V2) and plugs
in a :class:`RayContext`:

- the model is wrapped in DDP (``ray.train.torch.prepare_model`` with
  :data:`DDP_OPTIONS`); each rank trains on crops ``k = rank, rank + W, ...``
  of the epoch's plan with ``batch_size / W`` crops per step, so a step sees
  the same global batch;
- the EMA store is *replicated* (``--store replicated``): at an ensemble step
  each rank predicts its images (image ``i`` on rank ``i % W``), then
  :meth:`TorchDistContext.sync_store` all-gathers the new maps and update
  counts, so every rank holds the same store (bit for bit; ``store.digest()``
  is equal); or *sharded* (``--store sharded``, and ``auto`` above 2 GiB of
  maps): each rank holds, predicts and trains on a fixed share of the images
  (:func:`s2l_tools.training.data.store_owners`) and nothing is exchanged; every rank
  then saves its shard beside the checkpoint (Ray merges the ranks' files);
- checkpoints go through ``ray.train.report`` into ``RUN/checkpoint_epoch_NNNN``
  (Ray's storage is ``RunConfig(storage_path=parent of RUN, name=RUN's name)``;
  the run folder's names are :mod:`s2l_tools.training.rundir`'s),
  and a restarted worker group, or a driver started again with ``--resume``,
  continues from the latest one (``ray.train.get_checkpoint``);
- ``RUN/model.pt``, ``metrics.csv``, ``curves.png`` and ``config.json`` are
  left in RUN at the end, as a single-process run leaves them.

Memory: the replicated store costs every worker ``sum(H * W) * 2`` bytes
(float16), plus at most ``W * 64 MB`` while it is gathered (in chunks); the
sharded store about ``1 / W`` of that.

Ray's API moves between releases; everything Ray-specific stays here (checked
with ray 2.60). The collective parts (:class:`TorchDistContext`) need only
``torch.distributed`` and are tested without Ray.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from s2l_tools.device import keep_freed_memory
from s2l_tools.errors import S2LError
from s2l_tools.training import rundir
from s2l_tools.training._faults import FaultHooks
from s2l_tools.training.config import TrainConfig
from s2l_tools.training.engine import Context
from s2l_tools.training.rundir import is_uri

__all__ = ["TorchDistContext", "RayContext", "fit_distributed", "check_shared_storage"]

_GATHER_CHUNK = 64 << 20  # bytes per rank and round of the store's all-gather

#: Precisions of the gradient all-reduce (``compress`` of the contexts).
COMPRESS = ("none", "fp16", "bf16")

#: DDP's settings in every worker (measured: docs/benchmarks.md, "Ray: where a step of
#: 2 workers x 1 thread goes").
#: ``static_graph``: the last decoder block's attention1 has no skip to act on, so
#: its parameters never get gradients; the graph is the same at every step.
#: ``gradient_as_bucket_view`` + ``batched_grad_copy``: the gradients live in DDP's
#: buckets (no copy back after the all-reduce), copied in with one ``_foreach_copy_``
#: per bucket. ``forward_sync_buffers=False``: no BatchNorm broadcast before every
#: forward; rank 0's running statistics are the ones saved, and
#: :meth:`TorchDistContext.sync_buffers` gives them to every rank before it predicts.
#: The default 25 MB buckets: one bucket (no overlap with the backward) measured the same.
DDP_OPTIONS = {"static_graph": True, "gradient_as_bucket_view": True,
               "batched_grad_copy": True, "forward_sync_buffers": False}


def _check_compress(compress: str) -> str:
    if compress not in COMPRESS:
        raise S2LError(f"compress {compress!r}: not a gradient precision; use one of "
                       f"{', '.join(COMPRESS)}")
    return compress


# ---------------------------------------------------------------- storage paths
def _storage(out: str) -> tuple[str, str]:
    """``(storage_path, name)`` of Ray's RunConfig for the run folder ``out``."""
    if is_uri(out):
        parent, _, name = str(out).rstrip("/").rpartition("/")
        if not name or parent.endswith(":/"):
            raise S2LError(f"--out {out}: a run folder URI needs a parent, e.g. "
                           "s3://bucket/runs/first")
        return parent, name
    path = Path(out).expanduser().resolve()  # Ray refuses relative storage paths
    return str(path.parent), path.name


def check_shared_storage(out: str, seen_by: dict[str, bool]) -> None:
    """Refuse a run folder that some node of the cluster cannot see.

    Parameters
    ----------
    out : str
        The run folder (a plain path; URIs are not checked).
    seen_by : dict of str to bool
        Node address -> whether a task on that node found the driver's marker file in ``out``.
    """
    blind = sorted(ip for ip, seen in seen_by.items() if not seen)
    if blind:
        raise S2LError(f"--out {out}: a local folder the cluster's node(s) {', '.join(blind)} "
                       "cannot see; on a multi-node cluster put RUN on shared storage "
                       "(the same path on every node) or give a URI (s3://..., gs://...)")


# ------------------------------------------------------------------- contexts
class TorchDistContext(Context):
    """A :class:`~s2l_tools.training.engine.Context` over an initialised ``torch.distributed`` group.

    Parameters
    ----------
    compress : {'none', 'fp16', 'bf16'}
        The precision of DDP's gradient all-reduce: float32 (``'none'``), or
        rounded to float16 / bfloat16 for the exchange (DDP's ``fp16_compress_hook``
        / ``bf16_compress_hook``; the sum is taken in that precision too).
    """

    adapts_threads = False  # each worker has the threads its launcher gave it

    def __init__(self, *, compress: str = "none"):
        import torch.distributed as dist

        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.compress = _check_compress(compress)

    def wrap_model(self, model):
        """``model`` in DDP with :data:`DDP_OPTIONS` (unwrapped when alone)."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        cuda = next(model.parameters()).device
        ids = dict(device_ids=[cuda]) if cuda.type == "cuda" else {}
        return self._hook(DistributedDataParallel(model, **ids, **DDP_OPTIONS))

    def _hook(self, wrapped):
        """Register the gradient compression of ``self.compress`` on a DDP model."""
        if self.compress != "none" and isinstance(
                wrapped, torch.nn.parallel.DistributedDataParallel):
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            hook = {"fp16": default_hooks.fp16_compress_hook,
                    "bf16": default_hooks.bf16_compress_hook}[self.compress]
            wrapped.register_comm_hook(None, hook)
        return wrapped

    @property
    def _comm(self) -> torch.device:
        """Where collectives' tensors must live: NCCL needs CUDA tensors, gloo takes CPU ones."""
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def sync_buffers(self, model) -> None:
        import torch.distributed as dist

        if self.world_size > 1:
            for buf in model.buffers():
                dist.broadcast(buf.data, 0)

    def mean(self, values: dict) -> dict:
        import torch.distributed as dist

        if self.world_size == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self._comm)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def all_gather_bytes(self, data: bytes) -> list[bytes]:
        import torch.distributed as dist

        if self.world_size == 1:
            return [bytes(data)]
        mine = torch.tensor(list(data), dtype=torch.uint8, device=self._comm)
        everyone = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine)
        return [bytes(t.cpu().tolist()) for t in everyone]

    def sync_store(self, store, owners: list[int]) -> None:
        """All-gather every rank's freshly updated maps and their update counts.

        Maps travel as bytes, in rounds of at most 64 MB per rank, so the
        extra memory is bounded by ``world_size * 64 MB`` whatever the store's size.
        """
        import torch.distributed as dist

        W = self.world_size
        if W > 1:
            shares = [[i for i, o in enumerate(owners) if o == r] for r in range(W)]
            rounds = [_chunks(store, s) for s in shares]  # the same lists on every rank
            itemsize = store.bytes_per_pixel
            dev = self._comm
            for j in range(max(len(r) for r in rounds)):
                groups = [r[j] if j < len(r) else [] for r in rounds]
                nbytes = [sum(h * w for h, w in (store.shapes[i] for i in g)) * itemsize
                          for g in groups]
                size = max(nbytes)
                send = torch.zeros(size, dtype=torch.uint8, device=dev)
                if groups[self.rank]:
                    mine = store.as_flat(groups[self.rank]).view(torch.uint8)
                    send[: mine.numel()] = mine.to(dev)
                bufs = [torch.empty(size, dtype=torch.uint8, device=dev) for _ in range(W)]
                dist.all_gather(bufs, send)
                for r, g in enumerate(groups):
                    if g and r != self.rank:
                        store.from_flat(bufs[r][: nbytes[r]].cpu().view(store.dtype), g)
                del send, bufs
            # from_flat leaves the counts alone: take each image's count from its owner
            counts = torch.tensor(store.n_updates, dtype=torch.int64, device=dev)
            gathered = [torch.empty_like(counts) for _ in range(W)]
            dist.all_gather(gathered, counts)
            gathered = torch.stack(gathered).cpu()
            store.set_n_updates(gathered[torch.as_tensor(owners), torch.arange(len(owners))])


def _chunks(store, indices: list[int]) -> list[list[int]]:
    """``indices`` cut into consecutive groups of at most ``_GATHER_CHUNK`` bytes (>= 1 image)."""
    out, cur, size = [], [], 0
    for i in indices:
        h, w = store.shapes[i]
        n = h * w * store.bytes_per_pixel
        if cur and size + n > _GATHER_CHUNK:
            out.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += n
    if cur:
        out.append(cur)
    return out


class RayContext(TorchDistContext):
    """The context of one Ray Train worker (rank, DDP, checkpoints through Ray).

    Parameters
    ----------
    out : Path
        Where the main rank writes the run's reports (RUN itself, or a local
        staging folder when RUN is a URI).
    compress : {'none', 'fp16', 'bf16'}
        The precision of DDP's gradient all-reduce (see :class:`TorchDistContext`).
    test_hooks : FaultHooks, optional
        Test-only hooks (:mod:`s2l_tools.training._faults`).
    """

    def __init__(self, *, out: Path, compress: str = "none",
                 test_hooks: FaultHooks | None = None):
        import ray.train

        tc = ray.train.get_context()
        self.rank = tc.get_world_rank()
        self.world_size = tc.get_world_size()
        self.out = Path(out)
        self.compress = _check_compress(compress)
        self.test_hooks = test_hooks
        self._stack = contextlib.ExitStack()
        self._initial: Path | None | bool = False

    def device(self, name: str):
        import ray.train.torch

        if name == "cpu":
            return torch.device("cpu")
        device = ray.train.torch.get_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL collectives use the current device
        return device

    def wrap_model(self, model):
        import ray.train.torch

        return self._hook(ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs=dict(DDP_OPTIONS)))

    def checkpoint_dir(self, out: Path) -> Path:
        return Path(tempfile.mkdtemp(prefix="s2l-ckpt-"))

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        import ray.train

        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        ckpt = name = None
        if checkpoint_dir is not None:  # the main rank wrote one (every rank: EMA shards)
            for f in rundir.REPORT_FILES if self.is_main else ():
                if (self.out / f).is_file():
                    shutil.copy2(self.out / f, checkpoint_dir / f)
            ckpt = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
            name = rundir.ray_checkpoint_name(metrics["epoch"])
        try:
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=name)
        finally:
            if checkpoint_dir is not None:
                shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def initial_checkpoint(self) -> Path | None:
        """``checkpoint.pt`` of the run's latest reported checkpoint (None: start afresh)."""
        import ray.train

        if self._initial is False:
            ckpt = ray.train.get_checkpoint()
            self._initial = None
            if ckpt is not None:
                self._initial = (Path(self._stack.enter_context(ckpt.as_directory()))
                                 / rundir.CHECKPOINT)
        return self._initial

    def close(self) -> None:
        self._stack.close()


# ---------------------------------------------------------------- worker side
def _train_fn(config: dict) -> None:
    """What every Ray Train worker runs: :func:`s2l_tools.training.engine.fit` with a RayContext."""
    import ray.train

    from s2l_tools.training.engine import fit

    import logging

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one line per report otherwise
    try:  # Train V2 logs every report (metrics and all) under a logger named by its file
        from ray.train.v2._internal.execution import context as _v2_context

        logging.getLogger(_v2_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # another Ray release: at worst, the extra lines come back
        pass
    torch.set_num_threads(config["threads"])
    keep_freed_memory()  # this worker's own process
    cfg = TrainConfig.from_dict(config["cfg"])
    staging = None
    if is_uri(cfg.out):  # reports are written locally, then travel in the checkpoints
        staging = tempfile.mkdtemp(prefix="s2l-run-")
        cfg.out = staging
    ctx = RayContext(out=Path(cfg.out), compress=config["compress"],
                     test_hooks=FaultHooks.from_dict(config["test_hooks"]))
    try:
        resume_local = config["resume"] and ctx.initial_checkpoint() is None
        fit(cfg, resume=resume_local, ctx=ctx)
    except S2LError as exc:
        # a user error (bad data, settings): the same on every rank. Pass it to the
        # driver and end normally, so that Ray does not retry what cannot succeed
        if ctx.is_main:
            rundir.write_run_text(config["run"], rundir.ERROR_FILE, str(exc))
    finally:
        ctx.close()
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------- driver side
def _init_ray(address: str | None):
    """Connect to ``address`` or start a private local Ray; return whether we started one."""
    import logging

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    env = {k: os.environ[k] for k in ("RAY_TRAIN_ENABLE_PRINT_PATCH",)}
    if ray.is_initialized():
        return False
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=True,
                  runtime_env={"env_vars": env})
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": always a new private instance, never a cluster found on this machine
        ray.init(address="local", include_dashboard=False, **kwargs)
    return True


def _nodes_seeing(out: str) -> dict[str, bool]:
    """Node address -> whether that node sees a marker file the driver writes in ``out``."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return {}
    Path(out).mkdir(parents=True, exist_ok=True)
    marker = Path(out).resolve() / rundir.STORAGE_MARKER.format(token=uuid.uuid4().hex)
    marker.touch()
    try:
        seen = ray.remote(num_cpus=0)(os.path.exists)
        refs = {n["NodeManagerAddress"]: seen.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(str(marker)) for n in nodes}
        return {ip: bool(ray.get(ref, timeout=120)) for ip, ref in refs.items()}
    finally:
        marker.unlink(missing_ok=True)


def _copy_run_files(result, out: str) -> None:
    """Copy model.pt, metrics.csv, curves.png (and config.json) from the last checkpoint to RUN."""
    import pyarrow.fs

    ckpt = result.checkpoint
    if ckpt is None:
        return
    fs = ckpt.filesystem
    dest = str(out).rstrip("/") if is_uri(out) else str(Path(out).resolve())
    dest_fs, dest_path = rundir.filesystem(dest) if is_uri(out) else (pyarrow.fs.LocalFileSystem(), dest)
    # a local RUN has its config.json already (the driver's, or that of the run resumed)
    names = rundir.RUN_FILES if is_uri(out) else (rundir.MODEL, rundir.METRICS, rundir.CURVES)
    for name in names:
        src = f"{ckpt.path}/{name}"
        if fs.get_file_info(src).type == pyarrow.fs.FileType.File:
            pyarrow.fs.copy_files(src, f"{dest_path}/{name}", source_filesystem=fs,
                                  destination_filesystem=dest_fs)


def fit_distributed(cfg: TrainConfig, *, resume: bool = False, compress: str = "none") -> dict:
    """Run :func:`s2l_tools.training.engine.fit` on ``cfg.num_workers`` Ray Train workers.

    Parameters
    ----------
    cfg : TrainConfig
        ``num_workers`` (default 1 with ``address``), ``use_gpu``,
        ``cpus_per_worker`` (CPUs per worker = torch threads), ``address``
        (None: a private local Ray; ``auto`` or ``HOST:PORT``: that cluster),
        ``max_failures`` (worker-group restarts from the last checkpoint).
    resume : bool
        Continue the run in ``cfg.out`` (its latest Ray checkpoint, else a
        single-process ``checkpoint.pt``). Without it, ``cfg.out`` must hold no run.
    compress : {'none', 'fp16', 'bf16'}
        The precision of DDP's gradient all-reduce (:data:`COMPRESS`). float32 by
        default: the rounded ones halve the bytes exchanged but round the
        gradients, and on 2 CPU workers (resnet34, batch 8 x 128 px) bfloat16
        changed the step time by a few per cent only (docs/benchmarks.md).

    Returns
    -------
    dict
        The last epoch's metrics (rank 0).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg.validate()
    _check_compress(compress)
    out = str(cfg.out)
    storage_path, name = _storage(out)
    if not resume and rundir.run_exists(out):
        raise S2LError(f"{out}: holds a run already; continue it with --resume or choose "
                       "another --out")
    workers = max(1, cfg.num_workers)
    if not is_uri(out):
        cfg.out = str(Path(out).expanduser().resolve())  # the same path on every node
    rundir.delete_run_file(out, rundir.ERROR_FILE)
    hooks = FaultHooks.from_env()  # tests only
    loop_config = {"run": cfg.out, "cfg": cfg.to_dict(), "threads": cfg.cpus_per_worker,
                   "resume": resume, "compress": compress,
                   "test_hooks": None if hooks is None else hooks.to_dict()}
    t0 = time.perf_counter()
    started = _init_ray(cfg.address)
    try:
        if not is_uri(out):
            check_shared_storage(out, _nodes_seeing(cfg.out))
        elif not resume or rundir.read_run_text(out, rundir.CONFIG) is None:
            # a new run: its settings go where --resume looks for them. A resumed run
            # keeps the saved ones until it ends (a resume refused for its settings must
            # not replace them); its own config.json is copied in with the results
            rundir.write_run_text(out, rundir.CONFIG, cfg.to_json_text())
        trainer = TorchTrainer(
            _train_fn,
            train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=cfg.use_gpu,
                                         resources_per_worker={"CPU": cfg.cpus_per_worker}),
            torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
            run_config=RunConfig(
                name=name, storage_path=storage_path,
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                failure_config=FailureConfig(max_failures=cfg.max_failures)),
        )
        print(f"ray: {workers} worker(s) x {cfg.cpus_per_worker} CPU"
              + (" + 1 GPU" if cfg.use_gpu else "") + f", ready in "
              f"{time.perf_counter() - t0:.1f} s; checkpoints in {storage_path}/{name}",
              flush=True)
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as exc:
            raise S2LError(f"{out}: training failed on the Ray workers after "
                           f"{cfg.max_failures} restart(s): {_first_line(exc)}; fix it and "
                           "continue with --resume (--debug: the full error)") from exc
        error = rundir.read_run_text(out, rundir.ERROR_FILE)
        if error is not None:
            rundir.delete_run_file(out, rundir.ERROR_FILE)
            raise S2LError(error)
        metrics = dict(result.metrics or {})  # of the last checkpoint (Ray V2)
        _copy_run_files(result, out)
        return metrics
    finally:
        if started:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    import re

    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):  # the innermost exception line is the most telling
        if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b:?", ln):
            return ln[:200]
    return lines[-1][:200] if lines else type(exc).__name__

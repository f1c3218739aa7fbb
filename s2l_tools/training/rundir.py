"""The run folder: every file name in ``RUN`` and the reading and writing of them.

What ``s2l-train`` leaves in ``RUN`` (a local folder; with Ray also a URI such
as ``s3://bucket/runs/first``)::

    RUN/config.json                 the settings (TrainConfig), read back by --resume
    RUN/inputs.json                 what the run trained on: each image's stem, size and
                                    content hashes of its image and scribbles (data.py's
                                    inputs_record); --resume refuses other data, --from
                                    finds the images whose scribbles changed
    RUN/checkpoint.pt               to resume (single process; format: checkpoint.py)
    RUN/ema_shard_NNNN.pt           a sharded EMA store: rank NNNN's maps, beside it
    RUN/model.pt                    to predict and export (a model bundle)
    RUN/metrics.csv, curves.png     reports (reports.py)
    RUN/panels/epoch_NNNN.png       pseudo-label panels
    RUN/checkpoint_epoch_NNNN/      a Ray run's checkpoints (each holds checkpoint.pt,
                                    model.pt, shards and reports), listed by Ray in
    RUN/checkpoint_manager_snapshot.json

Nothing else in the package spells these names: the loop
(:mod:`s2l_tools.training.engine`), the Ray adapter
(:mod:`s2l_tools.training.distributed`), ``s2l-train``, ``s2l-predict`` and
``s2l-export`` ask this module. The file formats themselves (what is inside
``checkpoint.pt`` and ``model.pt``) are :mod:`s2l_tools.training.checkpoint`'s.
"""

from __future__ import annotations

import os
from pathlib import Path

from s2l_tools.errors import S2LError
from s2l_tools.io.atomic import write_bytes_atomic
from s2l_tools.training.checkpoint import load_checkpoint, save_checkpoint, save_model

__all__ = [
    "CHECKPOINT", "MODEL", "CONFIG", "METRICS", "CURVES", "SHARD_GLOB", "RAY_SNAPSHOT",
    "INPUTS", "ERROR_FILE", "REPORT_FILES", "RUN_FILES", "is_uri", "filesystem", "read_run_text", "write_run_text", "delete_run_file",
    "run_exists", "run_file", "read_config", "resolve_model_path", "latest_checkpoint", "shard_path", "panel_path",
    "ray_checkpoint_name", "save_training_files", "load_store", "write_inputs", "read_inputs",
]

#: Training checkpoint (to resume).
CHECKPOINT = "checkpoint.pt"
#: Model bundle (to predict and export).
MODEL = "model.pt"
#: The run's settings.
CONFIG = "config.json"
#: What the run trained on (image and scribble hashes).
INPUTS = "inputs.json"
#: One row per epoch.
METRICS = "metrics.csv"
#: Loss and score curves.
CURVES = "curves.png"
#: Folder of the pseudo-label panels.
PANELS = "panels"
#: A sharded EMA store's maps: one file per rank beside ``checkpoint.pt``.
SHARD = "ema_shard_{rank:04d}.pt"
SHARD_GLOB = "ema_shard_*.pt"
#: A Ray run's checkpoint folders (``ray.train.report(checkpoint_dir_name=...)``).
RAY_CHECKPOINT = "checkpoint_epoch_{epoch:04d}"
RAY_CHECKPOINT_GLOB = "checkpoint_epoch_*"
#: Ray Train V2 keeps the run's list of checkpoints in this file of the run folder.
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"
#: Reports the main Ray worker puts into every checkpoint it reports.
REPORT_FILES = (METRICS, CURVES, CONFIG, INPUTS)
#: Files copied from a Ray run's latest checkpoint into RUN when the run ends.
RUN_FILES = (MODEL, *REPORT_FILES)
#: A user error (S2LError) on the Ray workers is passed to the driver in this file.
ERROR_FILE = ".s2l-error.txt"
#: Marker the Ray driver writes to find nodes that cannot see a local RUN.
STORAGE_MARKER = ".s2l-storage-check-{token}"


# ------------------------------------------------------------------ names
def shard_path(folder: Path, rank: int) -> Path:
    """Rank ``rank``'s EMA shard file in a checkpoint folder."""
    return Path(folder) / SHARD.format(rank=rank)


def panel_path(out: Path, epoch: int) -> Path:
    """The pseudo-label panel written after ``epoch`` (1-based)."""
    return Path(out) / PANELS / f"epoch_{epoch:04d}.png"


def ray_checkpoint_name(epoch: int) -> str:
    """Name of a Ray run's checkpoint folder after ``epoch`` (1-based)."""
    return RAY_CHECKPOINT.format(epoch=int(epoch))


# ------------------------------------------------------------- paths and URIs
def is_uri(path) -> bool:
    """Whether ``path`` is a URI (``s3://``, ``gs://``, ``file://`` ...), not a plain path."""
    return "://" in str(path)


def filesystem(uri: str):
    """``(pyarrow FileSystem, path)`` of a URI."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def read_run_text(out, name: str) -> str | None:
    """Text of the file ``name`` in the run folder ``out`` (path or URI), or None."""
    if not is_uri(out):
        p = Path(out) / name
        return p.read_text() if p.is_file() else None
    import pyarrow.fs

    fs, path = filesystem(str(out).rstrip("/") + "/" + name)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_run_text(out, name: str, text: str) -> None:
    """Write the file ``name`` of the run folder ``out`` (path or URI), creating ``out``."""
    if not is_uri(out):
        Path(out).mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(Path(out) / name, text.encode())
        return
    fs, path = filesystem(str(out).rstrip("/"))
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{name}") as f:
        f.write(text.encode())


def delete_run_file(out, name: str) -> None:
    """Remove the file ``name`` of the run folder ``out`` if it is there."""
    if not is_uri(out):
        (Path(out) / name).unlink(missing_ok=True)
    elif read_run_text(out, name) is not None:
        fs, path = filesystem(str(out).rstrip("/") + "/" + name)
        fs.delete_file(path)


def run_exists(out) -> bool:
    """Whether ``out`` holds a run (single-process checkpoint or Ray Train snapshot)."""
    return read_run_text(out, RAY_SNAPSHOT) is not None or (
        not is_uri(out) and (Path(out) / CHECKPOINT).is_file())


def run_file(out, name: str) -> str:
    """How to name the file ``name`` of the run folder ``out`` in a message."""
    return f"{out}/{name}" if is_uri(out) else str(Path(out) / name)


def read_config(out):
    """The settings saved in ``out/config.json`` (path or URI) as a TrainConfig; None if absent."""
    import json

    from s2l_tools.training.config import TrainConfig

    if not is_uri(out):
        path = Path(out) / CONFIG
        return TrainConfig.from_json(path) if path.is_file() else None
    text = read_run_text(out, CONFIG)
    if text is None:
        return None
    return TrainConfig.from_dict(json.loads(text), source=run_file(out, CONFIG))


def write_inputs(out, record: dict) -> None:
    """Write ``out/inputs.json`` (path or URI): what the run trains on (see ``read_inputs``)."""
    import json

    write_run_text(out, INPUTS, json.dumps(record, indent=1) + "\n")


def read_inputs(out) -> dict | None:
    """The record of ``out/inputs.json`` (:func:`s2l_tools.training.data.inputs_record`),
    or None for a run without one (written before s2l-tools recorded its inputs)."""
    import json

    text = read_run_text(out, INPUTS)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise S2LError(f"{run_file(out, INPUTS)}: not valid JSON ({exc}); the run folder is "
                       "damaged: delete the file to resume without the check") from None
    if not isinstance(record, dict) or not isinstance(record.get("images"), list):
        raise S2LError(f"{run_file(out, INPUTS)}: not a record of training inputs; the run "
                       "folder is damaged: delete the file to resume without the check")
    return record


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A run folder -> its ``model.pt`` (else ``checkpoint.pt``); a file -> itself."""
    path = Path(path)
    if path.is_dir():
        for name in (MODEL, CHECKPOINT):
            if (path / name).is_file():
                return path / name
        raise S2LError(f"{path}: no {MODEL} or {CHECKPOINT} in this folder; give a run "
                       "folder written by s2l-train or a model file")
    return path


def latest_checkpoint(out: Path) -> Path | None:
    """``out/checkpoint.pt``, else the newest ``out/checkpoint_epoch_*/checkpoint.pt``
    (a run trained on Ray, resumed in one process); None if there is neither."""
    out = Path(out)
    if (out / CHECKPOINT).is_file():
        return out / CHECKPOINT
    ray_ckpts = sorted(out.glob(f"{RAY_CHECKPOINT_GLOB}/{CHECKPOINT}"))
    return ray_ckpts[-1] if ray_ckpts else None


# ------------------------------------------------------------- checkpoint files
def save_training_files(folder: Path, state: dict, *, store, rank: int, is_main: bool,
                        model_state: dict, meta) -> None:
    """Write one checkpoint into ``folder``.

    Parameters
    ----------
    folder : Path
        RUN itself, or a Ray rank's temporary checkpoint folder.
    state : dict
        The checkpoint's entries except the EMA store (model, optimizer, ...,
        ``epoch``), as :func:`s2l_tools.training.engine.fit` saves them.
    store : EmaStore
        A shard (``store.is_shard``): every rank writes its maps to
        :func:`shard_path`, and ``checkpoint.pt`` holds ``ema=None``. Else
        the whole store goes into ``checkpoint.pt``.
    rank : int
    is_main : bool
        Whether this rank writes ``checkpoint.pt`` and ``model.pt``.
    model_state : dict
        The weights for ``model.pt``.
    meta : ModelMeta
    """
    if store.is_shard:
        save_checkpoint(shard_path(folder, rank), {"ema": store.state_dict(),
                                                   "epoch": state["epoch"]})
    if is_main:
        save_checkpoint(Path(folder) / CHECKPOINT,
                        {**state, "ema": None if store.is_shard else store.state_dict()})
        save_model(Path(folder) / MODEL, model_state, meta)


def load_store(store, ckpt_path: Path, ckpt: dict) -> None:
    """Fill ``store`` (whole or a shard) from a checkpoint, replicated or sharded.

    Parameters
    ----------
    store : EmaStore
    ckpt_path : Path
        The ``checkpoint.pt`` loaded as ``ckpt``; a sharded run's shard
        files are read from its folder.
    ckpt : dict
    """
    if ckpt.get("ema") is not None:
        loaded = store.load_state_dict(ckpt["ema"])
    else:
        loaded = []
        for f in sorted(Path(ckpt_path).parent.glob(SHARD_GLOB)):
            loaded += store.load_state_dict(load_checkpoint(f)["ema"])
    missing = sorted(set(store.owned) - set(loaded))
    if missing:
        raise S2LError(f"{Path(ckpt_path).parent}: the EMA maps of {len(missing)} training "
                       f"image(s) are missing ({SHARD_GLOB} files of a sharded "
                       "run); resume from a complete checkpoint folder")

"""Training settings: one dataclass shared by the CLI, the trainer and Ray.

Defaults are the paper's (Lee et al. 2020, and the authors' code where the
paper is silent; see docs/method.md). ``TrainConfig`` is written to
``RUN/config.json`` and can be read back with ``s2l-train --config``.

Epochs
------
The paper's epoch is one pass over its training images (hundreds of them).
A biologist often scribbles 3-10 images, so here an epoch is
``samples_per_epoch`` random crops drawn with replacement; the default is
``max(n_images, 8 * batch_size)``. With hundreds of images this equals the
paper's epoch; with a handful it keeps an epoch a useful amount of work, so
warm-up and ensemble intervals (counted in epochs) keep their meaning.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from s2l_tools.errors import S2LError
from s2l_tools.inference.onnx import threshold_problem
from s2l_tools.training.checkpoint import DEFAULT_MIN_SIZE

METHODS = ("s2l", "pce", "pseudo", "rloss", "full")
#: ``--crf-weight`` of ``--method rloss`` when not given (the other methods: 0)
RLOSS_CRF_WEIGHT = 5.0
ENCODERS = ("resnet18", "resnet34", "resnet50")
STORES = ("auto", "replicated", "sharded")
FAST_STARTS = ("none", "forest", "grabcut", "forest+grabcut")
#: ``--encoder-weights self``: the encoder pretrained on DATA's own images
#: (s2l_tools.training.pretrain), cached
SELF_SUPERVISED = "self"


#: ``--clean-strokes WHEN``
CLEAN_STROKES = ("off", "on", "auto")

#: ``s2l-train --preset NAME``: budgets chosen together (flags given on the command line win).
#: ``laptop``: a CPU budget measured with benchmarks/accuracy.py (docs/benchmarks.md: 12
#: epochs were level with 30 on DSB-fluo over five seeds, in 2.5x less time) with the fast
#: start, the CRF loss and the pseudo-label margin that won there (S2L-only extras: another
#: --method keeps the budget alone) and the threshold from the forest's share (any method
#: trained on strokes; over five seeds unchanged on fluorescent nuclei, +0.003 IoU on H&E,
#: +0.053 on brightfield), and --diameter 24 (images of small objects enlarged, never past a
#: megapixel: fluorescent nuclei +0.011 IoU with hand-drawn strokes, 4 of 5 seeds, H&E +0.006,
#: brightfield's 1024 x 1024 images unchanged; prediction ~2x slower on small objects;
#: docs/benchmarks.md "Not past a megapixel"), and --clean-strokes auto (strokes past the
#: cells' edges left out only where they are many: +0.093 IoU on careless strokes, every
#: careful stroke set measured left as drawn; docs/benchmarks.md "--clean-strokes and five
#: more hand-drawn stroke seeds");
#: ``paper``: the paper's settings (the defaults), for a GPU.
PRESETS: dict[str, dict] = {
    "laptop": dict(encoder="resnet18", crop=128, batch_size=8, samples_per_epoch=128,
                   epochs=12, warmup_epochs=6, ensemble_every=2, lr=1e-3, restart_epochs=12,
                   fast_start="forest+grabcut", crf_weight=5.0, pseudo_margin=1,
                   auto_threshold=True, diameter=24.0, clean_strokes="auto"),
    "paper": dict(encoder="resnet34", crop=256, batch_size=30, samples_per_epoch=None,
                  epochs=200, warmup_epochs=100, ensemble_every=5, lr=3e-4, restart_epochs=50,
                  fast_start="none", crf_weight=None, pseudo_margin=0, diameter=0.0),
}


#: ``s2l-train --from RUN``: the short schedule of a retraining round on top of RUN's
#: settings (flags given on the command line win): one epoch of warm-up on the new
#: strokes, then S2L with RUN's EMA store (no fast start: the store is RUN's). 4 epochs
#: with one ensemble pass (after epoch 2) take ~2 min on 2 CPU cores for 40 images of the
#: laptop preset; 6 epochs with a pass after each took 4.6 min for ~0.01 IoU more
#: (benchmarks/loop.py, docs/benchmarks.md)
RETRAIN_SCHEDULE: dict = dict(epochs=4, warmup_epochs=1, ensemble_every=2, restart_epochs=4,
                              checkpoint_every=4, fast_start="none")
#: ``--from``: the peak learning rate of a retraining round, as a share of RUN's (once:
#: a run that was itself retrained keeps its rate), so that a few epochs on new strokes
#: refine RUN's model rather than shake it: 0.1 x instead of 0.3 x halved the worst drop
#: of a round below the run it started from (0.088 -> 0.038 IoU) and kept round 3 at 0.99-1.03
#: of a training from scratch (benchmarks/loop.py, docs/benchmarks.md)
RETRAIN_LR_SCALE = 0.1


@dataclass
class TrainConfig:
    """Every setting of a training run (see ``s2l-train --help``)."""

    data: str = ""
    out: str = ""
    val: str | None = None
    method: str = "s2l"
    fast_start: str = "none"
    # --fast-start forest+grabcut: GrabCut kept if it overlaps the forest this much (median
    # image); s2l_tools.classic.start.MIN_AGREEMENT, written out to keep numpy off --help
    grabcut_agreement: float = 0.4
    encoder: str = "resnet34"
    encoder_weights: str | None = None
    #: --encoder-weights self: steps of the masked-image pretraining
    pretrain_steps: int = 200
    channel: int | None = None
    epochs: int = 200
    warmup_epochs: int = 100
    ensemble_every: int = 5
    ema_alpha: float = 0.2
    threshold: float = 0.8
    pseudo_weight: float = 0.5
    pseudo_margin: int = 0
    #: every image resized so its median object is this many pixels across, in training
    #: and prediction (s2l_tools.training.scale; 0: images at their own size)
    diameter: float = 0.0
    #: the largest standard deviation of the Gaussian noise added to a training crop
    #: (normalised units, to 15 % of the crops; s2l_tools.data.augment; 0: none)
    noise_aug: float = 0.0
    #: half the training crops multiplied by a gain drawn log-uniformly from
    #: [1 / gain_aug, gain_aug] (s2l_tools.data.augment; 1: none)
    gain_aug: float = 1.0
    #: foreground scribble pixels whose colour is the background's left out of training
    #: (s2l_tools.data.clean: slips of the pen past a cell's edge): "off", "on", or "auto"
    #: (only when more than clean.AUTO_SHARE of them would be)
    clean_strokes: str = "off"
    crf_weight: float | None = None
    lr: float = 3e-4
    weight_decay: float = 5e-5
    decoder_lr_mult: float = 10.0
    restart_epochs: int = 50
    crop: int = 256
    batch_size: int = 30
    samples_per_epoch: int | None = None
    loader_workers: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    deterministic: bool = False
    checkpoint_every: int = 10
    val_every: int | None = None
    panel_images: int = 3
    tile: int = 1024
    min_size: int = DEFAULT_MIN_SIZE
    #: foreground probability threshold saved in the model (s2l-predict, CellProfiler and
    #: the validation use it; not --consistency-threshold, which makes pseudo-labels)
    mask_threshold: float = 0.5
    #: after the last epoch, raise the saved mask threshold (never below mask_threshold) so
    #: the network calls as many training pixels cell as a random forest on the same strokes
    #: (s2l_tools.training.auto_threshold)
    auto_threshold: bool = False
    #: share of each class's strokes kept out of training to measure the model (0: off)
    holdout_strokes: float = 0.1
    #: torch CPU threads of a run in one process (None: the CPUs this process may use,
    #: fewer while other programs keep some busy; see s2l_tools.device.CpuThreads)
    threads: int | None = None
    # Ray Train (s2l_tools.training.distributed): used when num_workers >= 1 or address is set
    num_workers: int = 0
    use_gpu: bool = False
    address: str | None = None
    cpus_per_worker: int = 1
    max_failures: int = 3
    store: str = "auto"
    # s2l-train --from RUN: the run whose weights and EMA store this one starts from
    from_run: str | None = None

    def validate(self) -> TrainConfig:
        """Check ranges; raise a one-line S2LError naming the setting."""
        def bad(name, msg):
            raise S2LError(f"--{name.replace('_', '-')} {getattr(self, name)}: {msg}")

        if self.method not in METHODS:
            bad("method", f"unknown method; choose one of {', '.join(METHODS)}")
        if self.fast_start not in FAST_STARTS:
            bad("fast_start", f"unknown fast start; choose one of {', '.join(FAST_STARTS)}")
        if self.fast_start != "none" and self.method != "s2l":
            bad("fast_start", f"starts the EMA store of --method s2l; --method {self.method} "
                "has none: drop --fast-start or use --method s2l")
        if self.store not in STORES:
            bad("store", f"unknown EMA store layout; choose one of {', '.join(STORES)}")
        if self.clean_strokes not in CLEAN_STROKES:
            bad("clean_strokes", f"choose one of {', '.join(CLEAN_STROKES)}")
        if self.encoder not in ENCODERS:
            bad("encoder", f"unknown encoder; choose one of {', '.join(ENCODERS)}")
        for name in ("epochs", "ensemble_every", "batch_size", "checkpoint_every",
                     "restart_epochs", "pretrain_steps"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        if self.warmup_epochs < 0:
            bad("warmup_epochs", "must be 0 or more")
        if self.threads is not None and self.threads < 1:
            bad("threads", "must be at least 1 (or leave it out: the CPUs this process may use)")
        if (self.warmup_epochs > self.epochs
                and (self.method == "pseudo" or self.method == "s2l" and self.fast_start == "none")):
            bad("warmup_epochs", f"longer than the run (--epochs {self.epochs}), so no "
                f"pseudo-label would ever be used; give --warmup-epochs {self.epochs // 2} "
                "(half the epochs, as the paper) or raise --epochs")
        for name in ("ema_alpha", "threshold", "pseudo_weight", "crf_weight", "lr",
                     "weight_decay", "decoder_lr_mult", "holdout_strokes",
                     "grabcut_agreement", "mask_threshold"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                bad(name, "must be a finite number")
        if not 0 < self.ema_alpha <= 1:
            bad("ema_alpha", "must be in (0, 1]")
        if not 0.5 <= self.threshold < 1:
            bad("threshold", "must be in [0.5, 1)")
        if self.pseudo_weight < 0:
            bad("pseudo_weight", "must be 0 or more")
        if self.pseudo_margin < 0:
            bad("pseudo_margin", "must be 0 or more (pixels)")
        if not (math.isfinite(self.diameter) and self.diameter >= 0):
            bad("diameter", "must be 0 (images at their own size) or a median object "
                "diameter in pixels, e.g. 24")
        if not (math.isfinite(self.noise_aug) and 0 <= self.noise_aug <= 1):
            bad("noise_aug", "must be in [0, 1] (a standard deviation in normalised intensity "
                "units; 0: no noise, e.g. 0.1)")
        if not (math.isfinite(self.gain_aug) and 1 <= self.gain_aug <= 10):
            bad("gain_aug", "must be in [1, 10] (the largest factor a training crop's intensity "
                "is multiplied or divided by; 1: none, e.g. 3)")
        if self.crf_weight is not None and not self.crf_weight >= 0:
            bad("crf_weight", "must be 0 or more")
        if self.crf_weight and self.method == "full":
            bad("crf_weight", "regularises learning from scribbles; --method full has full "
                "masks: drop --crf-weight")
        if not 0 <= self.grabcut_agreement <= 1:
            bad("grabcut_agreement", "must be in [0, 1] (an overlap; 0: keep GrabCut everywhere)")
        if not 0 <= self.holdout_strokes < 1:
            bad("holdout_strokes", "must be in [0, 1) (a share of the strokes; 0: off)")
        if self.lr <= 0:
            bad("lr", "must be positive")
        if self.weight_decay < 0:
            bad("weight_decay", "must be 0 (none) or more")
        if self.decoder_lr_mult <= 0:
            bad("decoder_lr_mult", "must be positive (1: the encoder's learning rate)")
        if self.min_size < 0:
            bad("min_size", "must be 0 or more (pixels)")
        if (why := threshold_problem(self.mask_threshold)):
            bad("mask_threshold", why)
        if self.auto_threshold and self.method == "full":
            raise S2LError("--auto-threshold: matches the forest fitted on the strokes; --method "
                           "full trains on masks, not strokes: drop --auto-threshold")
        if self.channel is not None and self.channel < 0:
            bad("channel", "must be 0 or more (0-based)")
        if self.val_every is not None and self.val_every < 1:
            bad("val_every", "must be at least 1")
        if self.panel_images < 0:
            bad("panel_images", "must be 0 (none) or more")
        if self.seed < 0:
            bad("seed", "must be 0 or more")
        if self.crop < 32 or self.crop % 32:
            bad("crop", "must be a multiple of 32, at least 32")
        if self.tile < 32 or self.tile % 32:
            bad("tile", "must be a multiple of 32, at least 32")
        if self.loader_workers < 0:
            bad("loader_workers", "must be 0 (load in the training process) or more")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            bad("samples_per_epoch", "must be at least 1")
        if self.num_workers < 0:
            bad("num_workers", "must be 0 (no Ray) or more")
        if self.cpus_per_worker < 1:
            bad("cpus_per_worker", "must be at least 1")
        if self.max_failures < -1:
            bad("max_failures", "must be -1 (retry for ever), 0 or more")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            bad("device", "use auto, cpu or cuda")
        return self

    @property
    def crf_weight_used(self) -> float:
        """The CRF loss's weight: ``crf_weight``, or the method's default when None."""
        if self.crf_weight is not None:
            return float(self.crf_weight)
        return RLOSS_CRF_WEIGHT if self.method == "rloss" else 0.0

    @property
    def distributed(self) -> bool:
        """Whether the run goes through Ray Train (``--num-workers`` or ``--address``)."""
        return self.num_workers >= 1 or bool(self.address)

    def to_json_text(self) -> str:
        """The settings as the text of a config.json."""
        return json.dumps(asdict(self), indent=2) + "\n"

    def to_json(self, path: str | os.PathLike) -> None:
        from s2l_tools.io.atomic import write_bytes_atomic

        write_bytes_atomic(path, self.to_json_text().encode())

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "config") -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise S2LError(f"{source}: unknown setting(s) {', '.join(unknown)}; "
                           "see s2l-train --help")
        d = upgrade_settings(d)
        defaults = cls()
        for name, value in d.items():
            _check_type(name, value, getattr(defaults, name), source)
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> TrainConfig:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise S2LError(f"{path}: no such config file") from None
        except IsADirectoryError:
            raise S2LError(f"{path}: a folder, not a config file; give RUN/config.json") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise S2LError(f"{path}: not valid JSON ({exc}); fix or regenerate it") from None
        if not isinstance(d, dict):
            raise S2LError(f"{path}: expected a JSON object of settings")
        return cls.from_dict(d, source=str(path))

    def to_dict(self) -> dict:
        return asdict(self)


def upgrade_settings(d: dict) -> dict:
    """A saved config's settings in today's form (a run's config.json of an earlier
    version): ``clean_strokes`` true/false -> "on"/"off"."""
    if isinstance(d.get("clean_strokes"), bool):
        d = {**d, "clean_strokes": "on" if d["clean_strokes"] else "off"}
    return d


#: settings whose default is None but which hold numbers when set
_OPTIONAL_INT = {"channel", "samples_per_epoch", "val_every", "threads"}
_OPTIONAL_FLOAT = {"crf_weight"}


def setting_type(name: str) -> type:
    """The type of setting ``name``'s values: bool, int, float or str (the CLI and config files)."""
    default = getattr(TrainConfig(), name)
    if default is not None:
        return type(default)
    return int if name in _OPTIONAL_INT else float if name in _OPTIONAL_FLOAT else str


def _check_type(name: str, value, default, source: str) -> None:
    """One-line S2LError when a config file's ``value`` has the wrong JSON type for ``name``."""
    def kind_of(v):
        return "true/false" if isinstance(v, bool) else type(v).__name__

    if default is None and value is None:
        return
    want = setting_type(name)
    ok = (isinstance(value, bool) if want is bool
          else isinstance(value, int) and not isinstance(value, bool) if want is int
          else isinstance(value, (int, float)) and not isinstance(value, bool) if want is float
          else isinstance(value, str))
    if not ok:
        words = {bool: "true or false", int: "a whole number", float: "a number",
                 str: "a text"}[want]
        raise S2LError(f"{source}: \"{name}\": {json.dumps(value)} ({kind_of(value)}) is not "
                       f"{words}; fix --{name.replace('_', '-')} in the file")


def retrain_settings(cfg: TrainConfig) -> TrainConfig:
    """RUN's settings (``cfg``, read from its config.json) for a ``--from RUN`` round.

    :data:`RETRAIN_SCHEDULE` on top, and the learning rate times
    :data:`RETRAIN_LR_SCALE` unless RUN was itself a retraining round. Returns a
    new config; ``data``, ``out`` and ``from_run`` are left to the caller.
    """
    new = replace(cfg)
    if not cfg.from_run:
        new.lr = cfg.lr * RETRAIN_LR_SCALE
    for name, value in RETRAIN_SCHEDULE.items():
        setattr(new, name, value)
    return new

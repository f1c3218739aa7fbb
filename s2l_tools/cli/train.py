"""``s2l-train``: train a Scribble2Label model on a dataset folder.

The defaults are the paper's; ``RUN/config.json`` records every setting and
``--config RUN/config.json`` reads them back (flags given on the command
line win). See :mod:`s2l_tools.training.config` for how epochs relate to the paper's.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from s2l_tools.cli._common import make_parser, run
from s2l_tools.data.clean import AUTO_SHARE
from s2l_tools.training.config import (CLEAN_STROKES, ENCODERS, FAST_STARTS, METHODS, PRESETS,
                                       RETRAIN_LR_SCALE, RETRAIN_SCHEDULE, STORES,
                                       TrainConfig, retrain_settings, setting_type)
from s2l_tools.errors import S2LError


_HELP = {
    "val": "validation dataset with masks/ (scored every --val-every epochs)",
    "method": "s2l (Scribble2Label), pce (scribbles only), pseudo (Pseudo-Label), "
              "rloss (scribbles + a CRF loss that pulls boundaries to image edges, Tang et "
              "al. 2018), full (full masks; an upper bound)",
    "fast_start": "forest: a random-forest pixel classifier (as ilastik/Labkit) trained on the "
                  "scribbles gives the EMA store its first map, so pseudo-labels act from "
                  "epoch 1 (--method s2l only); grabcut: each image's GrabCut proposal; "
                  "forest+grabcut: their mean (confident only where both agree); none: the "
                  "paper's warm-up on scribbles alone",
    "grabcut_agreement": "--fast-start forest+grabcut: GrabCut is left out (the forest "
                         "alone) when its foreground and the forest's overlap by less than "
                         "this (IoU) on the median image, as on brightfield and H&E images "
                         "(0: always kept)",
    "encoder": "U-Net encoder",
    "encoder_weights": "ImageNet weights for the encoder: 'imagenet' (torchvision's, fetched "
                       "once into torch's cache and used from there offline), a URL, or a "
                       "local torchvision ResNet .pth/.safetensors file; 'self': pretrained "
                       "on DATA's own images (masked-block reconstruction, --pretrain-steps "
                       "steps; cached in $S2L_CACHE or ~/.cache/s2l-tools), for machines "
                       "that cannot fetch weights",
    "pretrain_steps": "--encoder-weights self: steps of the pretraining (batch and crop of "
                      "the run's)",
    "channel": "channel to use from multi-channel images (0-based)",
    "epochs": "total epochs (one epoch = --samples-per-epoch crops)",
    "warmup_epochs": "epochs trained on scribbles only, before pseudo-labels; half the epochs when --epochs alone is fewer than this",
    "ensemble_every": "epochs between EMA prediction ensembles (gamma)",
    "ema_alpha": "EMA weight of the newest prediction (alpha)",
    "threshold": "consistency threshold tau: a pixel becomes a pseudo-label where the EMA "
                 "prediction is this sure (not s2l-predict's probability threshold; "
                 "--threshold is the old name, still accepted)",
    "pseudo_weight": "weight lambda of the pseudo-label loss",
    "pseudo_margin": "pixels beside the EMA map's cell boundary left without a pseudo-label, "
                     "so the scribbles and the CRF loss place the boundary (0: none)",
    "diameter": "enlarge every image whose median object is smaller, so that it is this "
                "many pixels across (up to 3x; never shrunk, never past a megapixel), in "
                "training and prediction "
                "(estimated per image from a random forest on the scribbles, at prediction "
                "from a first pass; 0: images at their own size)",
    "noise_aug": "add Gaussian noise to 15 %% of the training crops, of a standard deviation "
                 "drawn up to this (normalised units; 0: none), so that grainy, dim images "
                 "are not called cell where their background is noisy",
    "gain_aug": "multiply half the training crops' intensity by a factor drawn log-uniformly "
                "from [1/G, G] (1: none); with about five scribbled images, 3 steadied the "
                "training (not in --preset laptop: with 40 images it cost a little)",
    "clean_strokes": "leave out the foreground scribble pixels whose colour (the image smoothed "
                     "by 1 px) is nearer the median of the image's background strokes than "
                     "that of their own stroke: strokes drawn past a cell's edge. on (the "
                     f"flag alone): always; auto: only when more than {100 * AUTO_SHARE:g} %% "
                     "of them are (laptop preset); off",
    "crf_weight": "weight of the CRF loss (bilateral Potts, radius 5 px; any method but full; "
                  "default: 5 with --method rloss, else 0)",
    "lr": "encoder learning rate (RAdam)",
    "weight_decay": "weight decay",
    "decoder_lr_mult": "decoder learning rate = lr x this",
    "restart_epochs": "epochs per cosine-annealing cycle (warm restarts)",
    "crop": "training crop size (multiple of 32)",
    "batch_size": "crops per optimiser step (split across workers)",
    "samples_per_epoch": "crops per epoch (default: max(images, 8 x batch size))",
    "loader_workers": "DataLoader worker processes",
    "seed": "random seed (crops, augmentation, initial weights)",
    "device": "auto, cpu or cuda",
    "amp": "mixed precision: training and inference on CUDA; on a CPU with native bf16 "
           "(AVX512-BF16/AMX) the ensemble and validation passes run in bf16",
    "deterministic": "deterministic algorithms (slower on GPU)",
    "checkpoint_every": "epochs between checkpoints",
    "val_every": "epochs between validations (default: --ensemble-every) and, when given, "
                 "between held-out stroke measurements",
    "panel_images": "images shown in the pseudo-label panels (0: none)",
    "tile": "tile size for full-image prediction",
    "min_size": "smallest object kept (pixels): saved in the model, so s2l-predict and the "
                "CellProfiler module use it too (64 before 2026-12-03: it deleted small nuclei)",
    "mask_threshold": "foreground probability threshold saved in the model: s2l-predict, the "
                      "CellProfiler module and the validation cut the probability map here "
                      "(s2l-predict --threshold still overrides it; not "
                      "--consistency-threshold, which makes pseudo-labels); with "
                      "--auto-threshold the lowest threshold saved",
    "auto_threshold": "after the last epoch, save the threshold at which the network calls as "
                      "many training pixels cell as a random forest fitted on the same strokes "
                      "does (never below --mask-threshold, and keeping at least a quarter of "
                      "what the network calls cell there): a network trained on strokes "
                      "learns their class shares and over-calls cells where cells are rare "
                      "(brightfield, H&E); one pass over the training images",
    "holdout_strokes": "share of strokes kept out of training to measure the model (each "
                       "image keeps at least one stroke of each class; the share of their "
                       "pixels predicted right is reported after each ensemble pass, every "
                       "--val-every epochs if given, and at the end); 0 turns it off",
    "threads": "torch CPU threads of a run in this process (default: the CPUs this process "
               "may use, one fewer for each CPU other programs keep busy, checked every epoch; "
               "the count changes float rounding, so --deterministic keeps it fixed; Ray "
               "workers take --cpus-per-worker)",
    "num_workers": "Ray Train data-parallel workers (0: train in this process)",
    "use_gpu": "one GPU per Ray worker (DDP over NCCL)",
    "store": "EMA store across Ray workers: replicated (every worker holds every map, "
             "gathered at each ensemble step), sharded (each worker holds and trains on a "
             "fixed share of the images: memory / workers, nothing gathered), auto "
             "(sharded once a replicated store would pass 2 GiB per worker)",
    "address": "Ray cluster to use: auto or HOST:PORT (default: a private local Ray)",
    "cpus_per_worker": "CPUs (= torch threads) per Ray worker",
    "max_failures": "Ray: restarts of the worker group from the last checkpoint",
}


def get_parser():
    parser = make_parser(
        "s2l-train",
        "Train a Scribble2Label U-Net on DATA/images + DATA/scribbles.\n\n"
        "Writes RUN/config.json, RUN/checkpoint.pt (to resume), RUN/model.pt (to predict and "
        "export), RUN/metrics.csv, RUN/curves.png and RUN/panels/*.png. Ctrl-C saves a "
        "checkpoint; --resume continues it.",
        "  s2l-train my_data --out runs/first --preset laptop      # 3-6 min on a laptop CPU\n"
        "  s2l-train my_data --out runs/first --epochs 60 --warmup-epochs 30\n"
        "  s2l-train my_data --out runs/first --resume\n"
        "  s2l-train my_data --out runs/second --from runs/first   # after new strokes\n"
        "  s2l-train my_data --out runs/pce --method pce --config runs/first/config.json\n"
        "  s2l-train my_data --out /shared/runs/big --num-workers 8 --use-gpu --address auto",
    )
    parser.add_argument("data", type=Path, nargs="?", help="dataset folder (images/, scribbles/)")
    parser.add_argument("--out", help="run folder for checkpoints, model and reports (with Ray "
                        "also a URI: s3://bucket/runs/first)")
    parser.add_argument("--config", type=Path, help="read settings from a config.json")
    parser.add_argument("--resume", action="store_true",
                        help="continue from RUN/checkpoint.pt with its settings and data (a run "
                        "on changed scribbles or settings is refused: use --from)")
    parser.add_argument("--from", dest="from_run", metavar="RUN",
                        help="start from an earlier run's weights and EMA store, with its "
                        "settings and a short schedule (" + ", ".join(
                            f"{k.replace('_', '-')} {v}" for k, v in RETRAIN_SCHEDULE.items())
                        + f", --lr x {RETRAIN_LR_SCALE} of RUN's): after new strokes; images "
                        "whose strokes changed have their "
                        "maps reset where the strokes disagree, new images are predicted")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="a budget chosen as a whole; flags given on the command line win. "
                        "laptop: resnet18, crop 128, batch 8, 128 crops x 12 epochs (warm-up "
                        "6), ensemble every 2, lr 1e-3, --fast-start forest+grabcut, "
                        "--crf-weight 5, --pseudo-margin 1, --auto-threshold, --diameter 24, "
                        "--clean-strokes auto: "
                        "2.1-2.6 min on 2 idle CPU cores with AVX-512, 5.5 min on 2 cores "
                        "without, for 40 small images (docs/benchmarks.md). paper: the "
                        "paper's settings (the defaults; resnet34, crop 256, batch 30, 200 "
                        "epochs), for a GPU")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in ("data", "out", "from_run"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = _HELP.get(f.name, f.name) + ("" if default is None else f" (default: {default})")
        if f.name == "clean_strokes":
            parser.add_argument(flag, dest=f.name, nargs="?", const="on", default=None,
                                choices=CLEAN_STROKES, metavar="WHEN", help=help_text)
            parser.add_argument("--no-clean-strokes", dest=f.name, action="store_const",
                                const="off", help="turn off --clean-strokes (--clean-strokes off)")
            continue
        if isinstance(default, bool):
            parser.add_argument(flag, default=None, action="store_true", help=help_text)
            parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name,
                                action="store_false", help="turn off " + flag)
            continue
        kind = setting_type(f.name)
        choices = {"method": METHODS, "encoder": ENCODERS, "store": STORES,
                   "fast_start": FAST_STARTS}.get(f.name)
        metavar = None if choices else {int: "N", float: "X"}.get(kind, "VALUE")
        if f.name == "holdout_strokes":
            metavar = "FRACTION"
        flags = ("--consistency-threshold", flag) if f.name == "threshold" else (flag,)
        parser.add_argument(*flags, dest=f.name, type=kind, default=None, choices=choices,
                            metavar=metavar, help=help_text)
    return parser


def config_from_args(args) -> TrainConfig:
    """Defaults < --config file < resumed run's config (or --from run's config and the
    retraining schedule) < --preset < flags given."""
    cfg = TrainConfig()
    if args.config is not None:
        cfg = TrainConfig.from_json(args.config)
    if getattr(args, "from_run", None):
        if args.resume:
            raise S2LError("--from and --resume: --resume continues RUN itself, --from starts "
                           "a new --out from RUN's weights; give one of them")
        from s2l_tools.training import rundir

        if rundir.is_uri(args.from_run):
            raise S2LError(f"--from {args.from_run}: give a local run folder")
        cfg = rundir.read_config(args.from_run)
        if cfg is None:
            raise S2LError(f"--from {args.from_run}: no {rundir.CONFIG} there; give the run "
                           "folder of an earlier s2l-train")
        cfg = retrain_settings(cfg)
        cfg.data, cfg.out = "", ""  # DATA and --out are this run's
    if args.resume:
        if args.out is None:
            raise S2LError("--resume needs --out RUN (the run folder to continue)")
        from s2l_tools.training import rundir

        cfg = rundir.read_config(args.out)  # a local run, or a Ray run in a URI
        if cfg is None:
            raise S2LError(f"{rundir.run_file(args.out, rundir.CONFIG)}: nothing to resume in "
                           f"{args.out}; start without --resume")
        import json

        if "holdout_strokes" not in json.loads(rundir.read_run_text(args.out, rundir.CONFIG)):
            cfg.holdout_strokes = 0.0  # a run from before held-out strokes trained on all
    if getattr(args, "preset", None):
        for name, value in PRESETS[args.preset].items():
            setattr(cfg, name, value)
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(cfg, f.name, str(value) if f.name in ("data", "out", "val", "from_run",
                                                          "encoder_weights") else value)
    if (getattr(args, "epochs", None) is not None and getattr(args, "warmup_epochs", None) is None
            and cfg.warmup_epochs > cfg.epochs):
        cfg.warmup_epochs = cfg.epochs // 2  # --epochs 20 alone: the paper's half, not 100
    if getattr(args, "preset", None) and cfg.method != "s2l":
        # the preset's fast start, CRF weight and pseudo-label margin are S2L's: --method pce
        # keeps the budget alone
        if args.fast_start is None:
            cfg.fast_start = "none"
        if getattr(args, "pseudo_margin", None) is None:
            cfg.pseudo_margin = 0
        if args.crf_weight is None:
            cfg.crf_weight = None  # the method's own (rloss: its default; others: none)
        if cfg.method == "full" and args.auto_threshold is None:
            cfg.auto_threshold = False  # full masks: no strokes to fit the forest on
        if cfg.method == "full" and args.clean_strokes is None:
            cfg.clean_strokes = "off"  # full masks: no strokes to clean
    if not cfg.data:
        raise S2LError("no dataset given: s2l-train DATA --out RUN")
    if not cfg.out:
        raise S2LError("no run folder given: add --out RUN")
    return cfg.validate()


def _main(args) -> int:
    from s2l_tools.training import rundir
    from s2l_tools.training.engine import fit

    cfg = config_from_args(args)
    if cfg.distributed:
        from s2l_tools.training.distributed import fit_distributed

        last = fit_distributed(cfg, resume=args.resume)
        out = cfg.out
        print(f"done: model in {rundir.run_file(out, rundir.MODEL)}; metrics in "
              f"{rundir.run_file(out, rundir.METRICS)}"
              + (f"; val IoU {last['val_iou']:.3f}" if "val_iou" in last else ""))
        _print_holdout(last, cfg)
        return 0
    if rundir.is_uri(cfg.out):
        raise S2LError(f"--out {cfg.out}: a URI needs Ray; add --num-workers N, or give a "
                       "local folder")
    out = Path(cfg.out)
    if not args.resume and rundir.latest_checkpoint(out) is not None:  # its own or Ray's
        raise S2LError(f"{out}: holds a run already; continue it with --resume or choose "
                       "another --out")
    last = fit(cfg, resume=args.resume)
    print(f"done: model in {out / rundir.MODEL}; metrics in {out / rundir.METRICS}"
          + (f"; val IoU {last['val_iou']:.3f}" if "val_iou" in last else ""))
    _print_holdout(last, cfg)
    return 0


def _print_holdout(last: dict, cfg) -> None:
    """The end-of-run line on the held-out strokes (none for a run that had nothing to do)."""
    from s2l_tools.training.reports import holdout_result

    line = holdout_result(last, cfg)
    if line is not None:
        print(line)


def main(argv=None) -> int:
    return run(_main, get_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

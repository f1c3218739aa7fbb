"""The Scribble2Label authors' own code, trained on our scribbles at our budget (not a test).

Trains hvcl/scribble2label (``Learner.py``: their loop, loss, prediction ensemble and
RAdam) on one of our scribble sets and scores it on our val images with our metrics,
so their S2L and pCE sit beside ours under one budget.

Licence: their code is CC BY-NC-SA 4.0. Nothing of it is in this repository: this
script imports their modules at run time from a scratch folder (``--authors``) and
adapts them from outside (a config object, a subclass, a stub module); everything
here is our own glue.

Reproduce::

    mkdir -p /tmp/authors_s2l
    git clone https://github.com/hvcl/scribble2label /tmp/authors_s2l   # or, from a mirror:
    #   git -C MIRROR archive HEAD | tar -x -C /tmp/authors_s2l
    .venv/bin/pip install --target /tmp/authors_deps --no-deps albumentations==1.3.1 qudida==0.0.4
    for m in s2l pce; do .venv/bin/python benchmarks/authors.py --authors /tmp/authors_s2l \\
        --deps /tmp/authors_deps --data /tmp/acc/fluo/n40_v40/scribbles_r0.1_s0 \\
        --val /tmp/acc/fluo/n40_v40/val --method $m --out /tmp/authors_runs/${m}_r0.1_s0; done

Their other needs (pandas, tqdm, scikit-image, opencv, segmentation-models-pytorch) are
in our venv. albumentations 1.3.1 (pure Python, runs on numpy 2) keeps the 2020 defaults
their transforms rely on: ShiftScaleRotate reflects the border of the scribble and the EMA
maps, where 2.x pads them with 0, which is *background* in their label code. ``--no-deps``
keeps a second numpy/torch out. TensorBoard is not needed: their ``scripts.tb_utils`` is
replaced by a stub that keeps the scalars (``--out/scalars.json``).

What it does:

1. ``--out/data``: our images (symlinks), scribbles re-coded to theirs (PNG, 250 =
   unlabeled, 0 = background, 1 = foreground; ours are 0 / 1 / 2), full masks as 0/255
   PNGs (read only by their validation) and ``train.csv`` (``ImageID, fold``; every image
   fold 1 = training).
2. Their ``config`` with our budget: Unet (their choices: decoder batchnorm, scSE, 2
   classes) on resnet18 without ImageNet weights, crops 128, batch 8, lr 1e-3 (encoder;
   their Learner gives the decoder 10x), CPU, no workers. Their epoch is one random crop
   of every training image, so our E epochs of 128 crops (warm-up E/2, an ensemble every
   2 of ours) become ``n_epochs = round(128 E / N)``, ``thr_epoch = round(64 E / N)``,
   ``period_epoch = round(256 / N)`` (N = 40: 38, 19, 6). ``--method pce``:
   ``thr_epoch = n_epochs`` (pseudo-labels never switch on) and no ensemble passes
   (their outputs would be unused).
3. ``Learner.fit``; by default no validation: their ``validation()`` is replaced by one
   that only puts the model in eval mode (their ensemble pass relies on the eval mode
   validation leaves) and the LAST model is scored. ``--validate K`` runs their
   validation on the full masks of the first K training images and ``--keep best``
   scores their ``best_model.pth`` (best val IoU) -- not scribble supervision.
4. Each val image (their val transform: RGB, ImageNet normalisation) is reflect-padded
   to a multiple of 32; softmax class 1 -> ``instances_from_probability`` (0.5, min size
   64, holes filled, no declumping) -> ``--out/pred``, scored against the val masks by
   ``benchmarks/accuracy.py``'s ``predict_and_score`` (means over images, as its tables).
   ``--out/result.json``, one line printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import loadavg, predict_and_score  # noqa: E402

# our training budget (benchmarks/accuracy.py's e12 runs)
OUR_CROPS_PER_EPOCH = 128
OUR_ENSEMBLE_EVERY = 2
PIP = ("pip install --target DIR --no-deps albumentations==1.3.1 qudida==0.0.4, "
       "then pass --deps DIR")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--authors", required=True, type=Path,
                   help="scratch copy of hvcl/scribble2label")
    p.add_argument("--deps", type=Path, help="pip --target folder (albumentations)")
    p.add_argument("--data", required=True, type=Path, help="images/ scribbles/ masks/")
    p.add_argument("--val", required=True, type=Path, help="images/ masks/")
    p.add_argument("--method", choices=("s2l", "pce"), default="s2l")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--epochs-equivalent", type=float, default=12.0,
                   help=f"our epochs of {OUR_CROPS_PER_EPOCH} crops to match (default 12)")
    p.add_argument("--n-epochs", type=int, help="override their n_epochs")
    p.add_argument("--thr-epoch", type=int, help="override their thr_epoch (warm-up)")
    p.add_argument("--period-epoch", type=int, help="override their period_epoch")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--validate", type=int, default=0, metavar="K",
                   help="their validation on the full masks of K training images (default 0: none)")
    p.add_argument("--keep", choices=("last", "best"), default="last")
    p.add_argument("--limit-images", type=int, default=0, help="first N training images only")
    p.add_argument("--val-limit", type=int, default=0, help="first N val images only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.keep == "best" and args.validate < 1:
        p.error("--keep best needs --validate K (their best model is chosen on full masks)")
    return args


def stems_of(folder: Path, suffix: str, limit: int = 0) -> list[str]:
    stems = sorted(f.stem for f in folder.glob(f"*{suffix}"))
    return stems[:limit] if limit else stems


def check_folders(args) -> tuple[list[str], list[str]]:
    for sub, suf in (("images", ".png"), ("scribbles", ".tif"), ("masks", ".tif")):
        if not stems_of(args.data / sub, suf):
            raise SystemExit(f"--data {args.data}: no {sub}/*{suf}; give a scribble set "
                             "(images/*.png, scribbles/*.tif, masks/*.tif)")
    train = stems_of(args.data / "images", ".png", args.limit_images)
    missing = [s for s in train if not (args.data / "scribbles" / f"{s}.tif").is_file()
               or not (args.data / "masks" / f"{s}.tif").is_file()]
    if missing:
        raise SystemExit(f"--data {args.data}: no scribbles/ or masks/ TIFF for {missing[:3]}")
    val = stems_of(args.val / "images", ".png", args.val_limit)
    if not val or any(not (args.val / "masks" / f"{s}.tif").is_file() for s in val):
        raise SystemExit(f"--val {args.val}: needs images/*.png, each with masks/<stem>.tif")
    return train, val


class ScalarLog:
    """Stands in for TensorBoard's SummaryWriter (their scripts.tb_utils): keeps the scalars."""

    def __init__(self):
        self.rows = []

    def add_scalar(self, tag, value, step):
        if value is not None and math.isfinite(float(value)):
            self.rows.append((tag, int(step), float(value)))


def load_authors(authors: Path, deps: Path | None) -> types.SimpleNamespace:
    """Their modules, imported from the scratch folder (their ``scripts`` pinned there)."""
    authors = authors.resolve()
    if not ((authors / "Learner.py").is_file() and (authors / "scripts" / "dataset.py").is_file()
            and "def ensemble_prediction" in (authors / "Learner.py").read_text()):
        raise SystemExit(f"--authors {authors}: not hvcl/scribble2label (no Learner.py with "
                         "ensemble_prediction, scripts/dataset.py); git clone "
                         "https://github.com/hvcl/scribble2label there")
    if deps is not None:
        if not deps.is_dir():
            raise SystemExit(f"--deps {deps}: no such folder; {PIP}")
        sys.path.append(str(deps.resolve()))  # after our site-packages
    sys.path.insert(0, str(authors))
    pkg = types.ModuleType("scripts")  # a site-packages 'scripts' must not mix in
    pkg.__path__ = [str(authors / "scripts")]
    sys.modules["scripts"] = pkg
    writer = ScalarLog()
    tb = types.ModuleType("scripts.tb_utils")
    tb.init_tb_logger = lambda directory, name: writer
    sys.modules["scripts.tb_utils"] = tb
    try:
        import albumentations  # noqa: F401
        import pandas  # noqa: F401
        import segmentation_models_pytorch  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"their dependencies: {exc}; {PIP}") from None
    import Learner as learner_mod

    learner_mod.tqdm = lambda iterable, **kw: iterable  # no progress bars in their ensemble pass
    from scripts import dataset, utils
    from segmentation_models_pytorch import Unet  # their Train.py's smp.unet.Unet (moved in 0.3)

    return types.SimpleNamespace(Learner=learner_mod.Learner, dataset=dataset, utils=utils,
                                 Unet=Unet, writer=writer, albumentations=albumentations,
                                 learner_sha1=hashlib.sha1((authors / "Learner.py").read_bytes())
                                 .hexdigest())


def write_layout(args, stems: list[str]) -> Path:
    """Their layout in ``--out/data``: images/, scribbles/ (their codes), masks/, train.csv."""
    from PIL import Image

    from s2l_tools.io.images import read_labels

    root = args.out / "data"
    code = np.array([250, 0, 1], dtype=np.uint8)  # ours 0 unlabeled, 1 bg, 2 fg -> theirs
    for sub in ("images", "scribbles", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for s in stems:
        img = root / "images" / f"{s}.png"
        img.unlink(missing_ok=True)
        img.symlink_to((args.data / "images" / f"{s}.png").resolve())
        scr = read_labels(args.data / "scribbles" / f"{s}.tif")
        if scr.max() > 2:
            raise SystemExit(f"{args.data}/scribbles/{s}.tif: values above 2; two classes only")
        Image.fromarray(code[scr]).save(root / "scribbles" / f"{s}.png")
        mask = read_labels(args.data / "masks" / f"{s}.tif") > 0
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{s}.png")
    (root / "train.csv").write_text("ImageID,fold\n" + "".join(f"{s},1\n" for s in stems))
    return root


def their_budget(args, n: int) -> dict:
    crops = args.epochs_equivalent * OUR_CROPS_PER_EPOCH
    n_epochs = args.n_epochs or max(1, round(crops / n))
    thr = args.thr_epoch if args.thr_epoch is not None else round(crops / 2 / n)
    period = args.period_epoch or max(1, round(OUR_ENSEMBLE_EVERY * OUR_CROPS_PER_EPOCH / n))
    if args.method == "pce":
        thr, period = n_epochs, n_epochs + 1
    return {"n_epochs": n_epochs, "thr_epoch": thr, "period_epoch": period,
            "crops_per_epoch": n, "crops": n_epochs * n, "warmup_crops": thr * n,
            "ensembles_before_pseudo": thr // period,
            "ensembles": n_epochs // period}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    train_stems, val_stems = check_folders(args)
    their = load_authors(args.authors, args.deps)
    from torch.utils.data import DataLoader

    import pandas as pd

    from s2l_tools.inference.postprocess import instances_from_probability

    args.out.mkdir(parents=True, exist_ok=True)
    root = write_layout(args, train_stems)
    b = their_budget(args, len(train_stems))
    reach = [1 - 0.8 ** k for k in (b["ensembles_before_pseudo"], b["ensembles"])]
    print(f"budget: {b['n_epochs']} of their epochs x {b['crops_per_epoch']} crops = "
          f"{b['crops']} crops; pseudo-labels from epoch {b['thr_epoch']} "
          f"({b['warmup_crops']} crops), ensemble every {b['period_epoch']} epochs "
          f"({b['ensembles']} in all)", flush=True)
    if args.method == "s2l":
        print(f"note: their EMA starts at 0, so a foreground pixel's mean is at most "
              f"{reach[0]:.2f} when pseudo-labels start and {reach[1]:.2f} at the end "
              "(foreground pseudo-labels need > 0.8)", flush=True)

    config = type("config", (), dict(
        seed=args.seed, name="ours", device=torch.device("cpu"),
        data_dir=str(root / "images"), scr_dir=str(root / "scribbles"),
        mask_dir=str(root / "masks"), df_path=str(root / "train.csv"),
        log_dir=str(args.out / "logs"), fold=0, n_epochs=b["n_epochs"],
        input_size=args.input_size, batch_size=args.batch_size, lr=args.lr,
        weight_decay=5e-5, num_workers=0, ignore_index=250, thr_epoch=b["thr_epoch"],
        period_epoch=b["period_epoch"], thr_conf=0.8, alpha=0.2))
    their.utils.seed_everything(config.seed)
    model = their.Unet(encoder_name=args.encoder, encoder_weights=None,
                       decoder_use_batchnorm=True, decoder_attention_type="scse", classes=2,
                       activation=None)
    df = pd.read_csv(config.df_path, dtype={"ImageID": str})  # a hex id may look like 1e5
    train_df = df[df.fold != config.fold].reset_index(drop=True)
    tfms = their.dataset.get_transforms(config.input_size, need=("train", "val"))
    train_ds = their.dataset.dsbDataset(config.data_dir, config.scr_dir, config.mask_dir,
                                        train_df, tfms=tfms["train"], return_id=False)
    train_loader = DataLoader(train_ds, batch_size=config.batch_size,
                              num_workers=config.num_workers, shuffle=True)
    valid_loader = None
    if args.validate:
        valid_ds = their.dataset.dsbDataset(config.data_dir, config.scr_dir, config.mask_dir,
                                            df.head(args.validate).reset_index(drop=True),
                                            tfms=tfms["val"], return_id=True)
        valid_loader = DataLoader(valid_ds, batch_size=1, num_workers=0, shuffle=False)

    class Learner(their.Learner):
        def validation(self):
            if self.valid_loader is None:  # no full masks: only the eval mode theirs leaves
                self.model.eval()
                return math.nan, math.nan
            return super().validation()

    learner = Learner(model, train_loader, valid_loader, config)
    in_opt = {id(p) for g in learner.optimizer.param_groups for p in g["params"]}
    frozen = sum(p.numel() for p in model.parameters() if id(p) not in in_opt)
    load0 = loadavg()
    t0 = time.perf_counter()
    learner.fit(config.n_epochs)
    train_s = time.perf_counter() - t0
    torch.save(model.state_dict(), args.out / "last_model.pth")
    if args.keep == "best":
        ckpt = torch.load(Path(config.log_dir) / "best_model.pth", map_location="cpu",
                          weights_only=False)
        model.load_state_dict(ckpt["model_state_dict"])

    from PIL import Image

    def read_rgb(path: Path) -> np.ndarray:
        return np.array(Image.open(path).convert("RGB"))

    def segment(rgb: np.ndarray) -> np.ndarray:
        x = tfms["val"](image=rgb)["image"].unsqueeze(0).float()
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, -w % 32, 0, -h % 32), mode="reflect")
        with torch.inference_mode():
            prob = torch.softmax(model(x), dim=1)[0, 1, :h, :w].numpy()
        return instances_from_probability(prob, threshold=0.5, min_size=64, fill_holes=True,
                                          declump="none")

    model.eval()
    result = predict_and_score(args.out, args.val, val_stems, segment, train_s=train_s,
                               load0=load0, read=read_rgb)
    result.update(
        n_train=len(train_stems),
        method=args.method, seed=args.seed, keep=args.keep, validate=args.validate,
        budget=dict(b, encoder=args.encoder, encoder_weights=None, input_size=args.input_size,
                    batch_size=args.batch_size, lr=args.lr, decoder_lr=args.lr * 10,
                    epochs_equivalent=args.epochs_equivalent, threads=args.threads),
        params_not_in_optimizer=frozen, data=str(args.data), val=str(args.val),
        authors_learner_sha1=their.learner_sha1,
        albumentations=their.albumentations.__version__)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "scalars.json").write_text(json.dumps(their.writer.rows) + "\n")
    print(f"authors {args.method}: IoU {result['iou']:.4f} mDice {result['mdice']:.4f} "
          f"F1@0.5 {result['f1_50']:.4f} ({result['n_val']} val, {len(train_stems)} train, "
          f"{b['n_epochs']} epochs, train {train_s:.0f} s) -> {args.out / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

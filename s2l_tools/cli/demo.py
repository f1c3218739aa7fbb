"""``s2l-demo`` / ``make demo``: the whole product, end to end, on generated data.

1. generate a synthetic fluorescence-nuclei dataset with Fiji-style RoiSet.zip
   scribbles (:mod:`s2l_tools.data.demo_data`);
2. ``s2l-scribbles``: ROIs -> scribble masks;
3. ``s2l-train --preset laptop``: the budget a user on a laptop gets;
4. ``s2l-predict``: instance labels for the validation images;
5. ``s2l-eval``: scores against the validation masks.

Each step runs the same command a user types, printed before it runs.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from s2l_tools.cli._common import make_parser, run
from s2l_tools.errors import S2LError

#: what a user on a laptop types (``--preset laptop``: a few minutes on 2 CPU cores)
DEMO_TRAIN_ARGS = ["--preset", "laptop", "--checkpoint-every", "4", "--tile", "256"]


def _step(title: str, prog: str, main, argv: list[str]) -> None:
    """Print the command line of one step, run its ``main`` and stop on failure."""
    print(f"\n== {title}\n$ {prog} {shlex.join(argv)}", flush=True)
    rc = main(argv)
    if rc != 0:
        raise S2LError(f"{prog} failed (exit {rc}); see the message above")


def get_parser():
    """The argument parser of ``s2l-demo``."""
    parser = make_parser(
        "s2l-demo",
        "Generate a synthetic nuclei dataset with Fiji-style scribbles, convert, train, "
        "predict and evaluate, printing each command.",
        "  s2l-demo --out demo_out",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--epochs", type=int,
                        help="training epochs, half of them warm-up (default: the laptop "
                             "preset's 12)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    return parser


def _main(args) -> int:
    import shutil

    from s2l_tools.cli import evaluate, predict, scribbles, train
    from s2l_tools.data.demo_data import make_demo_dataset

    t0 = time.perf_counter()
    out: Path = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    data = out / "data"
    run_dir = out / "run"
    if (run_dir / "checkpoint.pt").exists():
        raise S2LError(f"{out}: holds an earlier demo; pass --fresh to start again")
    print(f"== generating a synthetic nuclei dataset in {data}", flush=True)
    make_demo_dataset(data, seed=args.seed)
    _step("ImageJ ROIs -> scribble masks", "s2l-scribbles", scribbles.main, [str(data / "train")])
    train_args = [str(data / "train"), "--out", str(run_dir), "--val", str(data / "val"),
                  "--seed", str(args.seed), *DEMO_TRAIN_ARGS]
    if args.epochs is not None:
        train_args += ["--epochs", str(args.epochs), "--warmup-epochs", str(args.epochs // 2),
                       "--restart-epochs", str(args.epochs)]
    _step("training Scribble2Label", "s2l-train", train.main, train_args)
    pred = out / "predictions"
    _step("predicting the validation images", "s2l-predict", predict.main,
          [str(run_dir), str(data / "val" / "images"), "--out", str(pred), "--rois"])
    _step("scoring against the full masks", "s2l-eval", evaluate.main,
          ["--pred", str(pred), "--truth", str(data / "val" / "masks"),
           "--json", str(out / "scores.json")])
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s: run {run_dir}, predictions "
          f"{pred}, scores {out / 'scores.json'}, curves {run_dir / 'curves.png'}, panels "
          f"{run_dir / 'panels'}")
    return 0


def main(argv=None) -> int:
    """Entry point of ``s2l-demo``; returns the exit status."""
    return run(_main, get_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed benchmarks of s2l-tools on this machine (not a test; issue 7).

    .venv/bin/python benchmarks/speed.py [--quick] [--json OUT.json] [--repeats N]
        [--only gemm,step,fit,predict,ema]

Every number is the median of ``--repeats`` timed runs after one warm-up run,
and the GEMM rate is measured in the same process, so each speed can be read
as a fraction of what this CPU does on a large matrix product right now
(ratios first: on a shared machine the absolute numbers move with the load).

Rows
----
- ``gemm``: ``torch.mm`` of two 2048 x 2048 float32 matrices, GFLOP/s (2 n^3 FLOPs).
- ``step``: :func:`s2l_tools.training.step.train_step` (method s2l with the pseudo-label
  loss on, RAdam, resnet34 U-Net, channels_last, crop 256) at batch 8 (and the
  paper's batch 30 without ``--quick``): images/s, achieved GFLOP/s (FLOPs of one
  forward + backward counted with ``torch.utils.flop_counter.FlopCounterMode``)
  and the ratio to the GEMM rate (target >= 0.7).
- ``optim``: one RAdam update of the laptop preset's network (resnet18 U-Net, 152 tensors)
  as torch runs it on a CPU by default (a Python loop over the tensors) and with
  ``foreach=True`` (the multi-tensor update; what ``s2l-train`` uses on every device),
  the two alternated in one process: seconds per update and their ratio.
- ``fit``: the same short :func:`s2l_tools.training.engine.fit` with ``--method s2l``
  and ``--method pce`` (one pair quick, else two in alternating order): wall-time ratio
  s2l / pce (target <= 1.08) and the seconds of one ensemble pass.
- ``predict``: megapixels/s of a 1024 x 1024 image through
  :func:`s2l_tools.inference.tiling.predict_tiled` (the model default tile 1024, overlap 128,
  or ``--tile``) for torch eager (contiguous), torch channels_last
  (:func:`s2l_tools.device.torch_prob_fn`, what s2l-predict uses), the same in
  bfloat16 (``s2l-predict --amp``) and ONNX Runtime (a resnet34 model exported once with
  :func:`s2l_tools.inference.export.export_onnx`); also one untiled 1024 x 1024 forward
  per backend, to separate the network from the tiling (target >= 0.8 MP/s).
- ``ema``: bytes of the EMA store for the DSB fluo train split and for
  10,000 images of 1024 x 1024.
- Ray (1 vs 2 workers) and CellProfiler per image: placeholders, measured by
  ``benchmarks/ray_bench.py`` and the CellProfiler benchmark (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DSB = Path(os.environ.get("S2L_DSB", "/work/shared/data/dsb2018"))


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def timeit(fn, repeats: int, warmup: int = 1) -> dict:
    """Median (and min/max) seconds of ``fn()`` over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
            "repeats": repeats, "load": loadavg()}


# ----------------------------------------------------------------------------- gemm
def bench_gemm(repeats: int, n: int = 2048) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    inner = 5
    t = timeit(lambda: [torch.mm(a, b) for _ in range(inner)], max(repeats, 5))
    gflops = 2 * n ** 3 * inner / t["median_s"] / 1e9
    best = 2 * n ** 3 * inner / t["min_s"] / 1e9
    return {"n": n, "gflops": gflops, "gflops_best": best, **t}


# ----------------------------------------------------------------------------- step
def _step_setup(encoder: str, batch: int, crop: int, *, foreach: bool = True):
    """The network, its RAdam (``foreach`` as the training builds it) and one batch."""
    import torch

    from s2l_tools.training.model import build_model, param_groups

    model = build_model(encoder=encoder, in_channels=1, classes=2, seed=0)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.RAdam(param_groups(model, 3e-4, decoder_mult=10.0, weight_decay=5e-5),
                            lr=3e-4, foreach=foreach)
    g = torch.Generator().manual_seed(0)
    batch_t = {
        "image": torch.rand(batch, 1, crop, crop, generator=g),
        "scribble": torch.randint(0, 3, (batch, crop, crop), generator=g),
        "ema": torch.rand(batch, crop, crop, generator=g),
    }
    return model, opt, batch_t


def count_step_flops(encoder: str, batch: int, crop: int) -> float:
    """FLOPs of one forward + backward (FlopCounterMode: convolutions and matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, _, b = _step_setup(encoder, batch, crop)
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(b["image"].contiguous(memory_format=torch.channels_last))
        logits.float().logsumexp(1).mean().backward()
    return float(counter.get_total_flops())


def bench_step(encoder: str, batch: int, crop: int, repeats: int, gemm_gflops: float) -> dict:
    from s2l_tools.training.step import train_step

    flops = count_step_flops(encoder, batch, crop)
    model, opt, b = _step_setup(encoder, batch, crop)

    def run():
        train_step(model, opt, b, method="s2l", use_pseudo=True, threshold=0.8,
                   pseudo_weight=0.5, device="cpu")

    t = timeit(run, repeats)
    gflops = flops / t["median_s"] / 1e9
    return {"encoder": encoder, "batch": batch, "crop": crop, "flops_per_step": flops,
            "images_per_s": batch / t["median_s"], "gflops": gflops,
            "ratio_to_gemm": gflops / gemm_gflops, "target_ratio": 0.7,
            "met": gflops / gemm_gflops >= 0.7, **t}


# ---------------------------------------------------------------------------- optim
def bench_optim(repeats: int) -> dict:
    """RAdam's update of the laptop preset's network, the per-tensor loop (torch's CPU
    default) against ``foreach=True``, alternated; medians of ``max(repeats, 10)``."""
    import torch

    g = torch.Generator().manual_seed(0)
    opts = {}
    for foreach in (False, True):
        model, opt, _ = _step_setup("resnet18", 1, 8, foreach=foreach)
        for prm in model.parameters():
            prm.grad = torch.randn(prm.shape, generator=g).to(
                memory_format=torch.channels_last if prm.dim() == 4 else torch.preserve_format)
        opt.step()  # the first update creates the moments
        opts["foreach" if foreach else "loop"] = opt
    ts: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(max(repeats, 10)):
        for name, opt in opts.items():
            t = time.perf_counter()
            opt.step()
            ts[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in ts.items()}
    n = sum(len(group["params"]) for group in opts["loop"].param_groups)
    return {"tensors": n, "loop_s": med["loop"], "foreach_s": med["foreach"],
            "ratio": med["foreach"] / med["loop"], "repeats": max(repeats, 10),
            "load": loadavg()}


# ------------------------------------------------------------------------------ fit
# sizes of the DSB fluo train split in about its proportions (195 x 256^2, 66 x 520x696,
# 49 x 360^2 of 323): the mean image of this mix is 148k px, the split's 154k px
FIT_SIZES = [(256, 256), (520, 696), (256, 256), (360, 360),
             (256, 256), (520, 696), (256, 256), (256, 256)]


def fit_images(n: int) -> list[str]:
    """DSB fluo train images with the sizes of ``FIT_SIZES`` (the first by name of each size)."""
    import csv

    rows = list(csv.DictReader(open(DSB / "manifest.csv")))
    small = [r for r in rows if r["modality"] == "fluo" and r["split"] == "train"]
    pick = []
    for want in (FIT_SIZES * (n // len(FIT_SIZES) + 1))[:n]:
        for r in sorted(small, key=lambda r: r["id"]):
            if (int(r["height"]), int(r["width"])) == want and r["id"] not in pick:
                pick.append(r["id"])
                break
    return pick


def make_fit_dataset(root: Path, ids: list[str], ratio: float = 0.3) -> None:
    """images/ (symlinks), scribbles/ (synthetic, uint8 TIFF), masks/ of DSB fluo train."""
    import tifffile

    from s2l_tools.io.images import read_labels
    from s2l_tools.data.synth import synthesize_scribbles

    src = DSB / "fluo" / "train"
    for d in ("images", "scribbles", "masks"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(ids):
        (root / "images" / f"{i}.png").symlink_to(src / "images" / f"{i}.png")
        (root / "masks" / f"{i}.tif").symlink_to(src / "labels" / f"{i}.tif")
        lab = read_labels(src / "labels" / f"{i}.tif")
        scr = synthesize_scribbles(lab, ratio=ratio, seed=[0, k])
        tifffile.imwrite(root / "scribbles" / f"{i}.tif", scr, compression="zlib")


def bench_fit(args, workdir: Path) -> dict:
    from rich.console import Console

    from s2l_tools.training.config import TrainConfig
    from s2l_tools.training.engine import fit

    data = workdir / "fitdata"
    ids = fit_images(args.fit_images)
    make_fit_dataset(data, ids)
    # the paper's ensemble interval (5) and warm-up share, the default crops per epoch
    # (max(images, 8 x batch)) and tile: what a user with a handful of images runs
    settings = dict(encoder=args.fit_encoder, crop=args.fit_crop, batch_size=args.fit_batch,
                    epochs=15, warmup_epochs=5, ensemble_every=5, restart_epochs=15,
                    checkpoint_every=100, device="cpu", seed=0)
    quiet = Console(stderr=True, quiet=True)
    runs = {"s2l": [], "pce": []}
    ensemble, passes = [], []
    for rep in range(args.fit_repeats):
        for method in ("s2l", "pce") if rep % 2 == 0 else ("pce", "s2l"):
            out = workdir / f"fit_{method}_{rep}"
            cfg = TrainConfig(data=str(data), out=str(out), method=method, **settings)
            t = time.perf_counter()
            fit(cfg, console=quiet)
            runs[method].append(time.perf_counter() - t)
            if method == "s2l":
                import csv

                rows = [r for r in csv.DictReader(open(out / "metrics.csv")) if r.get("ensemble_s")]
                ensemble += [float(r["ensemble_s"]) for r in rows]
                passes.append(len(rows))
    s2l, pce = statistics.median(runs["s2l"]), statistics.median(runs["pce"])
    from s2l_tools.training.data import load_training_data, samples_per_epoch

    td = load_training_data(data)
    cfg = TrainConfig(data=str(data), **settings)
    spe = samples_per_epoch(cfg, td)
    pass_s = statistics.median(ensemble)
    pixels = int(sum(h * w for h, w in td.shapes))
    n_pass = statistics.median(passes)
    # steady state of a long run: one pass every `ensemble_every` epochs (this short run
    # skips the pass after its last epoch, so it has epochs / 5 - 1 of them)
    steady = (s2l + (settings["epochs"] / settings["ensemble_every"] - n_pass) * pass_s) / pce
    # the paper's epoch (every image once, spe = N) on images of the DSB fluo train
    # split's mean size: 1 + (pass seconds per image) / (5 x seconds per training crop),
    # plus the per-step cost of the pseudo-label loss measured here
    crop_s = pce / (settings["epochs"] * spe)
    step_overhead = (s2l - n_pass * pass_s) / pce
    dsb_mean_px = 49_600_000 / 323
    paper_scale = step_overhead + (dsb_mean_px / (pixels / pass_s)) / (
        settings["ensemble_every"] * crop_s)
    return {"images": len(ids), "shapes": [list(s) for s in td.shapes],
            "samples_per_epoch": spe, **settings,
            "s2l_s": s2l, "pce_s": pce, "s2l_runs_s": runs["s2l"], "pce_runs_s": runs["pce"],
            "ratio": s2l / pce, "target_ratio": 1.08, "met": s2l / pce <= 1.08,
            "ensemble_pass_s": pass_s, "ensemble_passes_per_fit": n_pass,
            "ensemble_mp_s": pixels / pass_s / 1e6, "seconds_per_crop": crop_s,
            "ratio_steady_state": steady, "step_overhead_ratio": step_overhead,
            "ratio_paper_epoch_dsb_estimate": paper_scale, "load": loadavg()}


# -------------------------------------------------------------------------- predict
def calibrate_batchnorm(model, size: int = 256) -> None:
    """Give a freshly built model BatchNorm statistics of its own activations, then eval().

    With the initial running statistics (mean 0, var 1) a random resnet34 U-Net in
    eval mode produces logits of enormous size; softmax of those differs between
    torch and ONNX Runtime by rounding alone (export_onnx's check then fails), and
    such a model is not what users predict with. Speed does not depend on the values.
    """
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    g = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(2, 1, size, size, generator=g))
    model.eval()


def bench_predict(args, workdir: Path) -> dict:
    import torch

    from s2l_tools.training.checkpoint import ModelMeta
    from s2l_tools.device import torch_prob_fn
    from s2l_tools.inference.export import export_onnx
    from s2l_tools.training.model import build_model
    from s2l_tools.inference.onnx import load_session
    from s2l_tools.inference.tiling import predict_tiled

    size = 1024
    meta = ModelMeta(encoder="resnet34", in_channels=1)  # the defaults a trained model gets
    tile, overlap = (args.tile or meta.tile), (args.tile or meta.tile) // 8
    meta.tile, meta.overlap = tile, overlap
    mp = size * size / 1e6
    image = np.random.default_rng(0).random((1, size, size), dtype=np.float32)

    model = build_model(encoder="resnet34", in_channels=1, classes=2, seed=0)
    calibrate_batchnorm(model)
    onnx_path = workdir / "resnet34.onnx"
    t = time.perf_counter()
    # check=False: export_onnx's own check (probabilities within 1e-3 of torch on a random
    # normal input) fails on an UNTRAINED resnet34 + scSE U-Net, whose logits reach ~400:
    # fp32 rounding alone moves its probabilities by ~0.03 (torch fp32 vs torch fp64 too;
    # ONNX Runtime is closer to fp64 than torch is). Speed does not depend on the values;
    # the difference on the benchmark image is recorded instead.
    export_onnx(model, meta, onnx_path, check=False)
    export_s = time.perf_counter() - t
    session = load_session(onnx_path)

    def eager_fn(batch):
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            return torch.softmax(model(x).float(), dim=1).numpy()

    def ort_fn(batch):
        return session.run(["probability"], {"image": np.ascontiguousarray(batch)})[0]

    x = image[None, :, :256, :256]
    with torch.inference_mode():
        want = torch.softmax(model(torch.from_numpy(np.ascontiguousarray(x))), 1).numpy()
    ort_vs_torch = float(np.abs(ort_fn(np.ascontiguousarray(x)) - want).max())
    out = {"image": f"{size}x{size}", "tile": tile, "overlap": overlap, "export_s": export_s,
           "ort_vs_torch_max_abs_prob_diff_256px": ort_vs_torch,
           "target_mp_s": 0.8, "rows": {}}
    backends = [("torch eager (contiguous)", lambda: eager_fn),
                ("torch channels_last", lambda: torch_prob_fn(model, device="cpu")),
                ("torch channels_last bf16 (s2l-predict --amp)",
                 lambda: torch_prob_fn(model, device="cpu", amp=True)),
                ("onnxruntime", lambda: ort_fn)]
    for name, make in backends:
        model.to(memory_format=torch.contiguous_format)
        fn = make()
        calls = []

        def counted(batch, fn=fn):
            calls.append(batch.shape)
            return fn(batch)

        tiled = timeit(lambda: predict_tiled(counted, image, tile=tile, overlap=overlap,
                                             batch_size=4, pad_multiple=32), args.repeats)
        tiles = calls[: len(calls) // (args.repeats + 1)]  # the batches of one call
        whole = timeit(lambda: fn(image[None]), args.repeats)
        out["rows"][name] = {
            "tiled_mp_s": mp / tiled["median_s"], "tiled": tiled,
            "whole_mp_s": mp / whole["median_s"], "whole": whole,
            "met": mp / tiled["median_s"] >= 0.8,
        }
        out["tiles"] = sum(t[0] for t in tiles)
        out["tiled_pixels_ratio"] = sum(t[0] * t[2] * t[3] for t in tiles) / (size * size)
    return out


# ------------------------------------------------------------------------------ ema
def bench_ema() -> dict:
    import csv

    from s2l_tools.training.ema import EmaStore

    rows = [r for r in csv.DictReader(open(DSB / "manifest.csv"))
            if r["modality"] == "fluo" and r["split"] == "train"]
    shapes = [(int(r["height"]), int(r["width"])) for r in rows]
    store = EmaStore(shapes)
    bpp = store.bytes_per_pixel
    big = 10_000 * 1024 * 1024 * bpp + 10_000 * 8
    return {"dtype": str(store.dtype), "bytes_per_pixel": bpp,
            "dsb_fluo_train": {"images": len(shapes), "pixels": int(sum(h * w for h, w in shapes)),
                               "bytes": store.nbytes},
            "10k_1024": {"images": 10_000, "bytes": big}}


# ------------------------------------------------------------------------------ main
def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def table(res: dict) -> str:
    lines = ["| benchmark | ratio (target) | value | load avg (1/5/15 min) |",
             "| --- | --- | --- | --- |"]
    g = res.get("gemm")
    if g:
        lines.append(f"| torch.mm {g['n']}x{g['n']} float32 | 1 (reference) | "
                     f"{g['gflops']:.1f} GFLOP/s (best {g['gflops_best']:.1f}) | {g['load']} |")
    for s in res.get("step", []):
        ok = "met" if s["met"] else "NOT met"
        lines.append(
            f"| train_step {s['encoder']} U-Net, batch {s['batch']} x {s['crop']} px | "
            f"{s['ratio_to_gemm']:.2f} of GEMM (>= 0.7: {ok}) | {s['images_per_s']:.2f} img/s, "
            f"{s['gflops']:.1f} GFLOP/s, {s['flops_per_step'] / 1e9:.0f} GFLOP/step, "
            f"{s['median_s']:.2f} s/step | {s['load']} |")
    o = res.get("optim")
    if o and "error" in o:
        lines.append(f"| RAdam update, loop vs foreach | failed: {o['error']} | - | - |")
    elif o:
        lines.append(f"| RAdam update of the laptop preset's resnet18 U-Net ({o['tensors']} tensors) "
                     f"| foreach / loop {o['ratio']:.2f} | loop {o['loop_s']:.3f} s, foreach "
                     f"{o['foreach_s']:.3f} s (medians of {o['repeats']}, alternated) | {o['load']} |")
    f = res.get("fit")
    if f and "error" in f:
        lines.append(f"| fit() s2l vs pce | failed: {f['error']} | - | - |")
    elif f:
        ok = "met" if f["met"] else "NOT met"
        ens = f["ensemble_pass_s"]
        lines.append(
            f"| fit() s2l vs pce ({f['epochs']} epochs, warm-up {f['warmup_epochs']}, ensemble "
            f"every {f['ensemble_every']}; {f['images']} images, {f['encoder']}, crop {f['crop']}, "
            f"batch {f['batch_size']}) | {f['ratio']:.3f} (<= 1.08: {ok}) | s2l {f['s2l_s']:.1f} s, "
            f"pce {f['pce_s']:.1f} s; ensemble pass {ens:.2f} s ({f['ensemble_mp_s']:.2f} MP/s); "
            f"steady state {f['ratio_steady_state']:.3f}; paper-style epochs on DSB-sized images "
            f"(estimate) {f['ratio_paper_epoch_dsb_estimate']:.3f} | {f['load']} |")
    p = res.get("predict")
    if p and "error" in p:
        lines.append(f"| predict | failed: {p['error']} | - | - |")
    elif p:
        for name, r in p["rows"].items():
            ok = "met" if r["met"] else "NOT met"
            lines.append(
                f"| predict {p['image']} {name} | {r['tiled_mp_s'] / 0.8:.2f} of target "
                f"(>= 0.8 MP/s: {ok}) | tiled {r['tiled_mp_s']:.2f} MP/s ({p['tiles']} tiles of "
                f"{p['tile']}); one untiled forward {r['whole_mp_s']:.2f} MP/s | "
                f"{r['tiled']['load']} |")
    e = res.get("ema")
    if e:
        d = e["dsb_fluo_train"]
        lines.append(f"| EMA store ({e['dtype']}, {e['bytes_per_pixel']} B/px) | - | DSB fluo train "
                     f"({d['images']} images): {_fmt_bytes(d['bytes'])}; 10,000 x 1024^2: "
                     f"{_fmt_bytes(e['10k_1024']['bytes'])} | - |")
    lines.append("| Ray train_step, 1 vs 2 workers | see benchmarks/ray_bench.py, "
                 "docs/benchmarks.md | - | - |")
    lines.append("| CellProfiler RunScribble2Label per image | see docs/benchmarks.md "
                 "(CellProfiler section) | - | - |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="batch 8 only, 3 repeats, one s2l/pce pair, small fit (minutes)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--repeats", type=int, help="timed runs per number (default 3 quick, 5)")
    p.add_argument("--only", default="gemm,step,optim,fit,predict,ema",
                   help="comma-separated subset of gemm,step,optim,fit,predict,ema")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    p.add_argument("--tile", type=int, help="predict: tile size (default: the model default)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.fit_repeats = 1 if args.quick else 2
    args.fit_images = 8
    args.fit_encoder = "resnet18" if args.quick else "resnet34"
    args.fit_crop = 128 if args.quick else 256
    args.fit_batch = 4 if args.quick else 8
    only = set(args.only.split(","))
    res: dict = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                             "torch": torch.__version__, "python": platform.python_version(),
                             "platform": platform.platform(), "load_start": loadavg()},
                 "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
                 "quick": args.quick}
    t0 = time.perf_counter()
    def section(name, fn):
        print(f"{name} ...", file=sys.stderr, flush=True)
        try:
            return fn()
        except Exception as exc:  # keep the other numbers
            import traceback

            traceback.print_exc()
            return {"error": f"{type(exc).__name__}: {exc}"}

    gemm = None
    if "gemm" in only or "step" in only:
        print("gemm ...", file=sys.stderr, flush=True)
        res["gemm"] = bench_gemm(args.repeats)
        gemm = res["gemm"]["gflops"]
    if "step" in only:
        res["step"] = []
        for batch in (8,) if args.quick else (8, 30):
            print(f"train_step batch {batch} ...", file=sys.stderr, flush=True)
            res["step"].append(bench_step("resnet34", batch, 256, args.repeats, gemm))
        res["gemm_after_step"] = bench_gemm(args.repeats)
    if "optim" in only:
        res["optim"] = section("optim: RAdam loop vs foreach", lambda: bench_optim(args.repeats))
    with tempfile.TemporaryDirectory(prefix="s2l_speed_") as tmp:
        if "fit" in only:
            res["fit"] = section("fit s2l vs pce", lambda: bench_fit(args, Path(tmp)))
        if "predict" in only:
            res["predict"] = section("predict", lambda: bench_predict(args, Path(tmp)))
    if "ema" in only:
        res["ema"] = bench_ema()
    res["machine"]["load_end"] = loadavg()
    res["total_s"] = time.perf_counter() - t0
    print(table(res))
    print(f"\nload average at start {res['machine']['load_start']}, at end "
          f"{res['machine']['load_end']} ({os.cpu_count()} CPUs, {torch.get_num_threads()} torch "
          f"threads); total {res['total_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

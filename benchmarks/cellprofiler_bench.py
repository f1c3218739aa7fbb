"""RunScribble2Label per image inside headless CellProfiler vs bare ONNX Runtime vs torch
(not a test; issue 5).

    .venv/bin/python benchmarks/cellprofiler_bench.py [--images 4] [--size 1024]
        [--encoder resnet34] [--steps 30] [--cp-venv .cpvenv] [--json OUT]
        [--model-dir DIR] [--profile]

1. A U-Net (``--encoder``) is trained ``--steps`` Adam steps on 128 px crops of
   synthetic nuclei (so that it finds nuclei, not noise), saved and exported to
   ONNX with the default model settings (tile 1024: a 1024 x 1024 image is one tile).
2. ``--images`` synthetic nuclei images of ``--size``^2 (uint16 TIFF) go through a real
   headless CellProfiler 4.2.8.1 pipeline (Images, Metadata, NamesAndTypes, Groups,
   RunScribble2Label, ExportToSpreadsheet). CellProfiler logs each module's wall and
   CPU seconds per image (``-L INFO``); the first image also loads the model, so the
   median is over the others.
3. In the same CellProfiler Python: bare ``onnxruntime`` (``session.run`` on the
   normalised image, nothing else) and the module's work outside CellProfiler
   (``onnx_inference.segment``), medians over the images after one warm-up.
4. In this venv: torch channels_last float32 and bfloat16 (``torch_prob_fn``).
5. With ``--profile``: the same CellProfiler run once more under cProfile, and the
   time of ``RunScribble2Label.run`` split by what it calls (reading the image from
   disk, which CellProfiler does lazily for the first module that asks for it;
   ``segment``; the objects and their measurements), per image.

Target: the module within 1.1 x the bare model's time. The machine's load average
is recorded with the result: on a shared machine the ratio moves with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    import tifffile

    from s2l_tools.data.demo_data import make_nuclei_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img, _ = make_nuclei_image(shape=(size, size), n_cells=(150, 250),
                                   rng=np.random.default_rng([7, i]))
        paths.append(folder / f"nuclei_{i:02d}.tif")
        tifffile.imwrite(paths[-1], img)
    return paths


def train_model(folder: Path, encoder: str, steps: int):
    import torch

    from s2l_tools.training.checkpoint import ModelMeta, save_model
    from s2l_tools.data.demo_data import make_nuclei_image
    from s2l_tools.inference.export import export_onnx
    from s2l_tools.io.images import normalize
    from s2l_tools.training.model import build_model

    torch.manual_seed(0)
    net = build_model(encoder=encoder, in_channels=1, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(3)
    net.train()
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(8):
            img, lab = make_nuclei_image(shape=(128, 128), n_cells=(4, 10), rng=rng)
            xs.append(normalize(img[None].astype(np.float32)))
            ys.append((lab > 0).astype(np.int64))
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(np.stack(xs))),
                                                torch.from_numpy(np.stack(ys)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    meta = ModelMeta(encoder=encoder, in_channels=1)
    save_model(folder / "model.pt", net.state_dict(), meta)
    export_onnx(net, meta, folder / "model.onnx", check=False)
    return net, meta


PROFILE_SIDE = textwrap.dedent("""
    import json, pstats, sys
    stats = pstats.Stats(sys.argv[1])
    run = [k for k in stats.stats if k[0].endswith("runscribble2label.py") and k[2] == "run"]
    if not run:
        raise SystemExit("RunScribble2Label.run not in the profile")
    cc, nc, tt, ct, callers = stats.stats[run[0]]
    stats.calc_callees()
    callees = stats.all_callees[run[0]]
    parts = sorted(((f"{k[2]} ({k[0].rsplit('/', 1)[-1]}:{k[1]})", v[3] / nc)
                    for k, v in callees.items()), key=lambda kv: -kv[1])
    print(json.dumps({"calls": nc, "run_s_per_image": ct / nc, "own_s_per_image": tt / nc,
                      "callees_s_per_image": parts[:12]}))
""")


CP_SIDE = textwrap.dedent("""
    import json, statistics, sys, time
    import numpy as np, onnxruntime as ort, tifffile
    sys.path.insert(0, sys.argv[1])  # the installed plugin folder: its onnx_inference
    import _s2l_onnx_inference as oi
    paths, model = sys.argv[3:], sys.argv[2]
    images = [tifffile.imread(p).astype(np.float32) for p in paths]
    sess = oi.load_session(model)
    xs = [oi.normalize_percentile(im[None])[None] for im in images]
    def med(f, items):
        f(items[0])
        ts = []
        for it in items:
            t = time.perf_counter(); f(it); ts.append(time.perf_counter() - t)
        return statistics.median(ts)
    out = {"onnxruntime": ort.__version__,
           "bare_ort_s": med(lambda x: sess.run(None, {"image": x}), xs),
           "segment_s": med(lambda im: oi.segment(sess, im), images),
           "normalize_s": med(lambda im: oi.normalize_percentile(im[None]), images)}
    probs = [sess.run(None, {"image": x})[0][0, 1] for x in xs]
    from _s2l_postprocess import instances_from_probability
    out["postprocess_s"] = med(lambda p: instances_from_probability(p, threshold=0.5,
                                                                    min_size=64), probs)
    out["objects"] = [int(oi.segment(sess, im)[0].max()) for im in images]
    print(json.dumps(out))
""")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cp-venv", type=Path, default=Path(os.environ.get("CP_VENV",
                                                                         ROOT / ".cpvenv")))
    p.add_argument("--json", type=Path)
    p.add_argument("--model-dir", type=Path,
                   help="reuse model.pt + model.onnx of an earlier run's folder (no training)")
    p.add_argument("--profile", action="store_true",
                   help="also split RunScribble2Label.run's time under cProfile")
    args = p.parse_args()
    cp_python = args.cp_venv / "bin" / "python"
    if not cp_python.is_file():
        print(f"no CellProfiler venv at {args.cp_venv}; build it with make cellprofiler-venv",
              file=sys.stderr)
        return 1
    from s2l_tools.cli import cellprofiler as s2l_cp

    work = Path(tempfile.mkdtemp(prefix="s2l-cpbench-"))
    t = time.perf_counter()
    if args.model_dir is not None and (args.model_dir / "model.onnx").is_file():
        import shutil

        from s2l_tools.training.checkpoint import load_model

        for name in ("model.pt", "model.onnx"):
            shutil.copy(args.model_dir / name, work / name)
        net, meta = load_model(work / "model.pt")
        print(f"model of {args.model_dir} reused", file=sys.stderr)
    else:
        net, meta = train_model(work, args.encoder, args.steps)
        print(f"model trained and exported in {time.perf_counter() - t:.0f} s in {work}",
              file=sys.stderr)
    paths = make_images(work / "images", args.images, args.size)
    plugins, out = work / "plugins", work / "cp_out"
    out.mkdir()
    assert s2l_cp.main(["install", "--plugins-dir", str(plugins)]) == 0
    cppipe = work / "bench.cppipe"
    assert s2l_cp.main(["pipeline", "--model", str(work / "model.onnx"), "--out",
                        str(cppipe)]) == 0
    env = {**os.environ, "HOME": str(work)}
    t = time.perf_counter()
    proc = subprocess.run([str(cp_python), "-W", "ignore", "-m", "cellprofiler", "-c", "-r",
                           "-p", str(cppipe), "-i", str(work / "images"), "-o", str(out),
                           "--plugins-directory", str(plugins), "-L", "INFO"],
                          capture_output=True, text=True, env=env, cwd=work)
    cp_total = time.perf_counter() - t
    times = re.findall(r"module RunScribble2Label # \d+: CPU_time = ([\d.]+) secs, "
                       r"Wall_time = ([\d.]+) secs", proc.stderr)
    if proc.returncode != 0 or len(times) != len(paths):
        print(proc.stderr[-4000:], file=sys.stderr)
        print(f"CellProfiler exit {proc.returncode}, {len(times)} module timings", file=sys.stderr)
        return 1
    cpu = [float(c) for c, _ in times]
    wall = [float(w) for _, w in times]
    side = subprocess.run([str(cp_python), "-W", "ignore", "-c", CP_SIDE, str(plugins),
                           str(work / "model.onnx"), *map(str, paths)],
                          capture_output=True, text=True, env=env, cwd=work)
    if side.returncode != 0:
        print(side.stderr[-4000:], file=sys.stderr)
        return 1
    bare = json.loads(side.stdout.strip().splitlines()[-1])

    import torch

    from s2l_tools.device import torch_prob_fn
    from s2l_tools.io.images import read_image

    xs = [read_image(p)[None] for p in paths]
    torch_s = {}
    for name, amp in (("float32", None), ("bfloat16", True)):
        fn = torch_prob_fn(net, device="cpu", amp=amp)
        fn(xs[0])
        ts = []
        for x in xs:
            t = time.perf_counter()
            fn(x)
            ts.append(time.perf_counter() - t)
        torch_s[name] = statistics.median(ts)
    module_s = statistics.median(wall[1:]) if len(wall) > 1 else wall[0]
    res = {"image": f"{args.size}x{args.size}", "images": len(paths), "encoder": args.encoder,
           "tile": meta.tile, "module_wall_s_per_image": wall, "module_cpu_s_per_image": cpu,
           "module_wall_s_median_after_first": module_s, "cellprofiler_run_s": cp_total,
           **{f"cp_venv_{k}": v for k, v in bare.items()},
           "torch_channels_last_s": torch_s, "ratio_module_to_bare_ort":
           module_s / bare["bare_ort_s"], "target_ratio": 1.1,
           "met": module_s / bare["bare_ort_s"] <= 1.1, "load": os.getloadavg(),
           "torch_threads": torch.get_num_threads()}
    if args.profile:
        prof = work / "cp.prof"
        out2 = work / "cp_out_profiled"
        out2.mkdir()
        proc = subprocess.run([str(cp_python), "-W", "ignore", "-m", "cProfile", "-o", str(prof),
                               "-m", "cellprofiler", "-c", "-r", "-p", str(cppipe), "-i",
                               str(work / "images"), "-o", str(out2), "--plugins-directory",
                               str(plugins), "-L", "WARNING"],
                              capture_output=True, text=True, env=env, cwd=work)
        split = subprocess.run([str(cp_python), "-c", PROFILE_SIDE, str(prof)],
                               capture_output=True, text=True, env=env, cwd=work)
        if proc.returncode != 0 or split.returncode != 0:
            print(proc.stderr[-3000:], split.stderr[-3000:], file=sys.stderr)
            return 1
        res["profile"] = json.loads(split.stdout.strip().splitlines()[-1])
    res["load_after"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

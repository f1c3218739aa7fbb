"""RunScribble2Label per image inside headless CellProfiler vs bare ONNX Runtime vs torch
(not a test; issues 5 and 17).

    .venv/bin/python benchmarks/cellprofiler_bench.py [--images 6] [--size 1024]
        [--encoder resnet34] [--steps 30] [--cp-venv .cpvenv] [--json OUT]
        [--model-dir DIR] [--profile]

1. A U-Net (``--encoder``) is trained ``--steps`` Adam steps on 128 px crops of
   synthetic nuclei (so that it finds nuclei, not noise), saved and exported to
   ONNX with the default model settings (tile 1024: a 1024 x 1024 image is one tile).
   ``--model-dir`` reuses the model.pt + model.onnx of an earlier run's folder.
2. ``--images`` synthetic nuclei images of ``--size``^2 (uint16 TIFF) go through a real
   headless CellProfiler 4.2.8.1 pipeline (Images, Metadata, NamesAndTypes, Groups,
   RunScribble2Label, ExportToSpreadsheet). CellProfiler logs each module's wall and
   CPU seconds per image (``-L INFO``); the first image also loads the model, so the
   medians are over the others.
3. **The ratio, in the same process** (issue 17): CellProfiler runs from a small
   wrapper (:data:`CP_TIMED`, run by the CellProfiler venv's Python), which times
   ``onnxruntime.InferenceSession.run`` and a few other functions with
   ``time.perf_counter`` and then runs ``python -m cellprofiler`` in its own process
   (headless ``-c -r`` runs the pipeline in that process: ``Pipeline.run``, no
   workers). Per image: the module's wall time (CellProfiler's log line) divided by
   the ``session.run`` time of that same image, and the module's time split into
   CellProfiler's image read (lazy, for the first module that asks), the model
   cache look-up, normalisation, tiling around ``session.run``, post-processing,
   ``Objects.segmented``, the measurements and the rest. Nothing of this is in
   the product code: the benchmark wraps the functions from outside.
4. The old, cross-process comparison (kept for continuity): in a separate run of the
   CellProfiler Python, bare ``onnxruntime`` (``session.run`` on the normalised
   image, nothing else) and the module's work outside CellProfiler
   (``onnx_inference.segment``), medians over the images after one warm-up.
5. In this venv: torch channels_last float32 and bfloat16 (``torch_prob_fn``).
6. With ``--profile``: the same CellProfiler run once more under cProfile, and the
   time of ``RunScribble2Label.run`` split by what it calls (cProfile inflates
   Python code; the timers of step 3 do not).

Target (issue 17): the module within 1.1 x the bare model's time, by the median of the
same-process per-image ratios. The machine's load average is recorded with the result.
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


# Run by the CellProfiler venv's Python as: cp_timed.py OUT.json PLUGINS_DIR -- CP_ARGS...
# Wraps a few functions with perf_counter timers, then runs `python -m cellprofiler CP_ARGS`
# in this same process. Times are kept only while RunScribble2Label.run runs, per image.
CP_TIMED = textwrap.dedent('''
    import json, os, runpy, sys, threading, time

    out_path, plugins = sys.argv[1], sys.argv[2]
    cp_args = sys.argv[sys.argv.index("--") + 1:]
    perf, cpu = time.perf_counter, time.thread_time  # wall; CPU of this (the main) thread
    MODULE = "RunScribble2Label"
    state = {"cur": None}
    images = []

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            cur = state["cur"]
            if cur is None or threading.current_thread() is not threading.main_thread():
                return fn(*args, **kwargs)
            t, c = perf(), cpu()
            try:
                return fn(*args, **kwargs)
            finally:
                cur[key] = cur.get(key, 0.0) + perf() - t
                cur[key + "_cpu"] = cur.get(key + "_cpu", 0.0) + cpu() - c
                cur[key + "_calls"] = cur.get(key + "_calls", 0) + 1
        wrapper.__wrapped__ = fn
        return wrapper

    def wrap_attr(owner, name, key):
        setattr(owner, name, timed(key, getattr(owner, name)))

    def wrap_property(cls, name, key, getter=True):
        prop = getattr(cls, name)
        fget, fset = prop.fget, prop.fset
        if getter:
            fget = timed(key, fget)
        else:
            fset = timed(key, fset)
        setattr(cls, name, property(fget, fset, prop.fdel, prop.__doc__))

    # the network: every session.run of the module (one per tile batch)
    import onnxruntime
    wrap_attr(onnxruntime.InferenceSession, "run", "session_run")
    # the plugin's helpers, imported here first: the module imports the same objects
    sys.path.insert(0, plugins)
    import _s2l_onnx_inference as oi, _s2l_postprocess as pp
    wrap_attr(oi, "load_session", "load_session")
    wrap_attr(oi, "segment", "segment")
    wrap_attr(oi, "_normalize", "normalize")
    wrap_attr(oi, "predict_tiled", "predict_tiled")
    wrap_attr(pp, "instances_from_probability", "postprocess")
    # CellProfiler's side: the lazy image read, the objects, the measurements
    from cellprofiler_core.measurement import Measurements
    from cellprofiler_core.object import Objects, ObjectSet
    from cellprofiler_core.pipeline import Pipeline
    wrap_attr(Measurements, "get_image", "get_image")
    wrap_property(Objects, "segmented", "objects_segmented", getter=False)
    wrap_attr(ObjectSet, "add_objects", "add_objects")
    wrap_attr(Measurements, "add_measurement", "add_measurement")

    run_module = Pipeline.run_module  # a staticmethod: the plain function
    wrapped_classes = set()

    def timed_run_module(module, workspace):
        if module.module_name != MODULE:
            return run_module(module, workspace)
        cls = type(module)
        if cls not in wrapped_classes:
            wrapped_classes.add(cls)
            wrap_attr(cls, "add_measurements", "add_measurements")
        cur = {"image_number": int(workspace.measurements.image_set_number),
               "load_before": os.getloadavg()[0]}
        state["cur"] = cur
        t, c = perf(), cpu()
        try:
            return run_module(module, workspace)
        finally:
            cur["module_run"] = perf() - t
            cur["module_run_cpu"] = cpu() - c
            state["cur"] = None
            images.append(cur)

    Pipeline.run_module = staticmethod(timed_run_module)

    sys.argv = ["cellprofiler"] + cp_args
    code = 0
    try:
        runpy.run_module("cellprofiler", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        with open(out_path, "w") as f:
            json.dump({"pid": os.getpid(), "images": images}, f)
    sys.exit(code)
''')

# what the wrapper's timers add up to, in the order of the module's run
TIMED_PARTS = ("get_image", "load_session", "normalize", "session_run",
               "tiling", "postprocess", "segment_rest", "objects_segmented", "add_objects",
               "add_measurements", "module_rest")


def split_module_time(rec: dict, suffix: str = "") -> dict:
    """One image's module time split into parts that add up to ``module_run``.

    ``suffix="_cpu"``: the same split of the main thread's CPU seconds instead of wall
    seconds (``session_run`` is then only the main thread's share of the network).
    """
    rec = {k[:len(k) - len(suffix)]: v for k, v in rec.items() if k.endswith(suffix)}
    parts = {k: rec.get(k, 0.0) for k in ("get_image", "load_session",
                                          "normalize", "session_run", "postprocess",
                                          "objects_segmented", "add_objects",
                                          "add_measurements")}
    parts["tiling"] = rec.get("predict_tiled", 0.0) - parts["session_run"]
    parts["segment_rest"] = (rec.get("segment", 0.0) - rec.get("predict_tiled", 0.0)
                             - parts["normalize"] - parts["postprocess"])
    parts["module_rest"] = rec["module_run"] - sum(
        parts[k] for k in ("get_image", "load_session", "objects_segmented",
                           "add_objects", "add_measurements")) - rec.get("segment", 0.0)
    return {k: parts[k] for k in TIMED_PARTS}


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
    p.add_argument("--images", type=int, default=6)
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
    load_start = os.getloadavg()
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
    timed_py, timed_json = work / "cp_timed.py", work / "cp_timed.json"
    timed_py.write_text(CP_TIMED)
    load_cp = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.run([str(cp_python), "-W", "ignore", str(timed_py), str(timed_json),
                           str(plugins), "--", "-c", "-r", "-p", str(cppipe), "-i",
                           str(work / "images"), "-o", str(out), "--plugins-directory",
                           str(plugins), "-L", "INFO"],
                          capture_output=True, text=True, env=env, cwd=work)
    cp_total = time.perf_counter() - t
    load_cp_after = os.getloadavg()
    logged = re.findall(r"Image # (\d+), module RunScribble2Label # \d+: CPU_time = ([\d.]+) "
                        r"secs, Wall_time = ([\d.]+) secs", proc.stderr)
    timed = (json.loads(timed_json.read_text())["images"] if timed_json.is_file() else [])
    if proc.returncode != 0 or len(logged) != len(paths) or len(timed) != len(paths):
        print(proc.stderr[-4000:], file=sys.stderr)
        print(f"CellProfiler exit {proc.returncode}, {len(logged)} module timings logged, "
              f"{len(timed)} timed in the wrapper's process (0: the pipeline ran elsewhere)",
              file=sys.stderr)
        return 1
    logged = {int(n): (float(c), float(w)) for n, c, w in logged}
    timed.sort(key=lambda r: r["image_number"])
    cpu = [logged[r["image_number"]][0] for r in timed]
    wall = [logged[r["image_number"]][1] for r in timed]
    per_image = []
    for r, w in zip(timed, wall):
        per_image.append({
            "image_number": r["image_number"], "module_wall_s_log": w,
            "module_run_s_timer": r["module_run"], "session_run_s": r["session_run"],
            "session_run_calls": r.get("session_run_calls", 0),
            "ratio_log_wall_to_session_run": w / r["session_run"],
            "ratio_timer_to_session_run": r["module_run"] / r["session_run"],
            "split_s": split_module_time(r),
            "split_main_thread_cpu_s": split_module_time(r, "_cpu"),
            "outside_session_run_s": r["module_run"] - r["session_run"],
            "outside_session_run_main_thread_cpu_s":
                r["module_run_cpu"] - r["session_run_cpu"],
            "add_measurement_s (inside add_measurements)": r.get("add_measurement", 0.0),
            "load_1min_before": r["load_before"]})
    after_first = per_image[1:] if len(per_image) > 1 else per_image
    same_process = {
        "what": "per image, in the one CellProfiler process: the module's wall time "
                "(CellProfiler's log line; and a perf_counter around module.run) / the "
                "session.run time of the same image; medians over the images after the "
                "first (which loads the model)",
        "per_image": per_image,
        "ratios_log_wall": [round(p["ratio_log_wall_to_session_run"], 4) for p in per_image],
        "median_ratio_log_wall": statistics.median(
            p["ratio_log_wall_to_session_run"] for p in after_first),
        "median_ratio_timer": statistics.median(
            p["ratio_timer_to_session_run"] for p in after_first),
        "median_session_run_s": statistics.median(p["session_run_s"] for p in after_first),
        "median_module_wall_s_log": statistics.median(
            p["module_wall_s_log"] for p in after_first),
        "median_split_s": {k: statistics.median(p["split_s"][k] for p in after_first)
                           for k in TIMED_PARTS},
        "median_split_main_thread_cpu_s": {
            k: statistics.median(p["split_main_thread_cpu_s"][k] for p in after_first)
            for k in TIMED_PARTS if k != "session_run"},
        "median_outside_session_run_s": statistics.median(
            p["outside_session_run_s"] for p in after_first),
        "median_outside_session_run_main_thread_cpu_s": statistics.median(
            p["outside_session_run_main_thread_cpu_s"] for p in after_first),
        "load_before_cp": load_cp, "load_after_cp": load_cp_after}
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
    ratio = same_process["median_ratio_log_wall"]
    res = {"image": f"{args.size}x{args.size}", "images": len(paths), "encoder": args.encoder,
           "tile": meta.tile, "load": load_start,
           "ratio_same_process_median": ratio, "target_ratio": 1.1, "met": ratio <= 1.1,
           "same_process": same_process,
           "module_wall_s_per_image": wall, "module_cpu_s_per_image": cpu,
           "module_wall_s_median_after_first": module_s, "cellprofiler_run_s": cp_total,
           **{f"cp_venv_{k}": v for k, v in bare.items()},
           "torch_channels_last_s": torch_s,
           "ratio_module_to_bare_ort": module_s / bare["bare_ort_s"],
           "ratio_module_to_bare_ort_what": "the old cross-process ratio: the module's median "
                                            "wall time / bare session.run measured in another "
                                            "process after the CellProfiler run",
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
    split = same_process["median_split_s"]
    print(f"same process: module / session.run per image {same_process['ratios_log_wall']} "
          f"(median after the first {ratio:.3f}, target 1.1); cross-process (old) "
          f"{res['ratio_module_to_bare_ort']:.3f}; load {load_start[0]:.1f} -> "
          f"{res['load_after'][0]:.1f}\nmedian split, s: "
          + ", ".join(f"{k} {v:.3f}" for k, v in split.items())
          + f"\noutside session.run: {same_process['median_outside_session_run_s']:.3f} s wall, "
          f"{same_process['median_outside_session_run_main_thread_cpu_s']:.3f} s CPU of the "
          "main thread (median per image)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

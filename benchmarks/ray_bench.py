"""Ray Train on this machine: start-up, DDP throughput, EMA store sync (not a test).

    .venv/bin/python benchmarks/ray_bench.py [--encoder resnet34] [--crop 128] [--batch 8]
        [--steps 6] [--store-images 100] [--store-size 256]

Prints one JSON line per configuration: images/s of ``train_step`` (after one
warm-up step) for 2 workers x 1 thread (DDP over gloo, with and without float16
gradient compression) and 1 worker x 2 threads; the seconds of one
``sync_store`` of a float16 store; Ray's start-up seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def _bench_fn(config):
    import torch

    import ray.train
    from s2l_tools.training.distributed import RayContext
    from s2l_tools.training.ema import EmaStore
    from s2l_tools.training.model import build_model
    from s2l_tools.training.step import train_step

    torch.set_num_threads(config["threads"])
    ctx = RayContext(out=".", compress=config["compress"])
    torch.manual_seed(0)
    model = build_model(encoder=config["encoder"], in_channels=1, classes=2)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.RAdam(model.parameters(), lr=1e-4)
    wrapped = ctx.wrap_model(model)
    b = max(1, config["batch"] // ctx.world_size)
    g = torch.Generator().manual_seed(ctx.rank)
    batch = {"image": torch.rand(b, 1, config["crop"], config["crop"], generator=g),
             "scribble": torch.randint(0, 3, (b, config["crop"], config["crop"]), generator=g)}
    times = []
    for _ in range(config["steps"] + 1):
        t = time.perf_counter()
        train_step(wrapped, opt, batch, method="pce", use_pseudo=False, device="cpu")
        times.append(time.perf_counter() - t)
    step_s = sum(times[1:]) / config["steps"]
    out = {"step_s": step_s, "images_per_s": config["batch"] / step_s}
    if ctx.world_size > 1 and config["store_images"]:
        n, s = config["store_images"], config["store_size"]
        store = EmaStore([(s, s)] * n)
        owners = [i % ctx.world_size for i in range(n)]
        for i, o in enumerate(owners):
            if o == ctx.rank:
                store.update(i, torch.rand(s, s, generator=g))
        t = time.perf_counter()
        ctx.sync_store(store, owners)
        out["sync_s"] = time.perf_counter() - t
        out["store_mb"] = store.nbytes / 1e6
    if ctx.is_main:
        with open(config["result"], "w") as f:
            json.dump(out, f)
    ray.train.report(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--store-images", type=int, default=100)
    p.add_argument("--store-size", type=int, default=256)
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import tempfile

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    t = time.perf_counter()
    ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    print(json.dumps({"ray_init_s": round(time.perf_counter() - t, 2)}), flush=True)
    storage = tempfile.mkdtemp(prefix="s2l-bench-")
    try:
        for workers, threads, compress in ((1, 2, False), (2, 1, False), (2, 1, True)):
            res = os.path.join(storage, f"w{workers}t{threads}c{int(compress)}.json")
            cfg = {**vars(args), "threads": threads, "compress": compress, "result": res}
            t = time.perf_counter()
            TorchTrainer(
                _bench_fn, train_loop_config=cfg,
                scaling_config=ScalingConfig(num_workers=workers,
                                             resources_per_worker={"CPU": threads}),
                torch_config=TorchConfig(backend="gloo"),
                run_config=RunConfig(name=f"w{workers}t{threads}c{int(compress)}",
                                     storage_path=storage)).fit()
            row = {"workers": workers, "threads": threads, "fp16_compress": compress,
                   **{k: round(v, 4) for k, v in json.load(open(res)).items()},
                   "fit_s": round(time.perf_counter() - t, 1), "encoder": args.encoder,
                   "crop": args.crop, "batch": args.batch}
            print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

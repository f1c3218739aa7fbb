"""Ray Train here: 2 workers x 1 thread vs 1 process x 2 threads, side by side (not a test).

    nice -n 10 .venv/bin/python benchmarks/ray_bench.py [--encoder resnet34] [--crop 128]
        [--batch 8] [--steps 4] [--repeats 5] [--compress none,bf16,before]
        [--store-images 100] [--store-size 256]

One Ray Train run of 2 workers x 1 CPU (gloo). In each of ``--repeats`` rounds:

- rank 0 trains alone with 2 torch threads on the whole batch (``train_step``, no
  DDP: what a 1-worker x 2-CPU run executes) while rank 1 waits in a barrier;
- both ranks train with 1 thread on half the batch each, through
  :meth:`RayContext.wrap_model` (DDP with the defaults), for each ``--compress``
  (``before``: DDP with ``static_graph`` alone, the settings before issue 17).

Each takes ``--steps`` steps after one warm-up step (its own model and optimizer,
built once). Prints one JSON line per round (images/s, the ratio 2x1 / 1x2, the
load average), then the medians over the rounds; the seconds of one ``sync_store``
of a float16 store; Ray's start-up seconds. The two set-ups alternate within one
run, so a shared machine's load hits both alike: the ratio is what counts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def _bench_fn(config):
    import torch
    import torch.distributed as dist

    import ray.train
    import ray.train.torch
    from s2l_tools.training.distributed import RayContext
    from s2l_tools.training.ema import EmaStore
    from s2l_tools.training.model import build_model
    from s2l_tools.training.step import train_step

    torch.set_num_threads(1)
    ctx = RayContext(out=".")
    W = ctx.world_size

    def model_opt():
        torch.manual_seed(0)
        model = build_model(encoder=config["encoder"], in_channels=1, classes=2)
        model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.RAdam(model.parameters(), lr=1e-4)

    def batch(n, seed):
        g = torch.Generator().manual_seed(seed)
        return {"image": torch.rand(n, 1, config["crop"], config["crop"], generator=g),
                "scribble": torch.randint(0, 3, (n, config["crop"], config["crop"]),
                                          generator=g)}

    def steps(model, opt, b):
        times = []
        for _ in range(config["steps"] + 1):
            t = time.perf_counter()
            train_step(model, opt, b, method="pce", use_pseudo=False, device="cpu")
            times.append(time.perf_counter() - t)
        return statistics.median(times[1:])

    alone = model_opt() if ctx.rank == 0 else None
    whole = batch(config["batch"], 0)
    half = batch(max(1, config["batch"] // W), 1 + ctx.rank)
    ddp = {}
    for c in config["compress"]:
        model, opt = model_opt()
        if c == "before":  # the DDP settings before issue 17: static_graph alone
            ddp[c] = (ray.train.torch.prepare_model(
                model, parallel_strategy_kwargs={"static_graph": True}), opt)
        else:
            ddp[c] = (RayContext(out=".", compress=c).wrap_model(model), opt)
    rounds = []
    for r in range(config["repeats"]):
        row = {"round": r, "load1": os.getloadavg()[0]}
        dist.barrier()
        if ctx.rank == 0:
            torch.set_num_threads(2)
            row["1x2_step_s"] = steps(*alone, whole)
            torch.set_num_threads(1)
        dist.barrier()  # rank 1 waits here, idle
        for c, (model, opt) in ddp.items():
            row[f"2x1_{c}_step_s"] = steps(model, opt, half)
            row[f"ratio_{c}"] = row["1x2_step_s"] / row[f"2x1_{c}_step_s"] if ctx.rank == 0 else 0
        row["load1_end"] = os.getloadavg()[0]
        if ctx.rank == 0:
            print(json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
        rounds.append(row)
    out = {k: statistics.median(row[k] for row in rounds) for k in rounds[0] if k != "round"}
    out["load1_min"] = min(min(r["load1"], r["load1_end"]) for r in rounds)
    out["load1_max"] = max(max(r["load1"], r["load1_end"]) for r in rounds)
    if ctx.rank == 0:
        out["1x2_images_per_s"] = config["batch"] / out["1x2_step_s"]
        for c in config["compress"]:
            out[f"2x1_{c}_images_per_s"] = config["batch"] / out[f"2x1_{c}_step_s"]
    if W > 1 and config["store_images"]:
        n, s = config["store_images"], config["store_size"]
        store = EmaStore([(s, s)] * n)
        owners = [i % W for i in range(n)]
        g = torch.Generator().manual_seed(ctx.rank)
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
    ray.train.report({})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--encoder", default="resnet34")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compress", default="none,bf16,before",
                   help="the 2x1 runs, comma-separated: gradient precisions (none, fp16, "
                        "bf16) with the default DDP settings, 'before': DDP as before issue 17")
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
        res = os.path.join(storage, "result.json")
        cfg = {**vars(args), "compress": args.compress.split(","), "result": res}
        t = time.perf_counter()
        TorchTrainer(
            _bench_fn, train_loop_config=cfg,
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            torch_config=TorchConfig(backend="gloo"),
            run_config=RunConfig(name="bench", storage_path=storage)).fit()
        row = {**{k: round(v, 4) for k, v in json.load(open(res)).items()},
               "fit_s": round(time.perf_counter() - t, 1), "encoder": args.encoder,
               "crop": args.crop, "batch": args.batch, "steps": args.steps,
               "repeats": args.repeats}
        print(json.dumps({"median": row}), flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

"""EMA store layouts under torch.distributed (gloo, no Ray): bytes per worker and
seconds per ensemble-step synchronisation, replicated vs sharded (not a test).

    .venv/bin/python benchmarks/store_sync_bench.py [--workers 2] [--size 1024]
        [--images 16,64,256]

For each store of N float16 maps of SIZE x SIZE, every worker "predicts" (fills)
its share and the replicated layout all-gathers the shares
(:meth:`s2l_tools.training.distributed.TorchDistContext.sync_store`); the sharded layout
(:func:`s2l_tools.training.data.store_owners`) exchanges nothing. Prints one JSON line
per store: bytes held per worker in each layout and the median sync seconds
of 3, with the GB/s the all-gather reached (extrapolate with it to larger stores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def _worker(rank, world, rendezvous, sizes, size, out):
    import torch
    import torch.distributed as dist

    from s2l_tools.training.config import TrainConfig
    from s2l_tools.training.distributed import TorchDistContext
    from s2l_tools.training.ema import EmaStore
    from s2l_tools.training.data import store_owners

    torch.set_num_threads(1)
    # a file rendezvous: no port to find (the file must not exist yet; main() names it)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)
    try:
        ctx = TorchDistContext()
        for n in sizes:
            shapes = [(size, size)] * n
            owners = [i % world for i in range(n)]
            store = EmaStore(shapes)
            p = torch.rand(size, size)
            times = []
            for _ in range(4):
                for i, o in enumerate(owners):
                    if o == rank:
                        store.update(i, p)
                dist.barrier()
                t = time.perf_counter()
                ctx.sync_store(store, owners)
                times.append(time.perf_counter() - t)
            own = store_owners(TrainConfig(store="sharded"), shapes, world)
            shard = EmaStore(shapes, owned=[i for i, o in enumerate(own) if o == rank])
            if rank == 0:
                med = statistics.median(times[1:])
                moved = store.nbytes * (world - 1) / world  # what each rank receives
                out.put({"images": n, "size": size, "workers": world,
                         "replicated_bytes_per_worker": store.nbytes,
                         "sharded_bytes_per_worker": shard.nbytes,
                         "replicated_sync_s": med, "sharded_sync_s": 0.0,
                         "received_gb_s": moved / med / 1e9, "load": os.getloadavg()})
            del store, shard
    finally:
        dist.destroy_process_group()


def main() -> None:
    import torch.multiprocessing as mp

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--images", default="16,64,256")
    args = p.parse_args()
    sizes = [int(v) for v in args.images.split(",")]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        rendezvous = os.path.join(tmp, "rendezvous")
        procs = [ctx.Process(target=_worker,
                             args=(r, args.workers, rendezvous, sizes, args.size, q))
                 for r in range(args.workers)]
        for pr in procs:
            pr.start()
        for _ in sizes:
            print(json.dumps(q.get()), flush=True)
        for pr in procs:
            pr.join()


if __name__ == "__main__":
    main()

"""Two real gloo ranks on this machine, for the tests of what torch.distributed does.

:func:`run_ranks` spawns ``world`` processes; each joins a gloo group on a free local
port, runs ``work(rank, *args)`` and saves what it returns to ``out/rank<r>.pt``
(atomically: a file that is there is whole). Both ranks pass a barrier before either
tears the group down, and a rank that is done leaves with ``os._exit(0)``, skipping the
interpreter's teardown: gloo's threads have aborted it ("terminate called without an
active exception", SIGABRT) after everything was computed and saved (CI, 2026-12-04,
even with the barrier). Should a rank still die by a signal after every rank saved its
result, the run counts (what the tests check is in those files); one that dies before,
or raises, fails the test with its cause.
"""

from __future__ import annotations

import os
import socket
import sys
import warnings
from pathlib import Path

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def result_path(out, rank: int) -> Path:
    return Path(out) / f"rank{rank}.pt"


def _rank_main(rank, world, port, out, work, args):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = work(rank, *args)
        tmp = result_path(out, rank).with_suffix(".tmp")
        torch.save(result, tmp)
        os.replace(tmp, result_path(out, rank))
        dist.barrier()  # both ranks done before either tears gloo down
    except BaseException:
        dist.destroy_process_group()
        raise  # spawn reports it to the test, traceback and all
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(work, *args, out, world: int = 2) -> list:
    """Run ``work(rank, *args)`` in ``world`` gloo ranks; their results, by rank."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessExitedException

    try:
        mp.start_processes(_rank_main, args=(world, free_port(), str(out), work, args),
                           nprocs=world, join=True, start_method="spawn")
    except ProcessExitedException as e:
        saved = all(result_path(out, r).is_file() for r in range(world))
        if not (saved and e.signal_name):
            raise
        warnings.warn(f"a gloo rank died by {e.signal_name} after every rank had saved its "
                      "result (torch's teardown); the results are checked", stacklevel=2)
    return [torch.load(result_path(out, r), weights_only=False) for r in range(world)]

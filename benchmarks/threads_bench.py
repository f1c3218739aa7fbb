"""How a training process shares a busy CPU: torch thread counts under a competitor.

Issue 17, item 7: with another program busy on the same cores, an epoch took up
to 10x longer. This times the laptop preset's network step (resnet18, batch 8,
crop 128, forward + backward; the CRF term is ~0.03 s of it) in a fresh process
for each setting, alone and next to a competitor process that runs the same step
in a loop (what a second training, or a test suite, does to the machine), and
prints seconds per step (median of the repeats), all in one run:

- ``threads``: torch intra-op threads of the measured process (1 .. the CPUs);
- ``OMP_WAIT_POLICY=PASSIVE``: OpenMP's idle threads sleep instead of spinning.

Command (docs/benchmarks.md)::

    .venv/bin/python benchmarks/threads_bench.py --steps 6 --competitor-threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, statistics, sys, time, torch
threads, steps, loop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "loop"
torch.set_num_threads(threads)
torch.manual_seed(0)
from s2l_tools.training.model import build_model
model = build_model(encoder="resnet18", in_channels=1, classes=2).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.rand(8, 1, 128, 128)
def step():
    opt.zero_grad(set_to_none=True)
    model(x)[:, 1].mean().backward()
    opt.step()
step()
print("ready", flush=True)
if loop:
    while True:
        step()
times = []
for _ in range(steps):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps({"median": statistics.median(times), "times": times}), flush=True)
"""


def measure(threads: int, steps: int, env: dict) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(threads), str(steps), "once"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per setting")
    ap.add_argument("--competitor-threads", type=int, default=1,
                    help="torch threads of the competing process")
    args = ap.parse_args(argv)
    cpus = len(os.sched_getaffinity(0))
    base = dict(os.environ)
    settings = []
    for t in sorted({1, cpus}):
        settings.append((f"{t} thread(s)", t, base))
        settings.append((f"{t} thread(s), OMP_WAIT_POLICY=PASSIVE", t,
                         {**base, "OMP_WAIT_POLICY": "PASSIVE"}))
    results = {}
    print(f"{cpus} CPUs; load {os.getloadavg()[0]:.2f} at start", flush=True)
    for label, t, env in settings:
        results[(label, "alone")] = measure(t, args.steps, env)
        comp = subprocess.Popen([sys.executable, "-c", _CHILD, str(args.competitor_threads),
                                 "0", "loop"], stdout=subprocess.PIPE, text=True)
        try:
            comp.stdout.readline()  # "ready": the competitor is busy from here on
            results[(label, "busy")] = measure(t, args.steps, env)
        finally:
            comp.kill()
            comp.wait()
        alone, busy = results[(label, "alone")], results[(label, "busy")]
        print(f"  {label:40s} alone {alone:6.2f} s/step   next to a {args.competitor_threads}"
              f"-thread competitor {busy:6.2f} s/step ({busy / alone:4.1f}x)", flush=True)
    print(f"load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

"""Device choice, mixed precision (which dtype runs where, what bf16 changes), CPU threads."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from s2l_tools import device as dev
from s2l_tools.device import usable_cpus
from s2l_tools.errors import S2LError
from s2l_tools.training.model import build_model

CPU = torch.device("cpu")


def test_training_autocast_is_cuda_only():
    assert dev.autocast_dtype(True, CPU) is None
    assert dev.autocast_dtype("bf16", CPU) is None
    with pytest.raises(ValueError):
        dev.autocast_dtype("fp8", torch.device("cuda"))


@pytest.mark.parametrize("native", [True, False])
def test_cpu_inference_uses_bf16_only_where_native(monkeypatch, native):
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: native)
    want = torch.bfloat16 if native else None
    for amp in (True, "auto", "bf16", torch.bfloat16):
        assert dev.inference_dtype(amp, CPU) is want, amp
    for amp in (None, False, "off", "fp16", torch.float16):
        assert dev.inference_dtype(amp, CPU) is None, amp
    with pytest.raises(ValueError):
        dev.inference_dtype("int8", CPU)


def test_select_device_errors():
    assert dev.select_device("CPU").type == "cpu"
    with pytest.raises(S2LError, match="unknown device"):
        dev.select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(S2LError, match="--device cpu"):
            dev.select_device("cuda")


def test_bf16_probabilities_close_to_float32(monkeypatch):
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)  # emulated if not native
    model = build_model(encoder="resnet18", in_channels=1, classes=2, seed=0)
    g = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():  # BatchNorm statistics of its own activations, as after training
        model(torch.rand(2, 1, 96, 96, generator=g))
    x = np.random.default_rng(1).random((1, 1, 96, 128), dtype=np.float32)
    p32 = dev.torch_prob_fn(model, device=CPU, amp=None)(x)
    p16 = dev.torch_prob_fn(model, device=CPU, amp=True)(x)
    assert p16.dtype == np.float32 and p16.shape == p32.shape == (1, 2, 96, 128)
    np.testing.assert_allclose(p16.sum(1), 1.0, atol=1e-5)
    diff = np.abs(p16 - p32)
    assert 0 < diff.max() < 0.05 and diff.mean() < 5e-3


# ---------------------------------------------------------------- CPU threads
@pytest.fixture
def keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_fixed_threads_stay_fixed(keep_torch_threads):
    threads = dev.CpuThreads(1)
    assert torch.get_num_threads() == 1
    assert threads.update() is None and torch.get_num_threads() == 1


@pytest.mark.skipif(usable_cpus() < 2 or not os.path.exists("/proc/stat"),
                    reason="needs 2 CPUs and /proc/stat")
def test_threads_give_way_to_a_busy_program_and_come_back(keep_torch_threads, monkeypatch):
    threads = dev.CpuThreads()
    assert threads.count == usable_cpus() == torch.get_num_threads()
    # a real program busy on one CPU (a spinning Python) for a second
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        threads.others_busy()  # start measuring once it runs
        time.sleep(1.2)
        line = threads.update()
    finally:
        busy.kill()
        busy.wait()
    assert threads.count == torch.get_num_threads() <= usable_cpus() - 1
    assert line is not None and "other programs kept" in line and "--threads" in line
    # the program has gone: the threads come back
    monkeypatch.setattr(threads, "others_busy", lambda: 0.05)
    assert threads.update() is not None
    assert threads.count == torch.get_num_threads() == usable_cpus()


# ---------------------------------------------------------------- keep_freed_memory
_ALLOC_LOOP = """
import ctypes, resource, sys
from s2l_tools.device import keep_freed_memory
changed = keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # a 64 MB buffer written, freed and allocated again, as torch's are
    p = libc.malloc(64 << 20)
    ctypes.memset(p, 1, 64 << 20)
    libc.free(p)
print(changed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _alloc_loop(mode: str, **env) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"} | env
    out = subprocess.run([sys.executable, "-c", _ALLOC_LOOP, mode], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
                    reason="glibc's malloc only")
def test_freed_memory_is_reused_not_mapped_again():
    changed, kept = _alloc_loop("keep")
    _, default = _alloc_loop("default")
    assert changed == "True"
    # by default each 64 MB block is unmapped on free and faulted in page by page again
    assert default > 20 * 16_000
    assert kept < default / 4
    # a user's own malloc setting wins: nothing is changed
    changed, faults = _alloc_loop("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert changed == "False" and faults > 20 * 16_000


def test_keep_freed_memory_limit_checked():
    with pytest.raises(ValueError, match="2\\*\\*31"):
        dev.keep_freed_memory(2**31)

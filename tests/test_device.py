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

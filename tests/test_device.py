"""Device choice and mixed precision: which dtype runs where, and what bf16 changes."""

import numpy as np
import pytest
import torch

from s2l_tools import device as dev
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

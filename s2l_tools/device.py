"""Device choice, mixed precision, and a torch model as a numpy batch function.

Shared by training (the EMA ensemble, validation) and prediction, so both run
the network the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from s2l_tools.errors import S2LError

def select_device(name: str = "auto"):
    """The torch device to predict on.

    Parameters
    ----------
    name : {'auto', 'cpu', 'cuda', 'cuda:N'}
        ``'auto'``: the first CUDA GPU if one is usable, else the CPU.

    Returns
    -------
    device : torch.device

    Raises
    ------
    S2LError
        ``'cuda'`` asked for but no usable GPU, or an unknown name.
    """
    import torch

    name = str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            build = torch.version.cuda
            why = ("this torch is a CPU-only build" if build is None
                   else f"torch (CUDA {build}) finds no usable GPU or driver")
            raise S2LError(f"--device {name}: {why}; use --device cpu (or auto), or install "
                           "a CUDA build of torch on a machine with an NVIDIA GPU")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise S2LError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) "
                           f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); pick one of them")
        return device
    raise S2LError(f"--device {name}: unknown device; use auto, cpu or cuda")


def _requested(amp):
    """``amp`` as None (off), 'auto', torch.bfloat16 or torch.float16."""
    import torch

    if amp in (None, False, "off", "none"):
        return None
    if amp is True or amp == "auto":
        return "auto"
    if amp in ("bf16", "bfloat16", torch.bfloat16):
        return torch.bfloat16
    if amp in ("fp16", "float16", torch.float16):
        return torch.float16
    raise ValueError(f"amp must be None, True, 'auto', 'fp16' or 'bf16', got {amp!r}")


def autocast_dtype(amp, device):
    """The training autocast dtype for ``amp`` on ``device`` (None: full float32).

    Mixed-precision *training* is used on CUDA only; see :func:`inference_dtype`
    for forward passes without gradients.
    """
    import torch

    want = _requested(amp)
    if want is None or device.type != "cuda":
        return None
    if want == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return want


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX).

    Only then is bfloat16 autocast faster than float32 on the CPU (1.8x for a
    resnet34 U-Net forward on 2 Zen 4 cores); elsewhere it is emulated and slower.
    """
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private helpers: absent in some builds
        return False


def inference_dtype(amp, device):
    """The autocast dtype of a forward pass without gradients (None: float32).

    On CUDA as :func:`autocast_dtype`. On the CPU, ``amp`` True/'auto'/'bf16'
    gives bfloat16 where :func:`cpu_has_native_bf16`, else float32; float16 is
    never used on the CPU. Probabilities then differ from float32 by about 1e-2
    at most, which moves the EMA store and thresholded masks by a few pixels.
    """
    import torch

    if device.type == "cuda":
        return autocast_dtype(amp, device)
    if _requested(amp) in (None, torch.float16):
        return None
    return torch.bfloat16 if cpu_has_native_bf16() else None


def torch_prob_fn(model, *, device=None, amp=None) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a torch model as a numpy batch function for :func:`predict_tiled`.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(N, C, h, w)`` to logits ``(N, K, h, w)``. It is put in eval
        mode and moved to ``device`` in ``channels_last`` memory format
        (in place; this does not change its results).
    device : str or torch.device, optional
        Where to run; None: where the model's parameters are.
    amp : {None, True, 'auto', 'fp16', 'bf16'} or torch.dtype, optional
        Mixed precision (``torch.autocast``), as :func:`inference_dtype` says:
        on CUDA True/'auto' picks bf16 where supported, else fp16; on the CPU
        bf16 where the CPU has it natively, else float32. None: float32.

    Returns
    -------
    fn : callable
        ``fn(batch)`` maps a float32 ``(N, C, h, w)`` ndarray to float32
        ``(N, K, h, w)`` class probabilities (softmax over ``K``, computed in
        float32).
    """
    import torch

    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    dtype = inference_dtype(amp, device)
    model.eval()
    model.to(device=device, memory_format=torch.channels_last)

    def fn(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if dtype is None:
                logits = model(x)
            else:
                with torch.autocast(device_type=device.type, dtype=dtype):
                    logits = model(x)
            prob = torch.softmax(logits.float(), dim=1)
        return prob.contiguous().cpu().numpy()

    return fn

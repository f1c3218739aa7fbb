"""Device choice, mixed precision, CPU threads, and a torch model as a numpy batch function.

Shared by training (the EMA ensemble, validation) and prediction, so both run
the network the same way. :class:`CpuThreads` keeps a CPU training from fighting
other programs for the same cores.
"""

from __future__ import annotations

import math
import os
import time
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


# ---------------------------------------------------------------- CPU memory
#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the environment variables with which a user tunes glibc's malloc themself
_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
               "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Let glibc's malloc keep freed blocks of up to ``limit`` bytes for reuse.

    Every training step and every prediction frees and allocates the same large
    activation buffers. By default glibc hands blocks over its mmap threshold
    back to the operating system on ``free`` and maps fresh zeroed pages on the
    next ``malloc``: on a 2-core CPU that is ~1.5 million page faults for ten
    training steps and ten 512 x 640 predictions, 15-20 % of a prediction's
    time, and 6 % of ``s2l-train --preset laptop`` (docs/benchmarks.md, "The
    CPU's allocator"). Raising the mmap and trim
    thresholds to ``limit`` serves those blocks from the heap instead; the
    results are the same to the bit. The process then keeps up to ``limit``
    bytes it no longer uses until it exits.

    Process-wide, so called by the command-line tools and the Ray workers (each
    its own process), not by library functions. Does nothing where the C
    library is not glibc, or where the user set one of glibc's ``MALLOC_*``
    variables or ``GLIBC_TUNABLES`` (their choice wins).

    Parameters
    ----------
    limit : int
        The largest freed block kept, in bytes (at most 2**31 - 1).

    Returns
    -------
    changed : bool
        Whether the thresholds were set.
    """
    import ctypes

    if not 0 < limit < 2**31:
        raise ValueError(f"limit must be between 1 and 2**31 - 1 bytes, not {limit}")
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not glibc
        libc = ""
    if not libc.startswith("glibc") or any(name in os.environ for name in _MALLOC_ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) & bool(mallopt(_M_TRIM_THRESHOLD, limit))


# ---------------------------------------------------------------- CPU threads
def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _busy_ticks(cpus: set[int]) -> int | None:
    """Busy clock ticks of ``cpus`` since boot, from /proc/stat (None where there is none)."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        busy += sum(ticks) - ticks[3] - ticks[4]
    return busy


class CpuThreads:
    """Torch's CPU threads: a fixed number, or as many as other programs leave free.

    With ``threads=None`` the count starts at :func:`usable_cpus` and
    :meth:`update` (called between epochs) lowers it by the CPUs other programs
    kept busy since the last call, measured as all busy time of this process's
    CPUs (/proc/stat) minus this process's own. Threads that share a core with
    another busy program wait on each other at every parallel step: on 2 cores
    next to one other busy process, 2 threads trained at 1/5 of the speed of 1
    thread (docs/benchmarks.md, "Threads on a shared CPU").

    Parameters
    ----------
    threads : int, optional
        A fixed count (``s2l-train --threads``); None: follow the load.

    As a context manager, gives torch back its earlier count on exit.
    """

    #: other programs' CPUs at which a thread is given up: above background noise,
    #: below a program that was starved by our threads
    GIVE_UP_AT = 0.25

    def __init__(self, threads: int | None = None):
        import torch

        self.cpus = usable_cpus()
        self._before = torch.get_num_threads()
        self.fixed = threads is not None
        self.count = int(threads) if threads is not None else self.cpus
        torch.set_num_threads(self.count)
        self._mark = self._sample()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Give torch back the thread count it had before."""
        import torch

        torch.set_num_threads(self._before)

    def _sample(self):
        try:
            cpus = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            return None
        busy = _busy_ticks(cpus)
        if busy is None:
            return None
        return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), time.process_time()

    def others_busy(self) -> float | None:
        """CPUs other programs used since the last call (None: not measurable here)."""
        now, last = self._sample(), self._mark
        self._mark = now
        if now is None or last is None or now[0] - last[0] < 0.5:
            return None
        wall = now[0] - last[0]
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / wall)

    def update(self) -> str | None:
        """Set the thread count for what comes next; a line to print when it changed."""
        import torch

        others = self.others_busy()
        if self.fixed or others is None:
            return None
        count = max(1, self.cpus - math.floor(others + 1.0 - self.GIVE_UP_AT))
        if count == self.count:
            return None
        old, self.count = self.count, count
        torch.set_num_threads(count)
        return (f"torch threads {old} -> {count}: other programs kept {others:.1f} of "
                f"{self.cpus} CPUs busy (--threads N fixes the count)")

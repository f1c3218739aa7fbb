"""The EMA prediction store: one foreground-probability map per training image.

Scribble2Label averages the network's predictions of every (whole,
un-augmented) training image over time,

    y_0 = p_0,    y_n = alpha * p_n + (1 - alpha) * y_{n-1},

and pseudo-labels the unscribbled pixels where ``max(y, 1 - y) > tau``. The
paper sets ``y_0`` to the first prediction (the authors' code started from
zeros); this store does the same as the paper.

Storage
-------
All maps live in one flat 1-D tensor (full resolution, row-major, image after
image), so the store can be put in shared memory for DataLoader workers
(:meth:`EmaStore.share_memory`), packed for a collective (:meth:`as_flat`,
:meth:`from_flat`), hashed (:meth:`digest`) and saved in a checkpoint that
loads with ``torch.load(weights_only=True)`` (:meth:`state_dict`). Updates
are computed in float32 and written back in place.

``dtype`` and its rounding bias (default float16, 2 bytes/pixel):

- ``uint8`` (1 byte/pixel, value ``round(255 y)``): one rounding costs at most
  1/510, but rounding after EVERY update creates a dead zone: the stored value
  stops moving once ``alpha * |255 p - q| < 1/2``, i.e. it can stay stuck up to
  ``0.5 / (255 alpha)`` from the prediction it should converge to: 0.0098 for
  alpha = 0.2, 0.020 for alpha = 0.1. A pixel whose prediction rises from 0.78
  to 0.81 can then stay below tau = 0.8 for ever, and with tau = 0.95 on noisy
  data (alpha = 0.1) the bias is 0.4 of the margin ``1 - tau``. Not used by default.
- ``float16`` (2 bytes/pixel): spacing 2**-11 = 4.9e-4 on [0.5, 1) (finer
  below), dead zone ``0.5 * 2**-11 / alpha`` = 0.0012 (alpha 0.2) / 0.0024
  (alpha 0.1): negligible against tau. The default.
- ``float32`` (4 bytes/pixel): exact for practical purposes.

DSB2018's 670 training images hold about 10**8 pixels: ~200 MB in float16.

Shards
------
With ``owned`` a store keeps the maps of those images only (a distributed
worker's share, see :mod:`s2l_tools.training.distributed`); the others take no memory,
and reading or updating them is an error. Indices stay those of the whole
training set, and :meth:`state_dict` / :meth:`load_state_dict` move maps
between a shard and a whole store (or shards of another split).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from s2l_tools.errors import S2LError

__all__ = ["EmaStore", "forget_disagreement"]

_DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32}
_STATE_VERSION = 1


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = _DTYPES.get(dtype.removeprefix("torch."), None) or dtype
    if dtype not in _DTYPES.values():
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    return dtype


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class EmaStore:
    """Per-image exponential moving average of the foreground probability.

    Parameters
    ----------
    shapes : sequence of (H, W)
        Full-resolution size of each training image, in dataset order.
    alpha : float
        Weight of the new prediction (paper: 0.2; 0.1 on noisy data).
    dtype : {torch.float16, torch.uint8, torch.float32} or its name
        Storage type; see the module notes on the uint8 rounding bias.
    owned : sequence of int, optional
        Keep only these images' maps (a shard); default: all.

    Examples
    --------
    >>> store = EmaStore([(2, 3)], alpha=0.2, dtype="float32")
    >>> store.update(0, np.full((2, 3), 0.5))  # y_0 = p_0
    >>> store.update(0, np.full((2, 3), 1.0))
    >>> round(float(store.get(0)[0, 0]), 6)  # 0.2 * 1.0 + 0.8 * 0.5
    0.6
    """

    def __init__(
        self,
        shapes: Sequence[tuple[int, int]],
        *,
        alpha: float = 0.2,
        dtype: torch.dtype | str = torch.float16,
        owned: Sequence[int] | None = None,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.dtype = _as_dtype(dtype)
        self._shapes = []
        for s in shapes:
            h, w = (int(v) for v in s)
            if h < 1 or w < 1:
                raise ValueError(f"image shapes must be positive (H, W), got {tuple(s)}")
            self._shapes.append((h, w))
        n = len(self._shapes)
        self._owned = list(range(n)) if owned is None else sorted({int(i) for i in owned})
        if self._owned and not (0 <= self._owned[0] and self._owned[-1] < n):
            raise IndexError(f"owned image indices must be in 0..{n - 1}, got {self._owned}")
        self._offsets: dict[int, int] = {}
        start = 0
        for i in self._owned:
            self._offsets[i] = start
            start += self._shapes[i][0] * self._shapes[i][1]
        self._flat = torch.zeros(start, dtype=self.dtype)
        self._counts = torch.zeros(n, dtype=torch.int64)

    # ------------------------------------------------------------ inspection

    def __len__(self) -> int:
        return len(self._shapes)

    def __repr__(self) -> str:
        held = "" if not self.is_shard else f", holding {len(self._owned)}"
        return (
            f"EmaStore({len(self)} maps{held}, alpha={self.alpha}, dtype={_dtype_name(self.dtype)}, "
            f"{sum(self.initialized(i) for i in self._owned)} initialised, {self.nbytes} bytes)"
        )

    @property
    def owned(self) -> list[int]:
        """Indices of the maps this store holds (all, unless it is a shard)."""
        return list(self._owned)

    @property
    def is_shard(self) -> bool:
        """Whether the store holds only some of the images' maps."""
        return len(self._owned) != len(self._shapes)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(H, W) of each map."""
        return list(self._shapes)

    @property
    def n_updates(self) -> list[int]:
        """How many predictions each map has averaged (0 = not initialised)."""
        return self._counts.tolist()

    def set_n_updates(self, counts: Sequence[int] | torch.Tensor) -> None:
        """Set every map's update count, in place (shared memory stays shared).

        Use it after :meth:`from_flat`, which copies maps but not counts (e.g.
        the distributed all-gather takes each image's count from the rank that
        updated it).

        Parameters
        ----------
        counts : (N,) sequence of int or int tensor
            One non-negative count per image; 0 for the maps a shard does not hold.
        """
        t = torch.as_tensor(counts).detach().to("cpu")
        if t.shape != self._counts.shape:
            raise ValueError(f"counts must have shape ({len(self)},), got {tuple(t.shape)}")
        if t.is_floating_point() or t.is_complex() or bool((t < 0).any()):
            raise ValueError("counts must be non-negative integers")
        not_held = sorted(set(range(len(self))) - set(self._owned))
        if not_held and bool(t[not_held].any()):
            raise ValueError("counts of maps this shard does not hold must be 0")
        self._counts.copy_(t)

    def initialized(self, index: int) -> bool:
        """Whether image ``index`` has received its first prediction."""
        self._check_index(index)
        return bool(self._counts[index] > 0)

    @property
    def all_initialized(self) -> bool:
        """Whether every map held has received its first prediction."""
        return bool((self._counts[self._owned] > 0).all())

    @property
    def bytes_per_pixel(self) -> int:
        return self._flat.element_size()

    @property
    def nbytes(self) -> int:
        """Bytes held by the maps and the update counts."""
        return self._flat.numel() * self._flat.element_size() + self._counts.numel() * 8

    # ------------------------------------------------------------ update / read

    def update(self, index: int, prob: np.ndarray | torch.Tensor) -> None:
        """Average a new prediction into map ``index``.

        Parameters
        ----------
        index : int
        prob : (H, W) float ndarray or tensor (any device)
            Foreground probability of the whole image, in [0, 1].

        Notes
        -----
        The first update sets ``y_0 = prob``; later ones
        ``y_n = alpha * prob + (1 - alpha) * y_{n-1}`` (in float32, then stored).
        """
        self._check_index(index)
        p = torch.as_tensor(prob).detach().to("cpu", torch.float32)
        if tuple(p.shape) != self._shapes[index]:
            raise ValueError(
                f"prediction for image {index} has shape {tuple(p.shape)}, expected {self._shapes[index]}"
            )
        if not bool(torch.isfinite(p).all()):
            raise ValueError(f"prediction for image {index} is not finite (NaN or inf)")
        p = p.clamp(0.0, 1.0)
        view = self._view(index)
        y = p if self._counts[index] == 0 else self.alpha * p + (1.0 - self.alpha) * self._decode(view)
        view.copy_(self._encode(y))
        self._counts[index] += 1

    def get(self, index: int) -> np.ndarray:
        """Map ``index`` as a new ``(H, W)`` float32 array (zeros if not initialised)."""
        self._check_index(index)
        return self._decode(self._view(index)).numpy()

    # ------------------------------------------------------------ persistence

    def state_dict(self) -> dict:
        """Plain tensors, ints, floats and strings (``torch.load(weights_only=True)``-safe).

        Keys: ``version``, ``alpha``, ``dtype`` (name), ``shapes`` (N, 2) int64,
        ``n_updates`` (N,) int64, ``maps`` (1-D, storage dtype, a copy of the
        maps held) and, for a shard, ``owned`` (int64 indices of those maps).
        """
        state = {
            "version": _STATE_VERSION,
            "alpha": self.alpha,
            "dtype": _dtype_name(self.dtype),
            "shapes": torch.tensor(self._shapes, dtype=torch.int64).reshape(-1, 2),
            "n_updates": self._counts.clone(),
            "maps": self._flat.clone(),
        }
        if self.is_shard:
            state["owned"] = torch.tensor(self._owned, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict) -> list[int]:
        """Restore maps and counts from :meth:`state_dict`, in place.

        The images must be the same (same number and shapes, in order). Maps
        saved with another dtype are converted; ``alpha`` stays this store's.
        Of a shard's state (or into a shard) only the maps both hold are
        copied; the others are left alone.

        Returns
        -------
        loaded : list of int
            Indices of the maps copied.
        """
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise S2LError(
                "checkpoint: EMA store state of an unknown format; "
                "resume from a checkpoint written by this version of s2l-tools"
            )
        shapes = [tuple(int(v) for v in s) for s in state["shapes"].tolist()]
        if shapes != self._shapes:
            diff = next((i for i, (a, b) in enumerate(zip(shapes, self._shapes)) if a != b), None)
            detail = (
                f"{len(shapes)} images in the checkpoint, {len(self._shapes)} now"
                if len(shapes) != len(self._shapes)
                else f"image {diff} is {shapes[diff]} in the checkpoint, {self._shapes[diff]} now"
            )
            raise S2LError(
                f"checkpoint: the EMA store was built for other training images ({detail}); "
                "resume with the same training set, or start a new run"
            )
        maps = state["maps"]
        saved = _as_dtype(state["dtype"])
        theirs = (state["owned"].tolist() if "owned" in state else list(range(len(shapes))))
        need = sum(shapes[i][0] * shapes[i][1] for i in theirs)
        if maps.ndim != 1 or maps.numel() != need or maps.dtype != saved:
            raise S2LError("checkpoint: the EMA store's maps are corrupt; start a new run")
        if saved != self.dtype:
            maps = self._encode(self._decode(maps, dtype=saved))
        if theirs == self._owned:
            self._flat.copy_(maps)
            self._counts.copy_(state["n_updates"])
            return list(theirs)
        loaded, start = [], 0
        for i in theirs:
            h, w = shapes[i]
            if i in self._offsets:
                self._view(i).copy_(maps[start : start + h * w].view(h, w))
                self._counts[i] = state["n_updates"][i]
                loaded.append(i)
            start += h * w
        return loaded

    def digest(self) -> str:
        """SHA-256 (hex) of the dtype, shapes, update counts and maps.

        Equal for equal stores; compare across distributed workers.
        """
        h = hashlib.sha256()
        h.update(_dtype_name(self.dtype).encode())
        h.update(np.asarray(self._shapes, dtype=np.int64).tobytes())
        if self.is_shard:
            h.update(np.asarray(self._owned, dtype=np.int64).tobytes())
        h.update(self._counts.numpy().tobytes())
        h.update(self._flat.numpy().view(np.uint8).data)
        return h.hexdigest()

    def as_flat(self, indices: Sequence[int] | None = None) -> torch.Tensor:
        """Maps packed into one new 1-D tensor of the storage dtype.

        Parameters
        ----------
        indices : sequence of int, optional
            Only these maps, concatenated in this order (default: all held, in order).
        """
        if indices is None:
            return self._flat.clone()
        return torch.cat([self._view(i).reshape(-1) for i in self._checked(indices)])

    def from_flat(self, flat: torch.Tensor, indices: Sequence[int] | None = None) -> None:
        """Overwrite maps, in place, from a tensor packed by :meth:`as_flat`.

        The update counts are not changed: use it to copy maps between stores
        whose counts agree (e.g. every worker updated the same images), and
        :meth:`load_state_dict` for a complete copy.
        """
        flat = torch.as_tensor(flat).detach().to("cpu").reshape(-1)
        if flat.dtype != self.dtype:
            raise ValueError(f"flat tensor has dtype {flat.dtype}, the store {self.dtype}")
        if indices is None:
            if flat.numel() != self._flat.numel():
                raise ValueError(f"flat tensor has {flat.numel()} values, the store {self._flat.numel()}")
            self._flat.copy_(flat)
            return
        indices = self._checked(indices)
        need = sum(h * w for h, w in (self._shapes[i] for i in indices))
        if flat.numel() != need:
            raise ValueError(f"flat tensor has {flat.numel()} values, those maps {need}")
        start = 0
        for i in indices:
            view = self._view(i).reshape(-1)
            view.copy_(flat[start : start + view.numel()])
            start += view.numel()

    def share_memory(self) -> EmaStore:
        """Move the maps and counts to shared memory, so that DataLoader workers
        (forked or spawned after this call) see later updates. Returns self."""
        self._flat.share_memory_()
        self._counts.share_memory_()
        return self

    # ------------------------------------------------------------ helpers

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self._shapes):
            raise IndexError(f"image index {index} out of range 0..{len(self._shapes) - 1}")

    def _checked(self, indices: Sequence[int]) -> list[int]:
        out = [int(i) for i in indices]
        for i in out:
            self._check_index(i)
        return out

    def _view(self, index: int) -> torch.Tensor:
        start = self._offsets.get(index)
        if start is None:
            raise IndexError(f"image {index}'s map is not held by this shard "
                             f"(it holds {len(self._owned)} of {len(self._shapes)})")
        h, w = self._shapes[index]
        return self._flat[start : start + h * w].view(h, w)

    def _decode(self, values: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        if (dtype or self.dtype) == torch.uint8:
            return values.float() / 255.0
        return values.float()

    def _encode(self, y: torch.Tensor) -> torch.Tensor:
        if self.dtype == torch.uint8:
            return (y * 255.0).round().clamp(0, 255).to(torch.uint8)
        return y.to(self.dtype)


def forget_disagreement(y: np.ndarray, scribble: np.ndarray, *, radius: int = 8
                        ) -> tuple[np.ndarray, int]:
    """Reset an EMA map to 0.5 (no pseudo-label) where scribbles contradict it.

    Used when a run continues on new strokes (``s2l-train --from``): a stroke
    on a missed cell, or across a false detection, says the map is wrong
    there, and the pseudo-labels drawn from it would fight the stroke.

    Parameters
    ----------
    y : (H, W) float ndarray
        The map (foreground probability).
    scribble : (H, W) uint8 ndarray
        0 unlabeled, 1 background, 2 foreground.
    radius : int
        Pixels around a contradicting stroke pixel that are reset too.

    Returns
    -------
    y : (H, W) float32 ndarray
        A copy, 0.5 on the reset pixels: the stroke pixels that contradict the
        map and ``radius`` around them, and every connected foreground region
        of the map that a background stroke crosses.
    n : int
        Pixels reset.
    """
    from scipy import ndimage as ndi

    from s2l_tools import labels as L

    y = np.asarray(y, dtype=np.float32)
    fg = y >= 0.5
    fg_wrong = (scribble == L.FOREGROUND) & ~fg
    bg_wrong = (scribble == L.BACKGROUND) & fg
    wrong = fg_wrong | bg_wrong
    if not wrong.any():
        return y.copy(), 0
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    region = ndi.binary_dilation(wrong, structure=yy ** 2 + xx ** 2 <= radius ** 2)
    if bg_wrong.any():
        comps, _ = ndi.label(fg)
        hit = np.unique(comps[bg_wrong])
        region |= np.isin(comps, hit[hit > 0])
    out = y.copy()
    out[region] = 0.5
    return out, int(region.sum())

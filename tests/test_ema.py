from __future__ import annotations

import numpy as np
import pytest
import torch

from s2l_tools.training.ema import EmaStore
from s2l_tools.errors import S2LError

SHAPES = [(4, 5), (3, 7), (6, 2)]


def _probs(seed: int, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.random(s).astype(np.float32) for s in shapes]


def _filled(dtype="float16", seed=0, alpha=0.2):
    store = EmaStore(SHAPES, alpha=alpha, dtype=dtype)
    for rep in range(2):
        for i, p in enumerate(_probs(seed + rep)):
            store.update(i, p)
    return store


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_update_math(dtype):
    store = EmaStore(SHAPES, alpha=0.2, dtype=dtype)
    p1, p2, p3 = (_probs(s)[1] for s in (1, 2, 3))
    assert not store.initialized(1) and store.n_updates == [0, 0, 0]
    store.update(1, p1)  # y_0 = the first prediction (not an average with zeros)
    tol = {"float32": 1e-6, "float16": 5e-4, "uint8": 1 / 510 + 1e-6}[dtype]
    np.testing.assert_allclose(store.get(1), p1, atol=tol)
    store.update(1, torch.from_numpy(p2))
    y1 = 0.2 * p2 + 0.8 * store_value(p1, dtype)
    np.testing.assert_allclose(store.get(1), y1, atol=tol)
    store.update(1, p3)
    np.testing.assert_allclose(store.get(1), 0.2 * p3 + 0.8 * store_value(y1, dtype), atol=tol)
    assert store.n_updates == [0, 3, 0]
    assert store.initialized(1) and not store.initialized(0) and not store.all_initialized
    assert store.get(1).dtype == np.float32 and store.get(0).shape == (4, 5)


def store_value(y, dtype):
    """What the store keeps of y."""
    if dtype == "uint8":
        return np.round(y * 255) / 255
    return y.astype(dtype).astype(np.float32)


def test_two_updates_by_hand():
    store = EmaStore([(1, 2)], alpha=0.2, dtype="float32")
    store.update(0, np.array([[0.5, 1.0]]))
    store.update(0, np.array([[1.0, 0.0]]))
    np.testing.assert_allclose(store.get(0), [[0.2 * 1.0 + 0.8 * 0.5, 0.2 * 0.0 + 0.8 * 1.0]], rtol=1e-6)
    assert store.all_initialized


def test_dtype_and_nbytes():
    n_px = sum(h * w for h, w in SHAPES)
    for dtype, bpp in [("uint8", 1), ("float16", 2), ("float32", 4)]:
        store = EmaStore(SHAPES, dtype=dtype)
        assert store.bytes_per_pixel == bpp
        assert store.nbytes == n_px * bpp + 8 * len(SHAPES)
    assert EmaStore(SHAPES).dtype == torch.float16  # the default
    with pytest.raises(ValueError, match="dtype"):
        EmaStore(SHAPES, dtype="int32")


def test_uint8_rounding_bias_vs_float16():
    """The dead zone the module notes describe: uint8 gets stuck, float16 does not."""
    errors = {}
    for dtype in ("uint8", "float16"):
        store = EmaStore([(1, 1)], alpha=0.2, dtype=dtype)
        store.update(0, np.array([[0.5]]))
        for _ in range(100):
            store.update(0, np.array([[0.9]]))
        errors[dtype] = abs(float(store.get(0)[0, 0]) - 0.9)
    assert errors["float16"] < 0.5 * 2**-11 / 0.2 + 1e-6
    assert 0.004 < errors["uint8"] <= 0.5 / (255 * 0.2) + 1 / 510


def test_update_checks():
    store = EmaStore(SHAPES)
    with pytest.raises(ValueError, match="shape"):
        store.update(0, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="finite"):
        store.update(0, np.full((4, 5), np.nan))
    with pytest.raises(IndexError):
        store.update(3, np.zeros((6, 2)))
    assert store.n_updates == [0, 0, 0]


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_state_round_trip_weights_only(tmp_path, dtype):
    store = _filled(dtype)
    store.update(0, _probs(9)[0])
    path = tmp_path / "ckpt.pt"
    torch.save({"ema": store.state_dict(), "epoch": 4}, path)
    state = torch.load(path, weights_only=True)["ema"]
    other = EmaStore(SHAPES, alpha=0.2, dtype=dtype)
    other.load_state_dict(state)
    assert other.n_updates == [3, 2, 2]
    assert other.digest() == store.digest()
    for i in range(len(SHAPES)):
        np.testing.assert_array_equal(other.get(i), store.get(i))


def test_load_converts_dtype():
    store = _filled("float32")
    other = EmaStore(SHAPES, dtype="float16")
    other.load_state_dict(store.state_dict())
    np.testing.assert_allclose(other.get(2), store.get(2), atol=5e-4)
    assert other.n_updates == store.n_updates


def test_load_other_images_is_a_user_error():
    state = _filled().state_dict()
    with pytest.raises(S2LError, match=r"image 1 is \(3, 7\) in the checkpoint, \(7, 3\) now"):
        EmaStore([(4, 5), (7, 3), (6, 2)]).load_state_dict(state)
    with pytest.raises(S2LError, match="3 images in the checkpoint, 2 now"):
        EmaStore(SHAPES[:2]).load_state_dict(state)


def test_digest():
    a, b = _filled(seed=0), _filled(seed=0)
    assert a.digest() == b.digest() and len(a.digest()) == 64
    c = _filled(seed=5)
    assert c.digest() != a.digest()
    b.update(2, b.get(2))  # same values, one more update counted
    assert b.digest() != a.digest()
    assert EmaStore(SHAPES).digest() != EmaStore(SHAPES, dtype="uint8").digest()


def test_flat_round_trip():
    a = _filled(seed=0)
    flat = a.as_flat()
    assert flat.ndim == 1 and flat.dtype == torch.float16
    assert flat.numel() == sum(h * w for h, w in SHAPES)
    b = _filled(seed=7)
    b.from_flat(flat)
    assert b.digest() == a.digest()  # same counts, so everything equal
    flat[:] = 0  # a copy, not a view
    assert a.get(0).any()
    # a subset, in a given order
    c = _filled(seed=3)
    part = a.as_flat([2, 0])
    assert part.numel() == 6 * 2 + 4 * 5
    c.from_flat(part, [2, 0])
    np.testing.assert_array_equal(c.get(2), a.get(2))
    np.testing.assert_array_equal(c.get(0), a.get(0))
    assert not np.array_equal(c.get(1), a.get(1))
    with pytest.raises(ValueError, match="values"):
        c.from_flat(part, [1])
    with pytest.raises(ValueError, match="dtype"):
        c.from_flat(part.float(), [2, 0])


def test_share_memory_keeps_updates_visible():
    store = EmaStore(SHAPES).share_memory()
    alias = store._flat  # what a forked worker would hold
    store.update(0, np.ones((4, 5)))
    assert alias.is_shared() and float(alias[0]) == 1.0


def test_shard_holds_only_its_maps_and_moves_to_and_from_whole_stores(tmp_path):
    whole = _filled()
    shard = EmaStore(SHAPES, alpha=0.2, owned=[2, 0])
    assert shard.owned == [0, 2] and shard.is_shard and not whole.is_shard
    assert shard.nbytes == (4 * 5 + 6 * 2) * 2 + 3 * 8  # held maps + every count
    with pytest.raises(IndexError, match="not held by this shard"):
        shard.get(1)
    with pytest.raises(IndexError, match="not held"):
        shard.update(1, _probs(0)[1])
    assert not shard.all_initialized
    # whole -> shard: the held maps and their counts only
    assert shard.load_state_dict(whole.state_dict()) == [0, 2]
    assert shard.all_initialized  # every map it holds
    for i in (0, 2):
        np.testing.assert_array_equal(shard.get(i), whole.get(i))
    assert shard.n_updates == [2, 0, 2]
    # shards -> a whole store, through a weights_only file
    other = EmaStore(SHAPES, alpha=0.2, owned=[1])
    other.load_state_dict(whole.state_dict())
    torch.save(shard.state_dict(), tmp_path / "s0.pt")
    back = EmaStore(SHAPES, alpha=0.2)
    loaded = back.load_state_dict(torch.load(tmp_path / "s0.pt", weights_only=True))
    loaded += back.load_state_dict(other.state_dict())
    assert sorted(loaded) == [0, 1, 2] and back.digest() == whole.digest()
    assert shard.digest() != EmaStore(SHAPES, owned=[0, 2]).digest()
    with pytest.raises(IndexError):
        EmaStore(SHAPES, owned=[3])


def test_set_n_updates_after_from_flat():
    a = _filled(seed=0)
    b = EmaStore(SHAPES, alpha=0.2).share_memory()
    alias = b._counts  # what a forked worker would hold
    b.from_flat(a.as_flat())
    assert b.n_updates == [0, 0, 0] and b.digest() != a.digest()  # maps only
    b.set_n_updates(torch.tensor(a.n_updates))
    assert b.n_updates == [2, 2, 2] and b.digest() == a.digest() and alias.tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="shape"):
        b.set_n_updates([1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        b.set_n_updates([1, -1, 0])
    shard = EmaStore(SHAPES, owned=[1])
    shard.set_n_updates([0, 4, 0])
    assert shard.n_updates == [0, 4, 0] and shard.all_initialized
    with pytest.raises(ValueError, match="does not hold"):
        shard.set_n_updates([1, 4, 0])

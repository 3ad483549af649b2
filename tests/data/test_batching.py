"""The padded batcher and the sharding helpers (vitjax.data.batching)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from vitjax.data.batching import (
    local_mesh,
    padded_batches,
    process_items,
    replicate,
    round_batch_size,
    shard_batch,
)

REPO = Path(__file__).resolve().parents[2]
SHAPE = (2, 3, 3)


def load_value(i):
    """Item i -> an array full of i, with extra ``("x", i)``; items that are multiples of 5 fail."""
    if i % 5 == 0:
        raise ValueError(f"item {i}: cannot read image (corrupt)\nsecond line")
    return np.full(SHAPE, i, np.float32), ("x", i)


def test_batches_are_fixed_size_in_order_with_failures():
    items = list(range(1, 12))  # 11 items, batch 4 -> 4 + 4 + 3; 5 and 10 fail
    batches = list(padded_batches(items, load_value, 4, shape=SHAPE, workers=3))
    assert [b.index for b in batches] == [0, 1, 2]
    assert [b.start for b in batches] == [0, 4, 8]
    for b in batches:
        assert b.images.shape == (4,) + SHAPE and b.images.dtype == np.float32
        assert b.valid.shape == (4,)
    assert [b.items for b in batches] == [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11)]
    assert batches[0].valid.tolist() == [True] * 4
    assert batches[1].valid.tolist() == [False, True, True, True]
    assert batches[2].valid.tolist() == [True, False, True, False]  # failed item, then padding
    assert [b.failed for b in batches] == [(), ((5, "item 5: cannot read image (corrupt) second line"),),
                                           ((10, "item 10: cannot read image (corrupt) second line"),)]
    for b in batches:
        for row, item, extra in b.loaded():
            np.testing.assert_array_equal(b.images[row], np.full(SHAPE, item, np.float32))
            assert extra == ("x", item)
        assert not b.images[~b.valid].any()  # invalid rows are zeros
    assert batches[2].rows.tolist() == [0, 2] and batches[2].count == 2
    assert batches[1].extras == (None, ("x", 6), ("x", 7), ("x", 8))


def test_plain_array_load_and_all_failed_batch():
    def load(i):
        if i < 2:
            raise ValueError("bad")
        return np.ones(SHAPE)  # float64 is cast to float32; no extra

    batches = list(padded_batches(range(4), load, 2, shape=SHAPE, prefetch=0))
    assert batches[0].count == 0 and len(batches[0].failed) == 2  # still yielded
    assert batches[1].count == 2 and batches[1].extras == (None, None)
    assert batches[1].images.dtype == np.float32 and batches[1].images.sum() == 2 * np.prod(SHAPE)


def test_empty_items_yield_nothing():
    assert list(padded_batches([], load_value, 3, shape=SHAPE)) == []


def test_loads_run_ahead_in_background_threads():
    """While the consumer holds batch 0, the items of batch 1 are loaded by other threads."""
    started = {i: threading.Event() for i in range(6)}
    threads = set()

    def load(i):
        threads.add(threading.get_ident())
        started[i].set()
        return np.zeros(SHAPE)

    gen = padded_batches(range(6), load, 2, shape=SHAPE, prefetch=1, workers=2)
    first = next(gen)
    assert first.index == 0
    # batch 1 (items 2, 3) is prefetched without the consumer asking for it
    assert started[2].wait(10) and started[3].wait(10)
    assert threading.get_ident() not in threads
    gen.close()


def test_prefetch_is_bounded():
    """With prefetch=0 nothing beyond the current batch is submitted."""
    calls = []
    gen = padded_batches(range(8), lambda i: calls.append(i) or np.zeros(SHAPE), 2, shape=SHAPE, prefetch=0)
    next(gen)
    assert sorted(calls) == [0, 1]
    gen.close()


def test_errors():
    with pytest.raises(ValueError, match="batch_size"):
        list(padded_batches([1], load_value, 0, shape=SHAPE))
    with pytest.raises(ValueError, match="prefetch"):
        list(padded_batches([1], load_value, 1, shape=SHAPE, prefetch=-1))
    with pytest.raises(ValueError, match=r"^7: load returned shape \(3,\)"):
        list(padded_batches([7], lambda i: np.zeros(3), 1, shape=SHAPE))

    def boom(i):
        raise KeyError("a bug, not an unreadable image")

    with pytest.raises(KeyError):
        list(padded_batches([1, 2], boom, 2, shape=SHAPE))


def test_user_executor_is_used_and_left_open():
    with cf.ThreadPoolExecutor(1) as pool:
        out = list(padded_batches([1, 2, 3], load_value, 2, shape=SHAPE, executor=pool))
        assert [b.count for b in out] == [2, 1]
        assert pool.submit(lambda: 42).result() == 42  # not shut down by the batcher


def test_process_items_partition():
    items = list(range(11))
    shares = [process_items(items, i, 3) for i in range(3)]
    assert sorted(sum(shares, [])) == items
    assert [len(s) for s in shares] == [4, 4, 3]
    assert process_items(items) == items  # one process by default
    with pytest.raises(ValueError, match="index"):
        process_items(items, 3, 3)
    with pytest.raises(ValueError, match="count"):
        process_items(items, 0, 0)


def test_single_device_sharding():
    import jax
    import jax.numpy as jnp

    mesh = local_mesh()
    assert mesh.axis_names == ("batch",)
    n = len(jax.local_devices())
    assert round_batch_size(5, mesh) == -(-5 // n) * n and round_batch_size(5, 1) == 5
    assert round_batch_size(5, 4) == 8 and round_batch_size(8, 4) == 8
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    y = shard_batch({"x": x}, mesh)["x"]
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda a, p: a * p)(y, replicate(jnp.float32(2), mesh))),
                                  2 * x)
    with pytest.raises(ValueError, match="batch axis"):
        shard_batch(np.float32(1), mesh)


MULTI = textwrap.dedent(
    """
    import jax, numpy as np
    from vitjax.data.batching import local_mesh, round_batch_size, shard_batch, replicate
    mesh = local_mesh()
    assert mesh.devices.size == 4, mesh
    assert round_batch_size(6, mesh) == 8
    x = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    y = shard_batch(x, mesh)
    assert len(y.addressable_shards) == 4
    assert sorted(tuple(s.data.shape) for s in y.addressable_shards) == [(2, 3)] * 4
    w = replicate(np.float32(3), mesh)
    z = jax.jit(lambda a, b: a * b)(y, w)
    assert len(z.sharding.device_set) == 4
    np.testing.assert_array_equal(np.asarray(z), 3 * x)
    try:
        shard_batch(x[:6], mesh)
    except ValueError as e:
        assert "round_batch_size" in str(e)
    else:
        raise AssertionError("6 rows over 4 devices must fail")
    print("ok")
    """
)


def test_four_devices_in_subprocess():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", MULTI], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"

import gc

import numpy as np
import pytest

import theus

MiB = 1 << 20


@pytest.fixture
def arena():
    a = theus.Arena(budget=64 * MiB, single_limit=8 * MiB)
    yield a
    a.close()


def test_write_read_view_free(arena):
    h = arena.write(b"large_payload")
    assert isinstance(h, int) and h != 0
    assert arena.read(h) == b"large_payload"
    v = arena.view(h)
    assert v.dtype == np.uint8 and bytes(v) == b"large_payload"
    assert not v.flags.writeable
    with pytest.raises(ValueError):
        v[0] = 1
    mv = arena.memoryview(h)
    assert mv.readonly and mv.tobytes() == b"large_payload"
    del v, mv
    arena.free(h)
    assert arena.stats()["active_handles"] == 0


def test_view_is_zero_copy(arena):
    src = np.arange(1000, dtype=np.float64)
    h = arena.write(src)
    a, b = arena.view(h, np.float64), arena.view(h, np.float64)
    assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    np.testing.assert_array_equal(a, src)
    buf = bytearray(8000)
    assert arena.read_into(h, buf) == 8000 and bytes(buf) == src.tobytes()
    with pytest.raises(theus.TruncatedError):
        arena.read_into(h, bytearray(10))


def test_stale_handles_raise(arena):
    h = arena.write(b"x" * 100)
    arena.free(h)
    for op in (arena.read, arena.view, arena.free):
        with pytest.raises(theus.StaleHandleError) as ei:
            op(h)
        assert ei.value.message  # the arena's own message
    h2 = arena.write(b"y")
    arena.reset()
    with pytest.raises(theus.StaleHandleError):
        arena.read(h2)
    with pytest.raises(theus.ZeroHandleError):
        arena.read(0)
    with pytest.raises(theus.HandleError):
        arena.read((12345 << 32) | 1)


def test_views_block_free_and_reset(arena):
    h = arena.write(b"abc")
    v = arena.view(h)[1:]  # a derived view keeps the root alive too
    with pytest.raises(theus.BusyError, match="numpy view"):
        arena.free(h)
    with pytest.raises(theus.BusyError):
        arena.reset()
    assert bytes(v) == b"bc"
    del v
    gc.collect()
    arena.free(h)


def test_buffer_context_manager_frees_on_every_path(arena):
    with arena.buffer(b"temporary_image_data") as h:
        assert arena.read(h) == b"temporary_image_data"
        assert arena.stats()["active_handles"] == 1
    assert arena.stats()["active_handles"] == 0
    with pytest.raises(RuntimeError):
        with arena.buffer(b"x") as h:
            raise RuntimeError("boom")
    assert arena.stats()["active_handles"] == 0
    with pytest.raises(theus.StaleHandleError):
        arena.read(h)


def test_stats_and_list_live(arena):
    s0 = arena.stats()
    assert tuple(s0) == theus.STAT_NAMES and len(s0) == 8
    h1 = arena.write(b"a" * 10)
    h2 = arena.write(b"b" * 5000)
    assert sorted(arena.list_live()) == sorted([(h1, 10), (h2, 5000)])
    s = arena.stats()
    assert s["active_handles"] == 2 and s["alloc_count"] == s0["alloc_count"] + 2
    assert s["bytes_live"] >= 5010 and s["peak_bytes"] >= s["bytes_live"]
    arena.free(h1)
    assert arena.stats()["free_count"] == s0["free_count"] + 1
    arena.reset()
    assert arena.list_live() == [] and arena.stats()["bytes_live"] == 0


def test_budgets(arena):
    with pytest.raises(theus.AllocationTooLargeError) as ei:
        arena.write(np.zeros(9 * MiB, dtype=np.uint8))
    assert isinstance(ei.value, theus.BudgetError) and "single" in ei.value.message
    hs = [arena.alloc(8 * MiB)[0] for _ in range(8)]  # exactly the 64 MiB budget
    with pytest.raises(theus.BudgetError) as ei:
        arena.alloc(8 * MiB)
    assert ei.value.code == -8
    s = arena.stats()
    assert s["hard_limit_hits"] == 2 and s["errors"] >= 2 and s["soft_limit_hits"] >= 1
    del hs


def test_typed_alloc(arena):
    h, arr = arena.alloc((3, 4), np.int32)
    assert arr.flags.writeable and arr.shape == (3, 4) and not arr.any()
    arr[:] = np.arange(12).reshape(3, 4)
    v = arena.view(h)
    assert v.dtype == np.int32 and v.shape == (3, 4) and int(v.sum()) == 66
    with pytest.raises(theus.InvalidArgumentError, match="not supported"):
        arena.alloc(3, np.complex64)
    with pytest.raises(theus.InvalidArgumentError):
        arena.view(h, np.float64, (100,))


def test_close_with_live_views_keeps_memory():
    a = theus.Arena()
    h = a.write(b"still here")
    v = a.view(h)
    a.close()
    assert a.closed
    with pytest.raises(theus.ClosedError):
        a.write(b"x")
    assert bytes(v) == b"still here"  # the mapping lives as long as the view

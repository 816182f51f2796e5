"""Live regions: one writer, tear-free readers into preallocated buffers."""
import threading
import tracemalloc

import numpy as np
import pytest

import theus


def test_write_publish_read(engine):
    w = engine.live("frame", 4096)
    assert w.size == 4096 and w.epoch == 0
    r = w.reader()
    dest = np.empty(1024, dtype=np.float32)
    assert r.read_at(0, dest) == 0 and not dest.any()
    w.write(0, np.arange(1024, dtype=np.float32))
    assert r.read_at(0, dest) == 0 and not dest.any()  # not published yet
    assert w.publish() == 1
    assert r.read_at(0, dest) == 1
    np.testing.assert_array_equal(dest, np.arange(1024, dtype=np.float32))
    part = np.empty(4, dtype=np.uint8)
    w.write(100, b"\x01\x02\x03\x04")
    w.publish()
    assert r.read_at(100, part) == 2 and part.tolist() == [1, 2, 3, 4]
    with pytest.raises(theus.InvalidArgumentError):
        r.read_at(4094, part)
    with pytest.raises(theus.InvalidArgumentError):
        w.write(4095, b"xy")
    assert r.stats()["reads"] >= 3


def test_read_at_allocates_nothing_per_call(engine):
    w = engine.live("frame", 1 << 16)
    w.write(0, np.full(1 << 14, 7, dtype=np.float32))
    w.publish()
    r = w.reader()
    dest = np.empty(1 << 14, dtype=np.float32)
    r.read_at(0, dest)  # first call resolves and caches the destination
    tracemalloc.start()
    try:
        r.read_at(0, dest)
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(20000):
            r.read_at(0, dest)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1024, f"read_at leaked {after - before} bytes over 20000 calls"
    assert peak - before < 4096, f"read_at allocated {peak - before} bytes at peak"
    assert dest[0] == 7.0


def test_wait_epoch_across_threads(engine):
    w = engine.live("frame", 64)
    r = w.reader()
    with pytest.raises(theus.TimeoutError):
        r.wait_epoch(0, timeout=0.05)

    def writer():
        for i in range(1, 6):
            w.write(0, np.array([i], dtype=np.int64))
            w.publish()

    t = threading.Timer(0.05, writer)
    t.start()
    seen, got = 0, []
    buf = np.empty(1, dtype=np.int64)
    while seen < 5:
        seen = r.wait_epoch(seen, timeout=5)
        r.read_at(0, buf)
        got.append(int(buf[0]))
    t.join()
    assert got[-1] == 5 and got == sorted(got)


def test_unbind_and_close(engine):
    w = engine.live("frame", 128)
    r = w.reader()
    with pytest.raises(theus.AlreadyExistsError):
        engine.live("frame", 128)
    w.unbind()
    with pytest.raises(theus.ClosedError):
        w.publish()
    with pytest.raises(theus.ClosedError):
        r.read_at(0, bytearray(8))
    with pytest.raises(theus.InvalidArgumentError):
        engine.live("zero", 0)
    w2 = engine.live("other", 16)
    r2 = w2.reader()
    engine.close()
    with pytest.raises(theus.ClosedError):
        r2.read_at(0, bytearray(8))
    with pytest.raises(theus.ClosedError):
        w2.write(0, b"x")

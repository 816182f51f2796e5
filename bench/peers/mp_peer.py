#!/usr/bin/python3
"""Peer of `theus-bench dispatch`: what Python's multiprocessing costs for the
same jobs. Run with Debian's python3 (+ python3-numpy); prints one
"name value unit" line per figure, like theus-bench.

  py_pool_apply_roundtrip_us        Pool.apply of an empty function, warm pool
  py_pool_map_chunk1000_tasks_per_s Pool.map(chunksize=1000) of empty tasks
  py_handoff_256MiB_pickle_us       a 256 MiB numpy array sent by pickling
  py_handoff_256MiB_shm_us          the same through multiprocessing.shared_memory
"""
import multiprocessing as mp
import os
import statistics
import sys
import time

import numpy as np
from multiprocessing import resource_tracker, shared_memory


def empty(_=None):
    return None


def first_last(a):
    return int(a[0]) + int(a[-1])


def first_last_shm(args):
    name, n = args
    shm = shared_memory.SharedMemory(name=name)
    # Python 3.11 registers attachments too; the creator unlinks it, not us.
    resource_tracker.unregister(shm._name, "shared_memory")
    try:
        a = np.ndarray((n,), dtype=np.uint8, buffer=shm.buf)
        return int(a[0]) + int(a[-1])
    finally:
        del a
        shm.close()


def report(name, value, unit):
    print(f"{name} {value:.6g} {unit}", flush=True)


def median_us(fn, reps):
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000.0)
    return statistics.median(samples)


def main():
    scale = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    nworkers = os.cpu_count() or 1
    ctx = mp.get_context("fork")
    with ctx.Pool(nworkers) as pool:
        for _ in range(200):
            pool.apply(empty)
        report("py_pool_apply_roundtrip_us", median_us(lambda: pool.apply(empty), 2000 * scale), "us")

        n = 200000 * scale
        items = range(n)
        pool.map(empty, range(10000), chunksize=1000)
        t0 = time.perf_counter()
        pool.map(empty, items, chunksize=1000)
        report("py_pool_map_chunk1000_tasks_per_s", n / (time.perf_counter() - t0), "tasks/s")

        size = 256 << 20
        a = np.zeros(size, dtype=np.uint8)
        a[0], a[-1] = 1, 2
        # one sample: pickling 256 MiB through a pipe takes seconds here
        report("py_handoff_256MiB_pickle_us", median_us(lambda: pool.apply(first_last, (a,)), 1), "us")
        shm = shared_memory.SharedMemory(create=True, size=size)
        try:
            b = np.ndarray((size,), dtype=np.uint8, buffer=shm.buf)
            b[0], b[-1] = 1, 2
            args = (shm.name, size)
            report("py_handoff_256MiB_shm_us", median_us(lambda: pool.apply(first_last_shm, (args,)), 50), "us")
            del b
        finally:
            shm.close()
            shm.unlink()


if __name__ == "__main__":
    main()

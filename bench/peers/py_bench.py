#!/usr/bin/python3
"""The Python package against Python's own ways of doing the same work.
Prints one "name value unit" line per figure, like theus-bench.

  py_execute_roundtrip_us              engine.execute of the demo plugin's empty parallel `noop`, warm pool
  py_pool_apply_roundtrip_us           multiprocessing.Pool.apply of an empty function, warm pool
  ratio_py_execute_vs_pool_apply       how many times faster engine.execute is (target >= 20)
  py_execute_local_us                  engine.execute of `noop` with no pool: what the Python layer adds
  py_map_sum_256MiB_ms                 engine.map of `sum_f32` (bench/peers/py_bench_plugin.c, compiled here
                                       with cc) summing a 256 MiB float32 heavy array in double, 2 workers
  py_map_moments_256MiB_ms             the same with the demo plugin's `moments` (sum, sum of squares, min,
                                       max in one pass), for reference
  py_joblib_sum_256MiB_ms              joblib.Parallel(n_jobs=2) summing the halves (memmapping large args)
  py_mp_shm_sum_256MiB_ms              multiprocessing.Pool(2) summing the halves of the array kept in a
                                       multiprocessing.shared_memory block (workers attach once)
  ratio_py_map_vs_joblib, ratio_py_map_vs_mp_shm   peer time / engine time (> 1: the engine is faster)
  py_handoff_1KiB_us, py_handoff_1GiB_us         engine.execute of `moments` declaring a heavy input of 1 KiB /
                                       1 GiB, shaped (1, n) so the process reads one element: the cost of
                                       handing the array over
  ratio_py_handoff_1GiB_vs_1KiB        target <= 1.2

Usage: THEUS_LIBRARY=<build>/libtheus.so PYTHONPATH=python \\
           /usr/bin/python3 bench/peers/py_bench.py <build>/examples/plugin/theus_demo.so
(needs cc, the jansson headers and this tree's include/ to build the sum plugin).
Every figure is the median of several timed runs after a warm-up.
"""
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from multiprocessing import shared_memory

import theus

MiB = 1 << 20
GiB = 1 << 30


def out(name, value, unit):
    print(f"{name} {value:.6g} {unit}", flush=True)


def median_time(fn, reps, inner=1):
    """Median seconds per call of fn over reps batches of inner calls (after one warm-up batch)."""
    for _ in range(inner):
        fn()
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t) / inner)
    return statistics.median(samples)


def empty():
    return None


_attached = {}


def shm_sum(args):
    name, n, lo, hi = args
    a = _attached.get(name)
    if a is None:
        # Forked workers share the creator's resource tracker: the creator unlinks the block.
        shm = shared_memory.SharedMemory(name=name)
        a = _attached[name] = (shm, np.ndarray((n,), dtype=np.float32, buffer=shm.buf))
    return float(a[1][lo:hi].sum(dtype=np.float64))


def half_sum(x):
    return float(x.sum(dtype=np.float64))


def build_sum_plugin(tmp):
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join(here, "py_bench_plugin.c")
    so = os.path.join(tmp, "py_bench_plugin.so")
    inc = os.path.join(here, "..", "..", "include")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-std=c17", "-shared", "-fPIC", "-fvisibility=hidden",
                    "-I", inc, src, "-o", so], check=True)
    return so


def main(plugin):
    n256 = 256 * MiB // 4
    tmp = tempfile.mkdtemp(prefix="py-bench-")
    sum_plugin = build_sum_plugin(tmp)
    with theus.Engine(workers=2, plugins=[plugin, sum_plugin], budget=2 * GiB, single_limit=GiB + MiB) as eng:
        # ---- round trip ----
        t_exec = median_time(lambda: eng.execute("noop"), reps=15, inner=2000)
        out("py_execute_roundtrip_us", t_exec * 1e6, "us")
        ctx = mp.get_context("fork")
        with ctx.Pool(2) as pool:
            t_apply = median_time(lambda: pool.apply(empty), reps=15, inner=200)
        out("py_pool_apply_roundtrip_us", t_apply * 1e6, "us")
        out("ratio_py_execute_vs_pool_apply", t_apply / t_exec, "x")
    with theus.Engine(workers=-1, plugins=[plugin]) as local:
        # The binding's own cost: the same call with no pool (noop runs in this thread).
        out("py_execute_local_us", median_time(lambda: local.execute("noop"), reps=15, inner=5000) * 1e6, "us")
    with theus.Engine(workers=2, plugins=[plugin, sum_plugin], budget=2 * GiB, single_limit=GiB + MiB) as eng:
        # ---- map over 256 MiB ----
        arr = eng.heavy.alloc("signal", shape=(n256,), dtype=np.float32)
        arr[:] = np.random.default_rng(1).random(n256, dtype=np.float32)
        expected = float(arr.sum(dtype=np.float64))
        eng.compare_and_swap(eng.state.version, heavy={"signal": arr})
        assert abs(eng.map("sum_f32", "signal", slices=2) - expected) < 1e-9 * expected
        t_map = median_time(lambda: eng.map("sum_f32", "signal", slices=2), reps=9)
        out("py_map_sum_256MiB_ms", t_map * 1e3, "ms")
        res = eng.map("moments", "signal", slices=2, reducer="moments")
        assert abs(res["sum"] - expected) < 1e-6 * expected, (res, expected)
        t_mom = median_time(lambda: eng.map("moments", "signal", slices=2, reducer="moments"), reps=5)
        out("py_map_moments_256MiB_ms", t_mom * 1e3, "ms")
        plain = np.array(arr)  # what a joblib user has: an ordinary array (joblib memmaps it per call)

        try:
            import joblib
            with joblib.Parallel(n_jobs=2, max_nbytes="1M") as par:
                def jl():
                    return sum(par(joblib.delayed(half_sum)(h) for h in (plain[:n256 // 2], plain[n256 // 2:])))
                assert abs(jl() - expected) < 1e-6 * expected
                t_jl = median_time(jl, reps=5)
            out("py_joblib_sum_256MiB_ms", t_jl * 1e3, "ms")
            out("ratio_py_map_vs_joblib", t_jl / t_map, "x")
        except ImportError:
            print("# joblib missing (apt-get install python3-joblib): joblib peer skipped", file=sys.stderr)

        shm = shared_memory.SharedMemory(create=True, size=n256 * 4)
        try:
            view = np.ndarray((n256,), dtype=np.float32, buffer=shm.buf)
            view[:] = arr  # the data is produced there (not timed), like heavy.alloc for the engine
            jobs = [(shm.name, n256, 0, n256 // 2), (shm.name, n256, n256 // 2, n256)]
            with ctx.Pool(2) as pool:
                def mps():
                    return sum(pool.map(shm_sum, jobs, chunksize=1))
                assert abs(mps() - expected) < 1e-6 * expected
                t_mp = median_time(mps, reps=7)
            del view
        finally:
            shm.close()
            shm.unlink()
        out("py_mp_shm_sum_256MiB_ms", t_mp * 1e3, "ms")
        out("ratio_py_map_vs_mp_shm", t_mp / t_map, "x")
        del arr, plain
        eng.compare_and_swap(eng.state.version, heavy={"signal": None})

        # ---- hand-off: 1 KiB vs 1 GiB, the process reads one element ----
        def handoff(nbytes):
            a = eng.heavy.alloc("signal", shape=(1, nbytes // 4), dtype=np.float32)
            a[0, 0] = 1.0
            eng.compare_and_swap(eng.state.version, heavy={"signal": a})
            assert eng.execute("moments")["n"] == 1
            t = median_time(lambda: eng.execute("moments"), reps=15, inner=500)
            del a
            eng.compare_and_swap(eng.state.version, heavy={"signal": None})
            return t

        t_small = handoff(1024)
        t_big = handoff(GiB)
        out("py_handoff_1KiB_us", t_small * 1e6, "us")
        out("py_handoff_1GiB_us", t_big * 1e6, "us")
        out("ratio_py_handoff_1GiB_vs_1KiB", t_big / t_small, "x")
    os.unlink(sum_plugin)
    os.rmdir(tmp)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: py_bench.py path/to/theus_demo.so")
    main(sys.argv[1])

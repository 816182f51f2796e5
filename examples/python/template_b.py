#!/usr/bin/env python3
"""The Theus orchestrator pattern ("Template B") on theus-c.

A float32 signal of 10^6 samples (the seed's 1000 x 1000 dataset, flattened:
the demo plugin's `moments` reads a 1-D array) is allocated in the engine's shared-memory arena
as a numpy array (no copy), filled, published by compare-and-swap, and summed
by the demo plugin's `moments` process -- once in a pool worker (awaited, the
asyncio event loop stays free), once as a map over 2 workers.

Run from a build tree:
    THEUS_LIBRARY=build/libtheus.so PYTHONPATH=python \\
        python3 examples/python/template_b.py build/examples/plugin/theus_demo.so
(after `meson install`, neither variable is needed).
"""
import asyncio
import sys

import numpy as np

import theus


async def main(plugin):
    # Plugins are loaded before the engine opens, so the forked workers have their code.
    with theus.Engine(workers=2, plugins=[plugin]) as engine:
        # 1. Allocate shared memory managed by the engine: a writable draft, zero-copy.
        arr = engine.heavy.alloc("signal", shape=(1_000_000,), dtype=np.float32)

        # 2. Populate it in place.
        arr[:] = np.random.default_rng(7).random(1_000_000, dtype=np.float32)
        expected = float(arr.sum(dtype=np.float64))

        # 3. Publish it (zero-copy) together with a domain patch, in one new version.
        version = engine.compare_and_swap(engine.state.version, heavy={"signal": arr},
                                          data={"dataset": {"samples": 1_000_000}})
        assert not arr.flags.writeable  # published arrays are immutable

        # 4. Execute the plugin's parallel process in a worker; the event loop stays free meanwhile.
        moments = await engine.execute_async("moments")

        # The same over 2 workers: each gets one slice of the first dimension.
        total = engine.map("moments", "signal", slices=2, reducer="moments")
        engine.set("result", {"sum": moments["sum"], "n": moments["n"]})

        print(f"version {version}: n={moments['n']} sum={moments['sum']:.3f} "
              f"(numpy {expected:.3f}, map over 2 workers {total['sum']:.3f})")
        print("domain:", engine.state.domain)
        ok = (moments["n"] == 1_000_000 and abs(moments["sum"] - expected) < 1e-6 * expected
              and abs(total["sum"] - expected) < 1e-6 * expected and total["n"] == 1_000_000)
        del arr  # the published array pins its version while it lives
    return ok


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: template_b.py path/to/theus_demo.so")
    sys.exit(0 if asyncio.run(main(sys.argv[1])) else 1)

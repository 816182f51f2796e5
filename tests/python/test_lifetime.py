"""Lifetime rules: numpy views never outlive their memory; no worker outlives the interpreter."""
import gc
import json
import os
import warnings

import numpy as np
import pytest

import theus
from conftest import alive, descendants, run_python, wait_gone

PRELUDE = """
import json, os, sys, numpy as np, theus
sys.path.insert(0, {here!r})
from conftest import descendants
eng = theus.Engine(workers=2, plugins=[{plugin!r}])
eng.execute("noop")
print(json.dumps(descendants(os.getpid())), flush=True)
"""


def _prelude(demo_plugin):
    return PRELUDE.format(here=os.path.dirname(__file__), plugin=demo_plugin)


@pytest.mark.parametrize("ending", [
    "raise RuntimeError('the script fails')",
    "arr = eng.heavy.alloc('signal', (10,))\nsnap = eng.snapshot()\nview = eng.get('counter', 0)\nsys.exit(3)",
    "arr = eng.heavy.alloc('signal', (10,))\neng.compare_and_swap(eng.state.version, heavy={'signal': arr})\n"
    "s = eng.snapshot(); v = s.heavy['signal']\nraise SystemExit(0)",
    "job = eng.submit('noop')\nos._exit(0)  # no atexit, no finalizers: PR_SET_PDEATHSIG must do it",
    "import signal\nos.kill(os.getpid(), signal.SIGKILL)",
])
def test_no_worker_survives_the_interpreter(demo_plugin, ending):
    r = run_python(_prelude(demo_plugin) + ending)
    assert r.stdout, r.stderr
    pids = json.loads(r.stdout.splitlines()[0])
    assert len(pids) >= 3, f"expected a fork server and 2 workers, saw {pids}"
    left = wait_gone(pids)
    assert not left, f"processes left after the interpreter exited: {left}"
    assert "Segmentation" not in r.stderr and "Fatal Python error" not in r.stderr, r.stderr


def test_engine_close_stops_workers(demo_plugin):
    eng = theus.Engine(workers=2, plugins=[demo_plugin])
    eng.execute("noop")
    pids = descendants(os.getpid())
    assert len(pids) >= 3
    eng.close()
    assert not wait_gone(pids)


def test_dropping_the_engine_closes_it(demo_plugin):
    eng = theus.Engine(workers=2, plugins=[demo_plugin])
    eng.execute("noop")
    pids = descendants(os.getpid())
    del eng
    gc.collect()
    assert not wait_gone(pids)


def test_close_with_live_views_is_deferred_until_they_are_gone(demo_plugin):
    eng = theus.Engine(workers=2, plugins=[demo_plugin])
    arr = eng.heavy.alloc("signal", shape=(1 << 20,), dtype=np.float32)
    arr[:] = 3
    eng.compare_and_swap(eng.state.version, heavy={"signal": arr})
    with eng.snapshot() as s:
        view = s.heavy["signal"][::2]
    eng.execute("noop")
    pids = descendants(os.getpid())
    with pytest.warns(ResourceWarning, match="stay open until they are deleted"):
        eng.close()
    with pytest.raises(theus.ClosedError):
        eng.execute("noop")
    # memory under the views is still mapped and unchanged
    assert float(arr.sum()) == 3 * (1 << 20) and float(view.sum()) == 3 * (1 << 19)
    assert all(alive(p) for p in pids)
    del arr
    gc.collect()
    assert all(alive(p) for p in pids) and float(view[-1]) == 3.0
    del view
    gc.collect()
    assert not wait_gone(pids), "the last view is gone: the engine must have closed"


def test_close_releases_snapshots_without_views(demo_plugin):
    eng = theus.Engine(workers=-1)
    s = eng.snapshot()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eng.close()  # no ResourceWarning: nothing points into the arena
    assert s.released
    with pytest.raises(theus.ClosedError):
        s.get("x")


def test_job_after_close(engine):
    job = engine.submit("noop")
    engine.close()
    with pytest.raises(theus.ClosedError):
        job.wait(1)


def test_forked_child_exiting_does_not_close_the_parents_engine(demo_plugin):
    code = _prelude(demo_plugin) + """
arr = eng.heavy.alloc("signal", shape=(1000,), dtype=np.float32)
arr[:] = 1
eng.compare_and_swap(eng.state.version, heavy={"signal": arr})
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal exit: atexit handlers and finalizers run in the child
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
assert eng.execute("moments")["sum"] == 1000.0, "the pool must still work"
assert float(arr.sum()) == 1000.0 and eng.arena_stats()["active_handles"] == 1
print("parent ok")
"""
    r = run_python(code)
    assert r.returncode == 0 and "parent ok" in r.stdout, r.stderr

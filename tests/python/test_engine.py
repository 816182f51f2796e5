import asyncio
import gc
import json
import threading
import time

import numpy as np
import pytest

import theus


def publish_signal(engine, n=1000, key="signal"):
    arr = engine.heavy.alloc(key, shape=(n,), dtype=np.float32)
    arr[:] = np.arange(n, dtype=np.float32)
    engine.compare_and_swap(engine.state.version, heavy={key: arr})
    return arr


def test_template_b_flow(engine):
    arr = engine.heavy.alloc("signal", shape=(1000, 10), dtype=np.float32)
    assert isinstance(arr, np.ndarray) and arr.flags.writeable and arr.shape == (1000, 10)
    arr[:] = 2.0
    before = engine.state.version
    v = engine.compare_and_swap(before, heavy={"signal": arr}, data={"dataset": {"ready": True}})
    assert v == before + 1 == engine.state.version
    assert engine.state.domain["dataset"] == {"ready": True}
    # moments reads the first dimension of the array as samples
    m = engine.execute("moments")
    assert m["n"] == 1000 and m["sum"] == 2000.0 and m["min"] == m["max"] == 2.0


def test_published_array_and_its_views_are_read_only(engine):
    arr = engine.heavy.alloc("signal", shape=(100,), dtype=np.float32)
    row = arr[10:20]
    arr[:] = 1
    engine.compare_and_swap(engine.state.version, heavy={"signal": arr})
    for a in (arr, row, arr.base):
        assert not a.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 5
    with pytest.raises(ValueError):
        arr[1:3] += 1
    assert arr.published and float(arr.sum()) == 100.0
    later = arr[:5]
    assert not later.flags.writeable


def test_publishing_needs_the_draft(engine):
    with pytest.raises(theus.InvalidArgumentError, match="heavy.alloc"):
        engine.compare_and_swap(engine.state.version, heavy={"signal": np.zeros(10, np.float32)})
    a = engine.heavy.alloc("a", shape=(4,), dtype=np.float64)
    engine.heavy.alloc("b", shape=(4,), dtype=np.float64)
    with pytest.raises(theus.InvalidArgumentError):
        engine.compare_and_swap(engine.state.version, heavy={"b": a})
    with pytest.raises(theus.AlreadyExistsError):
        engine.heavy.alloc("a", shape=(4,))
    v = engine.compare_and_swap(engine.state.version, heavy={"a": a, "b": True})
    assert v == engine.state.version
    with pytest.raises(theus.InvalidArgumentError, match="already published"):
        engine.compare_and_swap(engine.state.version, heavy={"a": a})


def test_discard(engine):
    arr = engine.heavy.alloc("tmp", shape=(8,))
    with pytest.raises(theus.BusyError, match="del arr"):
        engine.heavy.discard("tmp")
    del arr
    engine.heavy.discard("tmp")
    with pytest.raises(theus.NotFoundError):
        engine.heavy.discard("tmp")
    assert engine.arena_stats()["active_handles"] == 0


def test_conflicts_keep_state(engine):
    v1 = engine.state.version
    engine.compare_and_swap(v1, data={"x": 1})
    with pytest.raises(theus.ConflictError) as ei:
        engine.compare_and_swap(v1, data={"x": 2})
    assert "domain.x" in ei.value.message and ei.value.code == -16
    assert engine.get("x") == 1
    # smart mode: a stale CAS on another path succeeds
    engine.compare_and_swap(v1, data={"y": 3})
    assert engine.get("y") == 3


def test_strict_mode(demo_plugin):
    with theus.Engine(workers=-1, strict=True) as eng:
        v = eng.state.version
        eng.compare_and_swap(v, data={"a": 1})
        with pytest.raises(theus.ConflictError):
            eng.compare_and_swap(v, data={"b": 1})


def test_get_set_and_domain(engine):
    engine.set("user", {"name": "ada", "tags": [1, 2]})
    assert engine.get("user.name") == "ada"
    assert engine.get("domain.user.tags") == [1, 2]
    assert engine.state.domain["counter"] == 0
    with pytest.raises(theus.NotFoundError):
        engine.get("nothing.here")
    assert engine.get("nothing", default=None) is None
    engine.set("user.name", None)
    assert engine.get("user") == {"tags": [1, 2]}
    with pytest.raises(TypeError, match="JSON"):
        engine.set("bad", object())
    with pytest.raises(TypeError):
        engine.set("nan", float("nan"))


def test_execute_errors(engine):
    with pytest.raises(theus.NotFoundError, match="nope"):
        engine.execute("nope")
    with pytest.raises(theus.ProcessError, match="refused on purpose"):
        engine.execute("refuse")
    v = engine.state.version
    with pytest.raises(theus.WorkerCrashed, match="SIGSEGV"):
        engine.execute("crash")
    assert engine.state.version == v
    assert engine.execute("add", by=5) == 5 and engine.get("counter") == 5  # the engine keeps working
    with pytest.raises(theus.InvalidArgumentError):
        engine.execute("add", args=[1, 2])


def test_parallel_put_runs_in_worker(engine):
    worker = engine.execute("put", key="where", value={"a": 1})
    assert worker >= 0
    assert engine.get("where") == {"a": 1}


def test_map_matches_numpy(engine):
    n = 100_003
    vals = engine.heavy.alloc("values", shape=(n,), dtype=np.float64)
    vals[:] = np.random.default_rng(1).random(n)
    engine.compare_and_swap(engine.state.version, heavy={"values": vals})
    for slices in (1, 2, 7, 64):
        assert engine.map("slice_sum", "values", slices=slices) == pytest.approx(float(vals.sum()), rel=1e-12)
    publish_signal(engine, 5000)
    m = engine.map("moments", "signal", reducer="moments")
    assert m["n"] == 5000 and m["max"] == 4999.0
    with pytest.raises(theus.NotFoundError):
        engine.map("slice_sum", "absent", slices=2)


def test_snapshot_isolation_and_views(engine):
    publish_signal(engine, 100)
    with engine.snapshot() as s:
        view = s.heavy["signal"]
        v = s.version
        engine.set("counter", 7)
        arr2 = engine.heavy.alloc("signal", shape=(3,), dtype=np.float32)
        arr2[:] = 9
        engine.compare_and_swap(engine.state.version, heavy={"signal": arr2})
        assert s.get("counter") == 0 and s.domain["counter"] == 0
        assert view.shape == (100,) and float(view.sum()) == 4950.0
        assert not view.flags.writeable
        assert s.get("heavy.signal").shape == (100,)
    assert s.released and s.version == v
    with pytest.raises(theus.ClosedError):
        s.domain
    # the view outlives the snapshot: its memory is still pinned and unchanged
    live_before = engine.arena_stats()["bytes_live"]
    assert float(view.sum()) == 4950.0
    del view
    gc.collect()
    assert engine.arena_stats()["bytes_live"] < live_before  # last view gone: the old array was freed
    assert engine.get("heavy.signal").tolist() == [9.0, 9.0, 9.0]


def test_published_array_pins_its_version(engine):
    arr = publish_signal(engine, 4096)
    base = engine.arena_stats()["bytes_live"]
    engine.compare_and_swap(engine.state.version, heavy={"signal": None})
    with pytest.raises(theus.NotFoundError):
        engine.get("heavy.signal")
    assert engine.arena_stats()["bytes_live"] == base  # arr still holds it
    assert float(arr[-1]) == 4095.0
    del arr
    gc.collect()
    assert engine.arena_stats()["bytes_live"] < base


def test_wait_version(engine):
    v = engine.state.version
    with pytest.raises(theus.TimeoutError):
        engine.wait_version(v, timeout=0.05)
    with pytest.raises(TimeoutError):  # the builtin catches it too
        engine.wait_version(timeout=0)
    t = threading.Timer(0.1, lambda: engine.set("tick", 1))
    t.start()
    assert engine.wait_version(v, timeout=5) == v + 1
    t.join()


def test_submit_and_job_timeout(engine):
    @engine.process(outputs=["domain.slow"])
    def slow(ctx):
        time.sleep(0.3)
        ctx.set("slow", True)
        return "done"

    job = engine.submit("slow")
    with pytest.raises(theus.TimeoutError):
        job.wait(timeout=0.01)
    assert job.wait(timeout=10) == "done"
    assert job.version == engine.state.version and engine.get("slow") is True
    job.release()
    failing = engine.submit("refuse")
    with pytest.raises(theus.ProcessError, match="refused"):
        failing.wait()
    failing.release()


def test_execute_async_does_not_block_the_loop(engine):
    # The process waits for an event that only a coroutine of the same loop
    # sets while execute_async is awaited: a blocked loop would never set it
    # (the process then gives up after 30 s and says so). No timing asserted.
    loop_ran = threading.Event()

    @engine.process(outputs=["domain.async_done"])
    def slow(ctx):
        seen = loop_ran.wait(30)
        ctx.set("async_done", ctx.args["k"])
        return {"k": ctx.args["k"], "loop_ran": seen}

    async def main():
        async def release_when_running():
            await asyncio.sleep(0.05)
            loop_ran.set()

        helper = asyncio.create_task(release_when_running())
        r = await engine.execute_async("slow", k=3)
        await helper
        return r

    r = asyncio.run(main())
    assert r == {"k": 3, "loop_ran": True} and engine.get("async_done") == 3

    async def gather():
        publish_signal(engine, 1000)
        return await asyncio.gather(*[engine.execute_async("moments") for _ in range(8)])

    assert [m["n"] for m in asyncio.run(gather())] == [1000] * 8
    with pytest.raises(theus.WorkerCrashed):
        asyncio.run(engine.execute_async("crash"))


def test_stats(engine):
    engine.execute("noop")
    st = engine.stats()
    assert set(st) >= {"engine", "arena", "pool"}
    assert st["pool"]["workers"] == 2 and st["pool"]["completed"] >= 1
    assert st["engine"]["executions"] >= 1
    assert set(engine.arena_stats()) == set(theus.STAT_NAMES)


def test_arena_limits_through_engine(demo_plugin):
    with theus.Engine(workers=-1, single_limit=1 << 20, budget=4 << 20) as eng:
        with pytest.raises(theus.AllocationTooLargeError):
            eng.heavy.alloc("big", shape=(1 << 19,), dtype=np.float32)  # 2 MiB > 1 MiB
        a = eng.heavy.alloc("ok", shape=(1 << 18,), dtype=np.float32)  # 1 MiB
        del a


def test_plugin_errors(tmp_path):
    with pytest.raises(theus.InvalidArgumentError, match="cannot load plugin"):
        theus.Engine(workers=-1, plugins=[str(tmp_path / "missing.so")])
    import ctypes.util
    libm = ctypes.util.find_library("m")
    with pytest.raises(theus.InvalidArgumentError, match="theus_plugin_register"):
        theus.Engine(workers=-1, plugins=[libm])


def test_closed_engine_raises(demo_plugin):
    eng = theus.Engine(workers=-1)
    eng.close()
    eng.close()  # idempotent
    for call in (lambda: eng.execute("x"), lambda: eng.state.version, lambda: eng.snapshot(),
                 lambda: eng.heavy.alloc("k", (3,))):
        with pytest.raises(theus.ClosedError):
            call()


def test_run_pipeline_dict_and_file(engine, demo_plugin, tmp_path):
    publish_signal(engine, 2000)
    dom = engine.run_pipeline({"steps": [
        {"map": "moments", "over": "heavy.signal", "reduce": "moments", "into": "domain.m"},
        {"run": "finish", "args": {"from": "domain.m", "into": "domain.stats"}}]})
    assert dom["stats"]["mean"] == pytest.approx(999.5) and dom["m"]["n"] == 2000
    bad = tmp_path / "bad.json"
    bad.write_text('{"steps": [\n  {"run": "nope"}\n]}\n')
    with pytest.raises(theus.TheusError) as ei:
        engine.run_pipeline(str(bad))
    assert "bad.json:2:" in ei.value.message
    with pytest.raises(theus.InvalidArgumentError, match="from_pipeline"):
        engine.run_pipeline({"plugins": [demo_plugin], "steps": []})


def test_from_pipeline_with_plugins_and_heavy(demo_plugin, tmp_path):
    doc = {"plugins": [demo_plugin], "budget": 100,
           "heavy": {"signal": {"dtype": "f32", "shape": [10000],
                                "fill": {"random": {"seed": 1, "min": 0, "max": 10}}}},
           "steps": [{"map": "moments", "over": "heavy.signal", "reduce": "moments", "into": "domain.m"},
                     {"run": "finish", "args": {"from": "domain.m", "into": "domain.stats"}}]}
    with theus.Engine.from_pipeline(doc, workers=2) as eng:
        dom = eng.run_pipeline()
        assert dom["m"]["n"] == 10000 and 4.5 < dom["stats"]["mean"] < 5.5
        sig = eng.get("heavy.signal")
        assert sig.shape == (10000,) and sig.dtype == np.float32
        assert float(sig.sum()) == pytest.approx(dom["m"]["sum"], rel=1e-6)
        del sig
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"steps": [{"set": "domain.z", "expr": "1 + 2"}]}))
    with theus.Engine.from_pipeline(str(path), workers=-1) as eng:
        assert eng.run_pipeline()["z"] == 3
    with pytest.raises(theus.ParseError):
        theus.Engine.from_pipeline({"steps": [{"run": 3}]})

"""Python effect processes: registered with @engine.process, run locally with contract checks."""
import numpy as np
import pytest

import theus


def test_process_reads_writes_and_returns(engine):
    @engine.process(inputs=["domain.counter"], outputs=["domain.counter", "domain.log"])
    def bump(ctx):
        n = ctx.get("counter") + ctx.args.get("by", 1)
        ctx.set("counter", n)
        ctx.set("log", {"by": ctx.args.get("by", 1), "process": ctx.process, "worker": ctx.worker})
        return {"new": n}

    v = engine.state.version
    assert engine.execute("bump", by=4) == {"new": 4}
    assert engine.get("counter") == 4 and engine.state.version == v + 1
    assert engine.get("log") == {"by": 4, "process": "bump", "worker": -1}


def test_exception_becomes_process_error_with_last_line(engine):
    @engine.process(outputs=["domain.x"])
    def broken(ctx):
        ctx.set("x", 1)
        raise KeyError("missing_field")

    v = engine.state.version
    with pytest.raises(theus.ProcessError) as ei:
        engine.execute("broken")
    msg = ei.value.message
    assert "KeyError: 'missing_field'" in msg and "in broken" in msg and "test_process.py" in msg
    assert engine.state.version == v and engine.get("x", None) is None  # nothing committed


def test_fail_and_declared_errors(engine):
    @engine.process(errors=["E_RANGE"])
    def checker(ctx):
        if ctx.args.get("declared"):
            ctx.raise_error("E_RANGE", "value out of range")
        if ctx.args.get("undeclared"):
            ctx.raise_error("E_OTHER", "nope")
        ctx.fail(f"bad input {ctx.args.get('x')}")

    with pytest.raises(theus.ProcessError, match="bad input 3"):
        engine.execute("checker", x=3)
    with pytest.raises(theus.ProcessError, match="E_RANGE.*out of range"):
        engine.execute("checker", declared=True)
    with pytest.raises(theus.ContractError):
        engine.execute("checker", undeclared=True)


def test_contract_checks_apply(engine):
    @engine.process(inputs=["domain.counter"], outputs=["domain.counter"], semantic="pure")
    def sneaky(ctx):
        ctx.set("elsewhere", 1)

    with pytest.raises(theus.ContractError, match="elsewhere"):
        engine.execute("sneaky")

    @engine.process(inputs=["domain.a"], semantic="pure")
    def peeky(ctx):
        return ctx.get("counter")

    with pytest.raises(theus.ContractError):
        engine.execute("peeky")
    with pytest.raises(theus.AlreadyExistsError):
        engine.register(lambda ctx: None, name="sneaky")
    with pytest.raises(theus.InvalidArgumentError):
        engine.register(lambda ctx: None, name="badpath", inputs=["domain..x"])


def test_parallel_python_process_is_refused_with_a_recipe(engine):
    with pytest.raises(theus.InvalidArgumentError) as ei:
        @engine.process(parallel=True, inputs=["heavy.signal"])
        def compute_heavy_task(ctx):
            return float(np.sum(ctx.heavy.get("signal")))
    msg = ei.value.message
    for needed in ("C process", "plugin", "theus_plugin_register", ".parallel = 1", "plugins=", "compute_heavy_task"):
        assert needed in msg


def test_heavy_in_a_python_process(engine):
    arr = engine.heavy.alloc("signal", shape=(1000,), dtype=np.float32)
    arr[:] = 1.5
    engine.compare_and_swap(engine.state.version, heavy={"signal": arr})

    @engine.process(inputs=["heavy.signal"], outputs=["domain.total"])
    def total(ctx):
        data = ctx.heavy.get("signal")
        assert ctx.heavy.get("absent") is None
        assert not data.flags.writeable
        s = float(np.sum(data))
        ctx.set("total", s)
        return s

    assert engine.execute("total") == 1500.0 and engine.get("total") == 1500.0

    kept = []

    @engine.process(inputs=["heavy.signal"])
    def leaky(ctx):
        kept.append(ctx.heavy["signal"][:10])

    with pytest.raises(theus.ProcessError, match="kept 1 ctx.heavy view"):
        engine.execute("leaky")
    kept.clear()

    saved = []

    @engine.process()
    def keeps_ctx(ctx):
        saved.append(ctx)

    engine.execute("keeps_ctx")
    with pytest.raises(theus.ClosedError, match="only valid during its call"):
        saved[0].get("counter")


def test_return_values_must_be_json(engine):
    @engine.process()
    def returns_array(ctx):
        return np.arange(3)

    with pytest.raises(theus.ProcessError, match="TypeError.*JSON"):
        engine.execute("returns_array")


def test_python_process_from_a_pipeline_and_submit(engine):
    @engine.process(inputs=["domain.counter"], outputs=["domain.counter"])
    def inc(ctx):
        ctx.set("counter", ctx.get("counter") + 1)

    dom = engine.run_pipeline({"steps": [{"run": "inc"}, {"run": "inc"}, {"run": "add", "args": {"by": 10}}]})
    assert dom["counter"] == 12
    jobs = [engine.submit("inc") for _ in range(5)]
    for j in jobs:
        j.wait(10)
        j.release()
    assert engine.get("counter") == 17  # CAS retries serialise the increments

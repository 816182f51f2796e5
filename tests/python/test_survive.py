"""Issue 14 features from Python: the ledger (and a ledger that cannot be
written), memoisation of pure Python processes, and cancelling jobs."""
import json
import threading
import time

import pytest

import theus


def test_ledger_lines_match_the_versions(tmp_path, demo_plugin):
    path = tmp_path / "run.jsonl"
    with theus.Engine(workers=-1, domain={"counter": 0}, ledger=path) as eng:
        @eng.process(inputs=["domain.counter"], outputs=["domain.counter"])
        def bump(ctx):
            ctx.set("counter", ctx.get("counter") + ctx.args.get("by", 1))

        eng.execute("bump", by=2)
        eng.set("done", True)
        last = eng.state.version
        eng.ledger_sync()  # on disk now, before close
        lines = [json.loads(line) for line in path.read_text().splitlines()]
    bumps = [en for en in lines if en["process"] == "bump"]
    assert len(bumps) == 1 and bumps[0]["args"] == {"by": 2} and bumps[0]["patch"] == {"counter": 2}
    assert bumps[0]["reads"]["domain.counter"].startswith("xxh3:") and bumps[0]["status"] == "committed"
    assert lines[-1]["version"] == last and lines[-1]["patch"] == {"done": True}


def test_ledger_that_cannot_be_written_refuses_commits():
    with theus.Engine(workers=-1, domain={"x": 0}, ledger="/dev/full") as eng:
        eng.set("x", 1)  # buffered: the failure is not known yet
        with pytest.raises(theus.SystemCallError, match=r"the ledger '/dev/full' cannot be written \(No space"):
            eng.ledger_sync()
        v = eng.state.version
        with pytest.raises(theus.SystemCallError, match="later commits are refused"):
            eng.set("x", 2)
        assert eng.state.version == v and eng.get("x") == 1
    with pytest.raises(theus.InvalidArgumentError):
        theus.Engine(workers=-1, ledger="")


def test_memo_hits_on_same_inputs_misses_on_change():
    runs = []
    with theus.Engine(workers=-1, domain={"x": 3}) as eng:
        @eng.process(inputs=["domain.x"], outputs=["domain.y"], semantic="pure", memo=True)
        def affine(ctx):
            runs.append(ctx.get("x"))
            ctx.set("y", 2 * ctx.get("x") + 1)
            return ctx.get("x")

        assert eng.execute("affine") == 3
        assert eng.execute("affine") == 3  # a hit: not run again, same value
        assert runs == [3] and eng.get("y") == 7
        eng.set("x", 4)
        assert eng.execute("affine") == 4  # the input changed: a miss
        assert runs == [3, 4] and eng.get("y") == 9
        memo = eng.stats()["memo"]
        assert memo["hits"] == 1 and memo["misses"] == 2


def test_cancel_a_parallel_job_while_it_runs(engine, tmp_path):
    mark = tmp_path / "started"
    respawned = engine.stats()["pool"]["respawned"]
    job = engine.submit("nap_mark", ms=60000, mark=str(mark))
    deadline = time.monotonic() + 30
    while not (mark.exists() and mark.read_text().strip()):  # its worker is running it
        assert time.monotonic() < deadline, "nap_mark never started"
        time.sleep(0.01)
    v = engine.state.version
    job.cancel()
    with pytest.raises(theus.CanceledError):
        job.wait(timeout=30)
    assert engine.state.version == v
    engine.execute("put", key="after", value=1)  # the pool heals
    assert engine.get("after") == 1
    assert engine.stats()["pool"]["respawned"] > respawned  # its worker was killed and replaced
    job.release()


def test_cancel_a_local_job_is_cooperative(engine):
    started = threading.Event()

    @engine.process(outputs=["domain.spun"])
    def spin(ctx):
        started.set()
        while not ctx.canceled:
            pass
        ctx.set("spun", True)  # not committed: the job was canceled

    job = engine.submit("spin")
    assert started.wait(30)
    job.cancel()
    with pytest.raises(theus.CanceledError):
        job.wait(timeout=30)
    assert engine.get("spun", None) is None
    job.release()

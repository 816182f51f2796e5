"""theus-run --trace on a known map (8 slices of 50 ms on 2 workers) writes
an honest trace: every slice event spans its run on the worker (at least the
50 ms it slept), sits on the row of the worker that ran it, no two events
overlap on a row, and the time each slice waited in the queue is its own
argument (the last slices waited for the first ones: at least 100 ms).
Usage: check_trace.py THEUS_RUN PIPELINE PLUGIN"""
import json
import subprocess
import sys
import tempfile

run, pipeline, plugin = sys.argv[1:4]
with tempfile.NamedTemporaryFile(suffix=".json") as tf:
    out = subprocess.run([run, "--workers", "2", "--plugin", plugin, "--trace", tf.name, pipeline],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["naps"] == 8, out.stdout
    trace = json.load(open(tf.name))
events = [e for e in trace["traceEvents"] if e.get("ph") == "X" and e["name"] == "nap"]
assert len(events) == 8, f"{len(events)} nap events, want 8"
rows = {}
for e in events:
    assert e["dur"] >= 50_000, f"slice shorter than its 50 ms sleep: {e}"
    assert e["tid"] == e["args"]["worker"] + 1, f"event not on its worker's row: {e}"
    assert e["args"]["queue_ms"] >= 0
    rows.setdefault(e["tid"], []).append(e)
assert set(rows) <= {1, 2}, f"rows {sorted(rows)}: slices ran on 2 workers"
for tid, evs in rows.items():
    evs.sort(key=lambda e: e["ts"])
    for a, b in zip(evs, evs[1:]):
        assert a["ts"] + a["dur"] <= b["ts"] + 1, f"overlap on row {tid}: {a} and {b}"
assert max(e["args"]["queue_ms"] for e in events) >= 100, "no slice waited behind the first ones"
print(f"trace: 8 slices on rows {sorted(rows)}, no overlap, queue_ms up to "
      f"{max(e['args']['queue_ms'] for e in events):.0f}")

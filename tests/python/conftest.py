"""Fixtures for the theus Python package tests.

Environment (set by tests/python/meson.build; set them by hand to run pytest
directly): THEUS_LIBRARY (libtheus.so to load), PYTHONPATH (the python/
folder), THEUS_DEMO_PLUGIN and THEUS_E2E_PLUGIN (the plugins built by the tree).
"""
import os
import subprocess
import sys
import time

import pytest


def _plugin(var):
    path = os.environ.get(var)
    if not path or not os.path.exists(path):
        pytest.fail(f"{var} must name a built plugin (got {path!r}); run through `meson test` or set it")
    return path


@pytest.fixture(scope="session")
def demo_plugin():
    return _plugin("THEUS_DEMO_PLUGIN")


@pytest.fixture(scope="session")
def e2e_plugin():
    return _plugin("THEUS_E2E_PLUGIN")


@pytest.fixture
def engine(demo_plugin, e2e_plugin):
    import theus
    eng = theus.Engine(workers=2, plugins=[demo_plugin, e2e_plugin], domain={"counter": 0})
    yield eng
    eng.close()


def descendants(pid):
    """pids of every live descendant of pid (from /proc)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def run_python(code, timeout=60, **env):
    """Runs code in a fresh interpreter with this environment (plus env); returns CompletedProcess."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **env))


def wait_gone(pids, seconds=3.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]

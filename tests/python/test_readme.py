"""README.md's Python example runs as printed (with this build's demo plugin)."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def readme_block():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### 4. Drive it from Python")
    begin = text.index("```python\n", start) + len("```python\n")
    return text[begin:text.index("```", begin)]


def test_readme_python_example_runs():
    code = readme_block().replace("build/examples/plugin/theus_demo.so", os.environ["THEUS_DEMO_PLUGIN"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    n, mean = out.stdout.split()
    assert int(n) == 1_000_000
    assert abs(float(mean) - 0.5) < 0.01

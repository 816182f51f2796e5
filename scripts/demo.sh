#!/usr/bin/env bash
# Builds theus-c in build/ and runs the demo pipeline on all cores:
# a 64 MiB float32 signal, statistics with a map on every worker, a libffi
# normalisation, and a while loop that finds the median by parallel bisection.
# The final domain state is printed; "check": {"ok": true} means the numbers
# agree with the uniform [0, 10) distribution it was drawn from.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ ! -f build/build.ninja ]; then
  meson setup build >/dev/null
fi
ninja -C build >/dev/null
exec build/cli/theus-run "$@" build/examples/pipelines/demo.json

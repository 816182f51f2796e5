#!/usr/bin/env bash
# Installs what is missing, builds theus-c in build/, and runs the demo.
# (Until theus-run lands, the demo is the arena tour; see issue 5.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
./build/examples/arena-tour

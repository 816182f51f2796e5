#!/usr/bin/env bash
# Runs `theus-bench dispatch` and its Python multiprocessing peer side by side
# and prints ratio_* lines (targets: round trip >= 30x faster than Pool.apply,
# batched throughput >= 2x Pool.map(chunksize=1000)).
# Usage: bash bench/compare.sh [path/to/theus-bench]   (default: build/bench/theus-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${1:-build/bench/theus-bench}
PY=/usr/bin/python3   # Debian's python: the one python3-numpy installs into
if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "compare.sh: installing python3-numpy" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-numpy >&2
  else sudo apt-get update -qq && sudo apt-get install -y -qq python3-numpy >&2; fi
fi
if [ ! -x "$BENCH" ]; then
  echo "compare.sh: $BENCH not found: build it (meson setup build -Dbuildtype=release && ninja -C build)" >&2
  exit 2
fi
out=$(mktemp); trap 'rm -f "$out"' EXIT
"$BENCH" dispatch | tee -a "$out"
"$PY" bench/peers/mp_peer.py | tee -a "$out"
val() { awk -v k="$1" '$1 == k { print $2 }' "$out"; }
ratio() { # name numerator denominator target
  local a b; a=$(val "$2"); b=$(val "$3")
  if [ -z "$a" ] || [ -z "$b" ]; then echo "$1 missing ($2 or $3 absent)"; return; fi
  awk -v n="$1" -v a="$a" -v b="$b" -v t="$4" 'BEGIN { printf "%s %.4g x (target %s)\n", n, a / b, t }'
}
ratio ratio_roundtrip_vs_py_pool_apply py_pool_apply_roundtrip_us dispatch_roundtrip_us ">= 30"
ratio ratio_batched_vs_py_pool_map dispatch_batched_tasks_per_s py_pool_map_chunk1000_tasks_per_s ">= 2"
ratio ratio_handoff_vs_py_shm_256MiB py_handoff_256MiB_shm_us handoff_1GiB_us "(theus hands off 1 GiB)"
ratio ratio_handoff_vs_py_pickle_256MiB py_handoff_256MiB_pickle_us handoff_1GiB_us "(theus hands off 1 GiB)"

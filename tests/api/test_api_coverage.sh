#!/usr/bin/env bash
# Fails when a function exported by libtheus is not called by any bad-argument
# test in tests/api (issue 10 item 6: every public function, cross-checked with
# the library's dynamic symbols, so a new function cannot skip the suite).
# Usage: test_api_coverage.sh LIBTHEUS_SO SOURCE_ROOT
set -euo pipefail
lib=$1 src=$2
syms=$(nm -D --defined-only "$lib" | awk '$2 == "T" && $3 ~ /^theus_/ {print $3}')
[ -n "$syms" ] || { echo "no theus_ function exported by $lib"; exit 1; }
gaps=0 n=0
for sym in $syms; do
  n=$((n + 1))
  if ! grep -q "\b$sym(" "$src"/tests/api/test_badargs_*.c; then
    echo "exported but never called with bad arguments in tests/api: $sym"
    gaps=$((gaps + 1))
  fi
done
echo "$n exported functions, $gaps not covered by tests/api"
[ "$gaps" -eq 0 ]

#!/usr/bin/env bash
# Installs what is missing, then builds theus-c twice (-Werror, and ASan+UBSan
# with -Werror) and runs the whole cmocka suite in each build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

run_suite() { # build-dir meson-options...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@" >/dev/null
  fi
  ninja -C "$dir" >/dev/null
  meson test -C "$dir" --verbose --num-processes 2 --no-rebuild
}

run_suite build-werror
run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
echo "theus-c: all suites passed"

#!/usr/bin/env bash
# Installs what is missing, then builds theus-c twice (-Werror, and ASan+UBSan
# with -Werror) and runs the whole cmocka suite in each build; then runs the
# multi-threaded stress tests (suite 'tsan') under ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

run_suite() { # build-dir "meson test args" meson-options...
  local dir=$1 test_args=$2; shift 2
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@" >/dev/null
  fi
  ninja -C "$dir" >/dev/null
  # shellcheck disable=SC2086
  meson test -C "$dir" --verbose --num-processes 2 --no-rebuild $test_args
}

run_suite build-werror ""
run_suite build-asan "" -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
TSAN_OPTIONS=halt_on_error=1 run_suite build-tsan "--suite tsan" -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug
echo "theus-c: all suites passed"

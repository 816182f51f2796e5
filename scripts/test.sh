#!/usr/bin/env bash
# Installs what is missing, then builds theus-c three times (-Werror with MPI,
# ASan+UBSan and ThreadSanitizer, each with -Werror) and runs the whole suite in each build
# (tests/meson.build sets TSAN_OPTIONS: any report fails its test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

run_suite() { # build-dir "meson test args" meson-options...
  local dir=$1 test_args=$2; shift 2
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@" > /tmp/theus-setup.$$.log 2>&1 ||
      { tail -n 40 /tmp/theus-setup.$$.log; exit 1; }
  fi
  ninja -C "$dir" > /tmp/theus-ninja.$$.log 2>&1 || { grep -B2 -A8 -E 'error|FAILED' /tmp/theus-ninja.$$.log | head -n 80; exit 1; }
  # shellcheck disable=SC2086
  meson test -C "$dir" --verbose --num-processes 2 --no-rebuild $test_args
}

# MPI (the cluster layer and its mpirun tests) in the -Werror build; the
# sanitizer builds go without it (tests/meson.build says why), which keeps the
# build without MPI tested as well.
run_suite build-werror "" -Dmpi=enabled
run_suite build-asan "" -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug -Dmpi=disabled
run_suite build-tsan "" -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug -Dmpi=disabled
echo "theus-c: all suites passed"

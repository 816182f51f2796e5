#!/usr/bin/env bash
# Installs what is missing, then builds theus-c three times (-Werror with MPI, ASan+UBSan
# and ThreadSanitizer, each with -Werror) and runs the whole suite in each build
# (tests/meson.build sets TSAN_OPTIONS: any report fails its test). The ASan
# build also runs the fault-injection loops (tests/fault, docs/testing.md).
# Then it builds the libFuzzer harnesses (tests/fuzz, clang), runs each for
# FUZZ_SECONDS (default 10) on its seed corpus and replays every finding's
# reproducer. The tests that never fork (suite 'nofork') also run under
# valgrind memcheck on the -Werror build: any error or definite leak fails them.
# Each stage prints "stage NAME: N s" (wall time) so a CI log shows where the
# time goes; the last line is the total.
set -euo pipefail
cd "$(dirname "$0")/.."
stage_t0=$SECONDS
stage() { # NAME: prints the wall time since the previous stage ended
  echo "stage $1: $((SECONDS - stage_t0)) s"
  stage_t0=$SECONDS
}
bash scripts/deps.sh
stage deps

run_suite() { # build-dir "meson test args" meson-options...
  local dir=$1 test_args=$2; shift 2
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@" > /tmp/theus-setup.$$.log 2>&1 ||
      { tail -n 40 /tmp/theus-setup.$$.log; exit 1; }
  else # a build set up before an option was added here gets it too
    meson configure "$dir" -Dwerror=true "$@" > /tmp/theus-setup.$$.log 2>&1 ||
      { tail -n 40 /tmp/theus-setup.$$.log; exit 1; }
  fi
  ninja -C "$dir" > /tmp/theus-ninja.$$.log 2>&1 || { grep -B2 -A8 -E 'error|FAILED' /tmp/theus-ninja.$$.log | head -n 80; exit 1; }
  stage "$dir build"
  # shellcheck disable=SC2086
  meson test -C "$dir" --verbose --num-processes 2 --no-rebuild $test_args
  stage "$dir tests"
}

# MPI (the cluster layer and its mpirun tests) in the -Werror build; the
# sanitizer builds go without it (tests/meson.build says why), which keeps the
# build without MPI tested as well.
run_suite build-werror "" -Dmpi=enabled
meson test -C build-werror --verbose --num-processes 2 --no-rebuild --suite nofork --timeout-multiplier 4 \
  --wrapper 'valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite'
stage "valgrind memcheck (suite nofork)"
run_suite build-asan "" -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug -Dfault_injection=true -Dmpi=disabled
run_suite build-tsan "" -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug -Dmpi=disabled
echo "theus-c: fuzzing each harness for ${FUZZ_SECONDS:-10} s on its corpus"
bash scripts/fuzz.sh all "${FUZZ_SECONDS:-10}"
stage "fuzz (build and run)"
# and replay every finding's reproducer (corpus + tests/fuzz/regress) once
meson test -C "${FUZZ_BUILD:-build-fuzz}" --suite fuzz --num-processes 2 --no-rebuild
stage "fuzz replay"
echo "stage total: $SECONDS s"
echo "theus-c: all suites passed"

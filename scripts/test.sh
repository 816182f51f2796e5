#!/usr/bin/env bash
# Installs what is missing, then builds theus-c three times (-Werror with MPI, ASan+UBSan
# and ThreadSanitizer, each with -Werror) and runs the whole suite in each build
# (tests/meson.build sets TSAN_OPTIONS: any report fails its test). The ASan
# build also runs the fault-injection loops (tests/fault, docs/testing.md).
# It also builds the libFuzzer harnesses (tests/fuzz, clang), runs each for
# FUZZ_SECONDS (default 10) on its seed corpus (FUZZ_JOBS, default 2, at a
# time) and replays every finding's reproducer. The tests that never fork
# (suite 'nofork') also run under valgrind memcheck on the -Werror build: any
# error or definite leak fails them. The ASan, TSan and fuzz builds are
# compiled while the -Werror build's cluster tests run (they run one at a
# time). Each stage prints "stage NAME: N s" (wall time) so a CI log shows
# where the time goes; the last line is the total.
set -euo pipefail
cd "$(dirname "$0")/.."
stage_t0=$SECONDS
stage() { # NAME: prints the wall time since the previous stage ended
  echo "stage $1: $((SECONDS - stage_t0)) s"
  stage_t0=$SECONDS
}
bash scripts/deps.sh
stage deps

build() { # build-dir meson-options...: sets it up (or reconfigures it) and builds it, quietly
  local dir=$1 log=/tmp/theus-build.$$.$1.log; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@" > "$log" 2>&1 || { tail -n 40 "$log"; exit 1; }
  else # a build set up before an option was added here gets it too
    meson configure "$dir" -Dwerror=true "$@" > "$log" 2>&1 || { tail -n 40 "$log"; exit 1; }
  fi
  ninja -C "$dir" > "$log" 2>&1 || { grep -B2 -A8 -E 'error|FAILED' "$log" | head -n 80; exit 1; }
  rm -f "$log"
}

suite() { # build-dir [meson test args...]
  local dir=$1; shift
  meson test -C "$dir" --verbose --num-processes 2 --no-rebuild "$@"
}

# MPI (the cluster layer and its mpirun tests) in the -Werror build; the
# sanitizer builds go without it (tests/meson.build says why), which keeps the
# build without MPI tested as well.
build build-werror -Dmpi=enabled
stage "build-werror build"
suite build-werror --no-suite cluster
stage "build-werror tests but cluster"
# The cluster tests run one at a time (is_parallel false) and keep about one
# core busy (cluster_same: 43 s of CPU in 117 s): the sanitizer and fuzz
# builds use the rest meanwhile, and go on beside valgrind if need be.
builds_log=/tmp/theus-builds.$$.log
{
  build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug -Dfault_injection=true -Dmpi=disabled
  echo "build-asan built at $SECONDS s"
  build build-tsan -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug -Dmpi=disabled
  echo "build-tsan built at $SECONDS s"
  bash scripts/fuzz.sh build
} > "$builds_log" 2>&1 &
builds=$!
trap 'wait' EXIT # a failed test ends the script, not before the builds beside it
suite build-werror --suite cluster
stage "build-werror cluster tests (the other builds beside them)"
suite build-werror --suite nofork --timeout-multiplier 4 \
  --wrapper 'valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite'
stage "valgrind memcheck (suite nofork)"
wait "$builds" || { echo "theus-c: a build failed:"; cat "$builds_log"; exit 1; }
cat "$builds_log"
rm -f "$builds_log"
stage "rest of the build-asan, build-tsan and build-fuzz builds"
suite build-asan
stage "build-asan tests"
suite build-tsan
stage "build-tsan tests"
# two harnesses at a time: each is one process, so each has a core to itself
echo "theus-c: fuzzing each harness for ${FUZZ_SECONDS:-10} s on its corpus, ${FUZZ_JOBS:-2} at a time"
FUZZ_JOBS=${FUZZ_JOBS:-2} bash scripts/fuzz.sh all "${FUZZ_SECONDS:-10}"
stage "fuzz"
# and replay every finding's reproducer (corpus + tests/fuzz/regress) once
meson test -C "${FUZZ_BUILD:-build-fuzz}" --suite fuzz --num-processes 2 --no-rebuild
stage "fuzz replay"
echo "stage total: $SECONDS s"
echo "theus-c: all suites passed"

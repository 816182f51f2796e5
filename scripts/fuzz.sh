#!/usr/bin/env bash
# Runs the libFuzzer harnesses of tests/fuzz (docs/testing.md).
#
# Usage: scripts/fuzz.sh HARNESS SECONDS     one harness, e.g. scripts/fuzz.sh expr 600
#        scripts/fuzz.sh all SECONDS         every harness in turn, SECONDS each
#        scripts/fuzz.sh list                the harness names
#        scripts/fuzz.sh build               only build every harness
#
# Builds a clang + ASan/UBSan build in build-fuzz (once), then runs the harness
# for SECONDS on its seed corpus, one job. The tree's corpus is only read: new
# inputs go to build-fuzz/fuzz-out/HARNESS/corpus, and a crash, leak, timeout or
# sanitizer report is kept in build-fuzz/fuzz-out/HARNESS/ with the command that
# replays it. Prints executions and coverage per harness; exits 1 if any failed.
#
# Environment: FUZZ_BUILD (build dir, default build-fuzz), FUZZ_MAX_LEN (largest
# input, default 1 MiB: deep inputs such as a 70000-term expression need far
# more than libFuzzer's 4 KB default), FUZZ_TIMEOUT (seconds one input may take,
# default 10), FUZZ_ARGS (more libFuzzer flags), FUZZ_JOBS (harnesses fuzzed at
# the same time by "all", default 1; each still gets SECONDS and one job).
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESSES=(pipeline contract signature expr merge_patch path wire)
BUILD=${FUZZ_BUILD:-build-fuzz}
MAX_LEN=${FUZZ_MAX_LEN:-1048576}
TIMEOUT=${FUZZ_TIMEOUT:-10}
JOBS=${FUZZ_JOBS:-1}

usage() { sed -n '4,7p' "$0" | sed 's/^# *//' >&2; exit 2; }
[ $# -ge 1 ] || usage
if [ "$1" = list ]; then printf '%s\n' "${HARNESSES[@]}"; exit 0; fi
if [ "$1" = build ] && [ $# -eq 1 ]; then
  set -- all 0 # build, then stop before fuzzing
else
  [ $# -eq 2 ] && [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -gt 0 ] || usage
fi
[[ $JOBS =~ ^[0-9]+$ ]] && [ "$JOBS" -gt 0 ] || { echo "fuzz: FUZZ_JOBS must be a positive integer" >&2; exit 2; }
which=$1 seconds=$2
if [ "$which" = all ]; then
  todo=("${HARNESSES[@]}")
else
  which=${which#fuzz_}
  [[ " ${HARNESSES[*]} " == *" $which "* ]] || { echo "fuzz: unknown harness '$1'; one of: ${HARNESSES[*]}" >&2; exit 2; }
  todo=("$which")
fi

command -v clang > /dev/null || { echo "fuzz: clang is needed (scripts/deps.sh installs it)" >&2; exit 2; }
build_t0=$SECONDS
if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang meson setup "$BUILD" -Dfuzz=true -Dtests=false -Db_sanitize=address,undefined -Db_lundef=false \
    -Dwerror=true > "/tmp/theus-fuzz-setup.$$.log" 2>&1 || { tail -n 40 "/tmp/theus-fuzz-setup.$$.log"; exit 1; }
  rm -f "/tmp/theus-fuzz-setup.$$.log"
fi
ninja -C "$BUILD" $(printf 'tests/fuzz/fuzz_%s ' "${todo[@]}") > "/tmp/theus-fuzz-ninja.$$.log" 2>&1 ||
  { grep -B2 -A8 -E 'error|FAILED' "/tmp/theus-fuzz-ninja.$$.log" | head -n 80; exit 1; }
rm -f "/tmp/theus-fuzz-ninja.$$.log"
echo "fuzz: build of $BUILD (setup, library, harnesses): $((SECONDS - build_t0)) s"
[ "$seconds" -gt 0 ] || exit 0

# Leaks and UBSan reports are findings, like crashes.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

# fuzz_one HARNESS: runs it; its exit status and wall time go to its output dir.
fuzz_one() {
  local h=$1 out="$BUILD/fuzz-out/$1" dict=() start rc=0
  mkdir -p "$out/corpus"
  [ -f "tests/fuzz/dict/$h.dict" ] && dict=("-dict=tests/fuzz/dict/$h.dict")
  start=$(date +%s)
  touch "$out/.start"
  # stdin from /dev/null: a pipeline may name a domain file such as /dev/stdin.
  # shellcheck disable=SC2086
  "$BUILD/tests/fuzz/fuzz_$h" "$out/corpus" "tests/fuzz/corpus/$h" "${dict[@]}" \
    -max_total_time="$seconds" -max_len="$MAX_LEN" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/" ${FUZZ_ARGS:-} < /dev/null > "$out/fuzz.log" 2>&1 || rc=$?
  echo "$rc $(($(date +%s) - start))" > "$out/.result"
}

# FUZZ_JOBS harnesses at a time, each on its own output dir.
running=0
for h in "${todo[@]}"; do
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  rm -f "$BUILD/fuzz-out/$h/.result"
  fuzz_one "$h" &
  running=$((running + 1))
done
wait || true

failed=()
printf '%-12s %10s %8s %8s %7s %9s %6s  %s\n' harness execs exec/s cov ft corpus seconds result
for h in "${todo[@]}"; do
  out="$BUILD/fuzz-out/$h"
  log="$out/fuzz.log"
  rc=1 took=?
  [ -f "$out/.result" ] && read -r rc took < "$out/.result"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<< "$last")
  result=ok
  if [ "$rc" -ne 0 ]; then
    result="FAILED (exit $rc)"
    failed+=("$h")
  fi
  printf '%-12s %10s %8s %8s %7s %9s %6s  %s\n' "$h" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "$took" "$result"
  if [ "$rc" -ne 0 ]; then
    grep -E 'ERROR: |SUMMARY: |invariant failed|runtime error' "$log" | head -n 5 | sed 's/^/    /'
    find "$out" -maxdepth 1 -type f -newer "$out/.start" \( -name 'crash-*' -o -name 'leak-*' -o \
      -name 'timeout-*' -o -name 'oom-*' -o -name 'slow-unit-*' \) |
      while read -r a; do echo "    artifact: $a  (replay: $BUILD/tests/fuzz/fuzz_$h $a)"; done
    echo "    log: $log"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${failed[*]} failed" >&2
  exit 1
fi

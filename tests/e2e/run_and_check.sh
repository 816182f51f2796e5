#!/usr/bin/env bash
# Runs theus-run with the given arguments and requires exit 0 and a final
# state whose "check"."ok" is true (the example pipelines verify themselves).
# Usage: run_and_check.sh THEUS_RUN ARGS...
set -euo pipefail
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" >"$out"
python3 - "$out" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))
check = state.get("check", {})
print(json.dumps(check))
sys.exit(0 if check.get("ok") is True else 1)
PY

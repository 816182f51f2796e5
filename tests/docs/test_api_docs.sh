#!/usr/bin/env bash
# Fails when a function exported by libtheus is missing from docs/api.md, when
# a public function has no doc comment, or when the generated reference part
# of docs/api.md no longer matches the headers.
# Usage: test_api_docs.sh LIBTHEUS_SO SOURCE_ROOT
set -euo pipefail
lib=$1 src=$2
python3 "$src/scripts/api_ref.py" --check
gaps=0
while read -r sym; do
  if ! grep -q "\b$sym(" "$src/docs/api.md"; then
    echo "exported but not documented in docs/api.md: $sym"
    gaps=$((gaps + 1))
  fi
done < <(nm -D --defined-only "$lib" | awk '$2 == "T" && $3 ~ /^theus_/ {print $3}')
n=$(nm -D --defined-only "$lib" | awk '$2 == "T" && $3 ~ /^theus_/' | wc -l)
echo "$n exported functions, $gaps missing from docs/api.md"
[ "$gaps" -eq 0 ]

#!/usr/bin/env bash
# Installs the build into a temporary root (meson install --destdir), then
# builds the README's C examples out of tree with `pkg-config --cflags --libs
# theus` alone, runs them against the installed library, and checks that the
# code printed in README.md is the code that was built.
# Usage: test_install.sh BUILD_ROOT SOURCE_ROOT [SANITIZE]
set -euo pipefail
build=$1 src=$2 sanitize=${3:-none}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
meson install -C "$build" --destdir "$root" --no-rebuild >"$root/install.log" 2>&1 ||
  { cat "$root/install.log"; exit 1; }
pc=$(find "$root" -name theus.pc | head -n 1)
[ -n "$pc" ] || { echo "no theus.pc installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$root
flags=$(pkg-config --cflags --libs theus)
echo "pkg-config --cflags --libs theus: $flags"
extra=()
[ "$sanitize" != none ] && extra=(-fsanitize="$sanitize")
libdir=$(dirname "$(find "$root" -name 'libtheus.so' | head -n 1)")
ex=$src/examples/readme
out=$root/out
mkdir -p "$out"
cc=${CC:-cc}
# shellcheck disable=SC2086
"$cc" "${extra[@]}" -std=c17 -Wall -Wextra -Werror -shared -fPIC -o "$out/plugin.so" "$ex/plugin.c" $flags
# shellcheck disable=SC2086
"$cc" "${extra[@]}" -std=c17 -Wall -Wextra -Werror -o "$out/host" "$ex/host.c" $flags
# shellcheck disable=SC2086
"$cc" "${extra[@]}" -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$out/arena" "$ex/arena.c" $flags
LD_LIBRARY_PATH=$libdir "$out/host"
LD_LIBRARY_PATH=$libdir "$out/arena"
echo "README examples built out of tree and ran: ok"
# The installed theus-run finds the installed libtheus by itself (rpath).
cat >"$out/sum.json" <<JSON
{"plugins": ["$out/plugin.so"],
 "heavy": {"signal": {"dtype": "f32", "shape": [1000], "fill": {"range": {"start": 1, "step": 1}}}},
 "steps": [{"map": "slice_sum", "over": "heavy.signal", "reduce": "sum", "into": "domain.total"}]}
JSON
run=$(find "$root" -path '*/bin/theus-run' | head -n 1)
env -u LD_LIBRARY_PATH "$run" --workers 2 "$out/sum.json" | tee "$out/state.json"
grep -q '"total": 500500' "$out/state.json" || { echo "installed theus-run: wrong or missing total"; exit 1; }
echo "installed theus-run with an out-of-tree plugin: ok"
python3 "$src/tests/install/readme_blocks.py" "$src/README.md" "$ex"/*.c

#!/usr/bin/env bash
# Installs the Debian packages theus-c needs, only those that are missing.
# Usage: scripts/deps.sh [extra-package ...]
set -euo pipefail
# clang + libclang-rt-14-dev (libFuzzer and the sanitizer runtimes on Debian 12) build tests/fuzz.
pkgs=(meson ninja-build pkg-config gcc libc6-dev libffi-dev libjansson-dev libcmocka-dev libseccomp-dev libxxhash-dev
      python3-numpy python3-pytest python3-joblib clang libclang-rt-14-dev valgrind libopenmpi-dev openmpi-bin "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null

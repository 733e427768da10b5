#!/usr/bin/env bash
# Installs every system dependency of spatialsoftmax from Debian's archive.
# Idempotent: does nothing when everything is present.
# --sweep adds what scripts/sweep.sh needs: clang 14 with libFuzzer and its
# sanitizer runtimes (libclang-rt-14-dev) for scripts/fuzz.sh, python3 for
# scripts/kill-test.sh (ThreadSanitizer's runtime comes with g++).
set -euo pipefail
packages=(cmake g++ make googletest libgtest-dev libbenchmark-dev
          nlohmann-json3-dev libcli11-dev libhwy-dev libprotobuf-dev protobuf-compiler
          clang-format-14)
if [ "${1:-}" = "--sweep" ]; then
  packages+=(clang-14 libclang-rt-14-dev python3)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

#!/usr/bin/env bash
# Installs what the build and tests need, idempotently. Safe to run again; installs nothing already there.
# Debian 12 with Rust and Python 3.11 is assumed (the project's machine kind).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the native runtimes' builds need (none yet; llama.cpp will add cmake and libclang-dev).
APT_PACKAGES=()
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "ci/setup.sh: cargo not found; install Rust (rustup) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

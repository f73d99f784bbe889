#!/usr/bin/env bash
# Installs what the build and tests need, idempotently. Safe to run again; installs nothing already there.
# Debian 12 with Rust and Python 3.11 is assumed (the project's machine kind).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the native runtimes' builds need: llama.cpp (nano-vllm-llama-cpp) builds with cmake and bindgen.
APT_PACKAGES=(cmake libclang-dev)
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

# Runtime libraries from Python wheels (ci/requirements-runtime.txt) in the project venv .venv (git-ignored): ONNX
# Runtime's libonnxruntime.so for nano-vllm-onnx. Reuses an existing .venv (e.g. the fixture generator's, with
# torch) and installs only the pinned packages whose exact version is missing, without their Python dependencies.
if [ ! -x .venv/bin/python ]; then
  echo "ci/setup.sh: creating .venv"
  python3 -m venv .venv
fi
runtime_missing=()
while read -r req; do
  req="${req%%#*}"; req="${req// /}"
  [ -z "$req" ] && continue
  .venv/bin/python - "${req%%==*}" "${req#*==}" <<'PY' || runtime_missing+=("$req")
import importlib.metadata as m, sys
try:
    sys.exit(0 if m.version(sys.argv[1]) == sys.argv[2] else 1)
except m.PackageNotFoundError:
    sys.exit(1)
PY
done < ci/requirements-runtime.txt
if [ ${#runtime_missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing ${runtime_missing[*]} into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "${runtime_missing[@]}"
fi
ort_version=$(sed -n 's/^onnxruntime==\([0-9.]*\).*/\1/p' ci/requirements-runtime.txt)
ort_lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so."$ort_version" 2>/dev/null | head -n 1)
[ -n "$ort_lib" ] || { echo "ci/setup.sh: libonnxruntime.so.$ort_version not found in .venv after installing" >&2; exit 1; }

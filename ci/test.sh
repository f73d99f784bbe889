#!/usr/bin/env bash
# The project's test command: formatting, lints, every test of every crate in one (release) profile, then
# ci/check.sh (parity of every runtime on every committed fixture, and the regression gate), then ci/interop.sh (real
# vLLM and llama.cpp servers, installed pinned by ci/peers.sh, benchmarked and checked over HTTP). Fails on the first
# failure. Prints the minutes each stage took.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
stage() { echo "== [$(( (SECONDS - start) / 60 )) min] $*"; }
# A variable that turns tests into skips has no place in the test command: a skipped runtime would read as a pass.
# Nor does one that swaps what is tested for something else: another ONNX Runtime library (ORT_DYLIB_PATH), other
# fixtures than the committed ones (NANO_VLLM_FIXTURES).
for var in $(env | grep -oE '^(NANO_VLLM_(SKIP_[A-Z_]+|BENCH_RUNTIMES|FIXTURES)|ORT_DYLIB_PATH)=' | tr -d =); do
  echo "ci/test.sh: $var is set; it would skip tests or test something else than this checkout pins. Unset it." >&2
  exit 1
done
bash ci/setup.sh system

# What downloads or builds outside cargo (the project venv with torch, the generated bundles, gungraun-runner, vLLM
# and llama.cpp's server) installs in the background while the Rust code compiles: most of it waits on the network
# and the disk, not the CPU. The tests wait for it; its failure is the run's failure.
# The two run side by side (peers.sh needs only the system packages): each spends much of its time on the network.
setup_log=$(mktemp)
peers_log=$(mktemp)
bash ci/setup.sh > "$setup_log" 2>&1 &
setup_pid=$!
bash ci/peers.sh > "$peers_log" 2>&1 &
peers_pid=$!
trap 'kill "$setup_pid" "$peers_pid" 2>/dev/null || true; rm -f "$setup_log" "$peers_log"' EXIT

stage "cargo fmt --check"
cargo fmt --all -- --check
stage "cargo clippy (release, all targets and features, -D warnings)"
cargo clippy --release --workspace --all-targets --all-features --locked -- -D warnings
stage "cargo test --no-run (release: build every test and bench)"
cargo test --release --workspace --all-targets --locked --no-run
stage "fuzzing the user-file parsers for a bounded time (ci/fuzz.sh, ${FUZZ_SECONDS:-20} s a target)"
bash ci/fuzz.sh
stage "waiting for ci/setup.sh and ci/peers.sh (in the background since the start)"
for job in setup peers; do
  pid_var="${job}_pid" log_var="${job}_log"
  if ! wait "${!pid_var}"; then
    cat "${!log_var}" >&2
    echo "ci/test.sh: ci/$job.sh failed" >&2
    exit 1
  fi
  cat "${!log_var}"
done
stage "cargo test (release: unit, integration, property tests; benches run once as smoke tests)"
cargo test --release --workspace --all-targets --locked
stage "ignored tests (those that need the generated bundles: they fail, not skip, when a bundle is missing)"
cargo test --release --workspace --lib --tests --locked -- --ignored
stage "doc tests"
cargo test --release --workspace --doc --locked
stage "conformance and regression check (ci/check.sh)"
bash ci/check.sh
stage "interop with real third-party servers: vLLM, llama.cpp's server, the openai SDK, nano-vllm serve (ci/interop.sh)"
bash ci/interop.sh
stage "all passed"

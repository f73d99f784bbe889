#!/usr/bin/env bash
# The project's test command: formatting, lints, every test of every crate in one (release) profile, then
# ci/check.sh (parity of every runtime on every committed fixture, and the regression gate), then ci/interop.sh (real
# vLLM and llama.cpp servers, installed pinned by ci/peers.sh, benchmarked and checked over HTTP). Fails on the first
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (release, all targets and features, -D warnings)"
cargo clippy --release --workspace --all-targets --all-features --locked -- -D warnings
echo "== cargo test (release: unit, integration, property tests; benches run once as smoke tests)"
cargo test --release --workspace --all-targets --locked
echo "== doc tests"
cargo test --release --workspace --doc --locked
echo "== conformance and regression check (ci/check.sh)"
bash ci/check.sh
echo "== interop with real third-party servers: vLLM and llama.cpp's server (ci/interop.sh)"
bash ci/interop.sh

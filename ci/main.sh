#!/usr/bin/env bash
# The main job. Until the runtimes land it drives the shared engine on the model-free mock runtime and prints what
# the scheduler and KV cache did; extra arguments go to `nano-vllm simulate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo run --release --locked -q -p nano-vllm-harness --bin nano-vllm -- simulate "$@"

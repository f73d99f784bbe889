#!/usr/bin/env bash
# The main job: generate text through the shared engine with the native runtime on the committed default fixture
# (fixtures/tiny-llama, random weights: the text is gibberish, the pipeline is real). Extra arguments go to
# `nano-vllm generate` (e.g. --bundle fixtures/tiny-gpt2 --prompt "Hello" --temperature 0.8 --seed 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo run --release --locked -q -p nano-vllm-harness --bin nano-vllm -- generate "$@"

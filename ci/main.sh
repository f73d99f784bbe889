#!/usr/bin/env bash
# The main job: the default comparison. Every compiled-in runtime replays the same small mixed workload (prompts of
# 16-96 tokens in 4 shared-prefix groups, 8-32 output tokens, offline) on the committed default fixture
# (fixtures/tiny-llama) through the shared engine; prints the Markdown comparison table and the path of the HTML
# report, then generates a short text sample with the native runtime. Extra arguments go to `nano-vllm bench`
# (e.g. --mode online --rate 20 --slo ttft=50ms, or --runtime native,onnx).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo build --release --locked -q -p nano-vllm-harness --bin nano-vllm
./target/release/nano-vllm bench --bundle fixtures/tiny-llama --requests 34 --warmup 2 --seed 0 "$@"
echo
./target/release/nano-vllm generate --bundle fixtures/tiny-llama --prompt "Once upon a time" --max-tokens 24

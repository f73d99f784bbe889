#!/usr/bin/env bash
# The regression gate's benchmark: a fixed workload (tiny-llama, 400 measured requests of the default synthetic mix,
# offline, seed 0, a 24-block KV cache so that sequences are preempted) on every runtime (and the native quantized
# kernels, native:q8_0), one thread each (so that
# the ratios between runtimes do not depend on how many cores are free), 5 repeats in rounds.
# Usage: bash ci/gate-bench.sh OUT_DIR. Used by ci/check.sh and ci/refresh-baseline.sh; change both baseline and
# this file together (the gate refuses a baseline of another workload).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: ci/gate-bench.sh OUT_DIR}"
"${CARGO_TARGET_DIR:-target}/release/nano-vllm" bench --bundle fixtures/tiny-llama \
  --runtime native,native:q8_0,onnx,candle,llama-cpp,llama-cpp:q8_0 --threads 1 \
  --requests 402 --warmup 2 --seed 0 --kv-blocks 24 --repeat 5 --quiet --out "$out"

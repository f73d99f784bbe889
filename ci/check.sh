#!/usr/bin/env bash
# Conformance and regression check, run by ci/test.sh after the tests: `nano-vllm parity` of every compiled-in
# runtime (and llama.cpp's Q8_0 GGUF) on every committed fixture and on the real models' bundles (fixtures/smollm2,
# with the shipped Q4_1 GGUF; fixtures/gemma3-270m, with the shipped Q4_K_M GGUF), with the tokenizers; the
# generator's emulation of llama.cpp's K-quant mixes against llama.cpp's files (fixtures/check_kquants.py); the
# instruction-count gate (ci/instructions-bench.sh, then `nano-vllm gate --instructions` against reports/instructions.json: engine, replay
# and runtimes, on any machine); and the wall-clock gate (ci/gate-bench.sh, then `nano-vllm gate` against this CPU's
# baseline in reports/baselines/; relative figures are gated only on a CPU that has one, exact figures everywhere).
# All of them always run; the script fails if any fails. Reports go to reports/runs/check-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
# The binary is built with the workspace's whole feature set, as `cargo test --workspace --all-targets` builds it:
# after ci/test.sh's test build this is a no-op. (`-p nano-vllm-cli` alone resolves other features and compiled
# candle, ort and llama.cpp a second time: 8 GB more in the target directory.)
cargo build --release --locked -q --workspace --all-targets
bin="${CARGO_TARGET_DIR:-target}/release/nano-vllm"
out="reports/runs/check-$(date +%s)"
status=0
echo "== nano-vllm parity (every runtime, every committed fixture)"
"$bin" parity --out "$out/parity.json" || status=1
echo "== nano-vllm parity on the real model (fixtures/smollm2: f32 runtimes, Q8_0, the shipped Q4_1 GGUF)"
"$bin" parity --bundle fixtures/smollm2 --out "$out/parity-smollm2.json" || status=1
echo "== nano-vllm parity on the second real model (fixtures/gemma3-270m: f32 runtimes, the shipped Q4_K_M GGUF)"
# The runtimes that run Gemma 3 in float32 and the two that run the shipped file as stored (7 min); candle:shipped
# (the shipped file dequantized) is checked against transformers' logits by harness/tests/gemma3.rs, and the lossy
# settings of our own quantizations (Q8_0, Q4_0, llama.cpp's Q4_K_M, f16, bf16, llama.cpp's defaults) on smollm2 and
# the tiny bundles (on this bundle they would add ~20 min).
"$bin" parity --bundle fixtures/gemma3-270m --out "$out/parity-gemma3-270m.json" \
  --runtime native,onnx,candle,llama-cpp,native:shipped,llama-cpp:shipped || status=1
echo "== the generator's emulation of llama.cpp's K-quant mixes against llama.cpp's own files (fixtures/check_kquants.py)"
# The bench bundle's Q2_K and Q3_K_M files (every K-quant type among them): made by llama.cpp's quantizer for these two
# runtimes (cached, so usually already there), then every tensor's type and every block compared with the emulation
# the manifests' mix tolerances were measured on.
kquants="$out/parity-bench-kquants.json"
if "$bin" parity --bundle fixtures/bench --runtime llama-cpp:q2_k,llama-cpp:q3_k_m --out "$kquants"; then
  quantized="${NANO_VLLM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/nano-vllm}/quantized"
  digest=$(sha256sum fixtures/bench/manifest.json | cut -c1-16)
  mixes=("$quantized"/bench-"$digest"-*.q2_k.gguf "$quantized"/bench-"$digest"-*.q3_k_m.gguf)
  .venv/bin/python fixtures/check_kquants.py fixtures/bench "${mixes[@]}" || status=1
else
  status=1
fi
echo "== instruction counts (ci/instructions-bench.sh) and nano-vllm gate --instructions"
if bash ci/instructions-bench.sh "$out/instructions.jsonl"; then
  "$bin" gate --instructions "$out/instructions.jsonl" --config ci/gate.toml || status=1
else
  echo "the instruction benchmarks failed" >&2
  status=1
fi
echo "== wall-clock gate benchmark (ci/gate-bench.sh) and nano-vllm gate"
if bash ci/gate-bench.sh "$out/gate"; then
  "$bin" gate --baseline reports/baselines --current "$out/gate" --config ci/gate.toml || status=1
else
  echo "the gate benchmark failed" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "check passed (reports in $out)" || echo "check FAILED (reports in $out)" >&2
exit "$status"

#!/usr/bin/env bash
# Conformance and regression check, run by ci/test.sh after the tests: `nano-vllm parity` of every compiled-in
# runtime (and llama.cpp's Q8_0 GGUF) on every committed fixture, with the tokenizers; then the gate's benchmark
# (ci/gate-bench.sh) and `nano-vllm gate` against reports/baseline.json with the thresholds of ci/gate.toml.
# Both always run; the script fails if either fails. Reports go to reports/runs/check-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo build --release --locked -q -p nano-vllm-harness --bin nano-vllm
out="reports/runs/check-$(date +%s)"
status=0
echo "== nano-vllm parity (every runtime, every committed fixture)"
./target/release/nano-vllm parity --out "$out/parity.json" || status=1
echo "== gate benchmark (ci/gate-bench.sh) and nano-vllm gate"
if bash ci/gate-bench.sh "$out/gate"; then
  ./target/release/nano-vllm gate --baseline reports/baseline.json --current "$out/gate" --config ci/gate.toml || status=1
else
  echo "the gate benchmark failed" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "check passed (reports in $out)" || echo "check FAILED (reports in $out)" >&2
exit "$status"

#!/usr/bin/env bash
# Refreshes the regression baseline deliberately: runs the gate's benchmark, shows how it compares with the current
# baseline (informational), then replaces reports/baseline.json. Review the comparison, then commit the new baseline
# with a message saying why it moved (a faster kernel, a new runtime version, a changed workload).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo build --release --locked -q -p nano-vllm-harness --bin nano-vllm
out="reports/runs/baseline-$(date +%s)"
bash ci/gate-bench.sh "$out"
if [ -f reports/baseline.json ]; then
  echo "== against the previous baseline (informational)"
  ./target/release/nano-vllm gate --baseline reports/baseline.json --current "$out" --config ci/gate.toml || true
fi
cp "$out/results.json" reports/baseline.json
echo "reports/baseline.json replaced by $out/results.json; review it and commit it with the reason."

#!/usr/bin/env bash
# Refreshes the regression baseline deliberately: runs the gate's benchmark three times, shows how each compares with
# the current baseline (informational), then replaces reports/baseline.json by the most typical of the three (the run
# whose relative figures stray least from the other two: a baseline should not be one run's outlier). Review the
# comparison, then commit the new baseline with a message saying why it moved (a faster kernel, a new runtime
# version, a changed workload).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo build --release --locked -q -p nano-vllm-harness --bin nano-vllm
out="reports/runs/baseline-$(date +%s)"
for i in 1 2 3; do
  bash ci/gate-bench.sh "$out/$i" > /dev/null
  if [ -f reports/baseline.json ]; then
    echo "== run $i against the previous baseline (informational)"
    ./target/release/nano-vllm gate --baseline reports/baseline.json --current "$out/$i" --config ci/gate.toml || true
  fi
done
./target/release/nano-vllm gate --config ci/gate.toml --baseline reports/baseline.json --pick-typical "$out/1,$out/2,$out/3"
echo "reports/baseline.json replaced; review it and commit it with the reason."

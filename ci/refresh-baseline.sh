#!/usr/bin/env bash
# Records or refreshes this CPU's wall-clock baseline deliberately: runs the gate's benchmark three times, shows how
# each compares with the current baselines (informational), then writes the most typical of the three (the run whose
# relative figures stray least from the other two: a baseline should not be one run's outlier) as
# reports/baselines/<this CPU's fingerprint>.json. Review the comparison, then commit the file with a message saying
# why it moved (a faster kernel, a new runtime version, a changed workload, a CPU that had none).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo build --release --locked -q -p nano-vllm-cli --bin nano-vllm
out="reports/runs/baseline-$(date +%s)"
for i in 1 2 3; do
  bash ci/gate-bench.sh "$out/$i" > /dev/null
  if ls reports/baselines/*.json >/dev/null 2>&1; then
    echo "== run $i against the previous baselines (informational)"
    "${CARGO_TARGET_DIR:-target}/release/nano-vllm" gate --baseline reports/baselines --current "$out/$i" --config ci/gate.toml || true
  fi
done
mkdir -p reports/baselines
"${CARGO_TARGET_DIR:-target}/release/nano-vllm" gate --config ci/gate.toml --baseline reports/baselines --pick-typical "$out/1,$out/2,$out/3"
echo "review the new baseline in reports/baselines/ and commit it with the reason."

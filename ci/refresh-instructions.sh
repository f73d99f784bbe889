#!/usr/bin/env bash
# Refreshes the instruction-count baseline (reports/instructions.json) deliberately, after an intended change of the
# engine, the harness or a runtime's code (or a new compiler): runs the benchmarks, shows the comparison with the old
# baseline (informational), then records the new counts. Commit the file with the reason the counts moved.
# The baseline's anchor (older counts that cumulative drift is gated against) is kept; REANCHOR=1 moves it to the new
# counts too: a deliberate step of its own (a new toolchain, or an accepted slowdown), with its reason in the commit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
# The test build's feature set (as ci/check.sh): one build of every crate.
cargo build --release --locked -q --workspace --all-targets
out="reports/runs/instructions-$(date +%s).jsonl"
bash ci/instructions-bench.sh "$out"
if [ -f reports/instructions.json ]; then
  "${CARGO_TARGET_DIR:-target}/release/nano-vllm" gate --instructions "$out" --config ci/gate.toml || true
fi
reanchor=()
[ "${REANCHOR:-0}" = 1 ] && reanchor=(--reanchor)
"${CARGO_TARGET_DIR:-target}/release/nano-vllm" gate --instructions "$out" --record "${reanchor[@]}" --config ci/gate.toml
echo "reports/instructions.json replaced; review it and commit it with the reason."

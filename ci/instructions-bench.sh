#!/usr/bin/env bash
# The instruction-count benchmarks (harness/benches/instructions.rs) under Valgrind's Callgrind: writes gungraun's
# JSON summary lines to OUT_FILE for `nano-vllm gate --instructions`. About a minute.
# Usage: bash ci/instructions-bench.sh OUT_FILE. Used by ci/check.sh and ci/refresh-instructions.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: ci/instructions-bench.sh OUT_FILE}"
mkdir -p "$(dirname "$out")"
export GUNGRAUN_RUNNER="$PWD/.tools/bin/gungraun-runner"
cargo bench --locked -q -p nano-vllm-harness --features instruction-bench --bench instructions -- \
  --output-format=json > "$out"

#!/usr/bin/env bash
# Fuzzes the parsers that read user files (fuzz/: manifest.json, config.json, GGUF, reference.safetensors) with
# libFuzzer for a bounded time: FUZZ_SECONDS per target (default 20). Stable Rust: the targets are built with
# sanitizer-coverage instrumentation (the flags cargo-fuzz passes, without its nightly-only sanitizers; debug
# assertions and overflow checks on), into target/fuzz. Each target first replays fuzz/regressions/<target>/ (every
# crash found so far), then fuzzes from seeds made from the committed fixtures. A crash fails the run, with the input
# saved under reports/runs/fuzz-*/ to add to fuzz/regressions/<target>/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
# libFuzzer reads -max_total_time=0 as "no limit": only a positive whole number of seconds.
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "ci/fuzz.sh: FUZZ_SECONDS must be a positive whole number, got '$seconds'" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# An explicit --target keeps RUSTFLAGS off the build scripts (which must not be instrumented), as cargo-fuzz does.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --locked --manifest-path fuzz/Cargo.toml --bins --target "$host"
bin="$CARGO_TARGET_DIR/$host/release"
out="reports/runs/fuzz-$(date +%s)"
mkdir -p "$out"

# Seeds: the committed fixtures' files (never the bundles ci/setup.sh may be generating beside this run), whole (a
# truncated GGUF never gets past its tensor table).
seed() {
  local target="$1" f; shift
  mkdir -p "$out/corpus/$target"
  for f in $(git ls-files "$@"); do cp "$f" "$out/corpus/$target/$(echo "$f" | tr / _)"; done
}
seed manifest 'fixtures/*/manifest.json'
seed hf_config 'fixtures/*/config.json'
seed gguf 'fixtures/*/model.q8_0.gguf'
seed reference fixtures/tiny-llama/reference.safetensors

status=0
for target in manifest hf_config gguf reference; do
  regressions=(fuzz/regressions/"$target"/*)
  if [ -e "${regressions[0]}" ]; then
    "$bin/$target" -runs=0 "${regressions[@]}" > "$out/$target-regressions.log" 2>&1 \
      || { tail -n 30 "$out/$target-regressions.log" >&2; echo "fuzz: $target fails a regression case" >&2; status=1; }
  fi
  mkdir -p "$out/artifacts/$target"
  if NANO_VLLM_FUZZ_SCRATCH="$out" "$bin/$target" "$out/corpus/$target" -max_total_time="$seconds" -max_len=1200000 -rss_limit_mb=2048 \
      -timeout=10 -artifact_prefix="$out/artifacts/$target/" -print_final_stats=1 > "$out/$target.log" 2>&1; then
    echo "fuzz: $target: $(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$out/$target.log" | grep -o '[0-9]*$') inputs in ${seconds} s, no crash"
  else
    tail -n 40 "$out/$target.log" >&2
    echo "fuzz: $target crashed; the input is in $out/artifacts/$target/ (fix it, then add it to fuzz/regressions/$target/)" >&2
    status=1
  fi
done
exit $status

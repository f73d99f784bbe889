#!/usr/bin/env bash
# AIPerf and llama-benchy (installed pinned by ci/peers.sh) against a running `nano-vllm serve`, each beside
# `nano-vllm bench --target` on the same workload against the same server, ROUNDS rounds alternating (run by
# ci/interop.sh). Checks, from each client's own export and the server's /metrics read before and after each run:
#
# - AIPerf (completions, streamed, 10 requests of 32 in / 16 out at concurrency 2, ignore_eos, token counts from
#   usage): its request count and its input and output token sums equal what the server counted, and equal those of
#   nano-vllm bench's run (10 requests, 320 in, 160 out; prompts sent as token ids, since random tokens decoded to
#   text tokenize back to other counts, where AIPerf makes text that tokenizes to exactly 32);
# - llama-benchy (chat, 32 in / 16 out with --exact-tg, 3 runs at concurrency 1 and 2, --no-cache so that no prompt
#   repeats, as none of nano-vllm bench's does: 9 measured requests after its
#   two prompt-size probes of one output token each): the server counted 9 + 2 requests and 9 x 16 + 2 output
#   tokens; nano-vllm bench's chat runs of the same shape completed 3 and 6 requests of 16 tokens;
#
# and prints the latency medians side by side (median over the rounds, min - max), not asserted: one round in CI on
# a shared machine is no place to gate a ratio. Beside them, the server's own mean TTFT and ITL during each run (from
# its /metrics histograms' sums and counts): where a client's figures differ from nano-vllm bench's, these say
# whether the server was slower during that client's run (its processes took CPU from the server on these 2 cores)
# or the client measures differently.
#
#   bash ci/clients/aiperf_and_llama_benchy.sh BIN MODEL HF_DIR PORT SERVED_NAME OUT [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="$1" model="$2" hf="$3" port="$4" name="$5" out="$6" rounds="${7:-1}"
aiperf_env=$(bash ci/peers.sh path aiperf)
benchy_env=$(bash ci/peers.sh path llama-benchy)
base="http://127.0.0.1:$port"
mkdir -p "$out"

# The server's counters (requests that finished, prompt and output tokens, its TTFT and ITL histograms' sums and
# counts) into a file.
counters() {
  curl -sf "$base/metrics" | python3 -c '
import sys
keep = {"vllm:prompt_tokens_total": "prompt", "vllm:generation_tokens_total": "output",
        "vllm:time_to_first_token_seconds_sum": "ttft_us", "vllm:time_to_first_token_seconds_count": "ttft_n",
        "vllm:inter_token_latency_seconds_sum": "itl_us", "vllm:inter_token_latency_seconds_count": "itl_n"}
c = {"prompt": 0.0, "output": 0.0, "requests": 0.0, "ttft_us": 0.0, "ttft_n": 0.0, "itl_us": 0.0, "itl_n": 0.0}
for line in sys.stdin:
    if line.startswith("#"):
        continue
    name, _, value = line.rpartition(" ")
    metric = name.split("{")[0]
    if metric in keep:
        c[keep[metric]] += float(value) * (1e6 if keep[metric].endswith("_us") else 1)
    elif metric == "vllm:request_success_total":
        c["requests"] += float(value)
print(" ".join(f"{k}={int(v)}" for k, v in c.items()))' > "$1"
}

# llama-benchy reads its "book" from ~/.cache/llama-benchy/<md5(url)>.txt before it would download it: the
# project's corpus, under a home of its own, so nothing is fetched.
book_url="https://nano-vllm.invalid/corpus.txt"
home="$out/llama-benchy-home"
mkdir -p "$home/.cache/llama-benchy"
cp fixtures/corpus.txt "$home/.cache/llama-benchy/$(printf %s "$book_url" | md5sum | cut -d' ' -f1).txt"

fail() { tail -n 30 "$1" >&2; echo "aiperf_and_llama_benchy: $2 failed (log: $1)" >&2; exit 1; }
for r in $(seq 1 "$rounds"); do
  d="$out/$r"
  mkdir -p "$d"
  counters "$d/aiperf.before"
  "$aiperf_env/bin/aiperf" profile --model "$name" --tokenizer "$hf" --url "$base" --endpoint-type completions \
    --streaming --isl 32 --isl-stddev 0 --osl 16 --extra-inputs ignore_eos:true --concurrency 2 --request-count 10 \
    --random-seed "$r" --ui-type none --no-gpu-telemetry --no-server-metrics --workers-max 1 --record-processors 1 \
    --use-server-token-count --artifact-dir "$d/aiperf" > "$d/aiperf.log" 2>&1 || fail "$d/aiperf.log" aiperf
  counters "$d/aiperf.after"
  counters "$d/nano-vllm-as-aiperf.before"
  "$bin" bench --model "$model" --target "openai:$base/v1" --served-model "$name" --max-concurrency 2 \
    --requests 10 --warmup 0 --input-len 32 --output-len 16 --prompt-format ids --seed "$r" --quiet \
    --out "$d/nano-vllm-as-aiperf" \
    > "$d/nano-vllm-as-aiperf.log" 2>&1 || fail "$d/nano-vllm-as-aiperf.log" "nano-vllm bench (completions)"
  counters "$d/nano-vllm-as-aiperf.after"

  counters "$d/llama-benchy.before"
  HOME="$home" "$benchy_env/bin/llama-benchy" --base-url "$base/v1" --model "$name" --tokenizer "$hf" \
    --book-url "$book_url" --pp 32 --tg 16 --exact-tg --runs 3 --concurrency 1 2 --skip-coherence --no-warmup --no-cache \
    --latency-mode none --format json --save-result "$d/llama-benchy.json" > "$d/llama-benchy.log" 2>&1 \
    || fail "$d/llama-benchy.log" llama-benchy
  counters "$d/llama-benchy.after"
  counters "$d/nano-vllm-as-llama-benchy.before"
  for c in 1 2; do
    "$bin" bench --model "$model" --target "openai:$base/v1" --served-model "$name" --endpoint chat \
      --max-concurrency "$c" --requests $((3 * c)) --warmup 0 --input-len 32 --output-len 16 --seed "$r" --quiet \
      --out "$d/nano-vllm-as-llama-benchy-c$c" > "$d/nano-vllm-as-llama-benchy-c$c.log" 2>&1 \
      || fail "$d/nano-vllm-as-llama-benchy-c$c.log" "nano-vllm bench (chat, concurrency $c)"
  done
  counters "$d/nano-vllm-as-llama-benchy.after"
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
problems = []
def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        problems.append(what)
def counters(path):
    return {k: int(v) for k, v in (kv.split("=") for kv in open(path).read().split())}
def delta(d, client):
    a, b = counters(f"{d}/{client}.before"), counters(f"{d}/{client}.after")
    return {k: b[k] - a[k] for k in a}
def ours(d, run):
    r = json.load(open(f"{d}/{run}/results.json"))["runs"][0]
    return r["metrics"]

rows = {}
for r in range(1, rounds + 1):
    d = f"{out}/{r}"
    a = json.load(open(f"{d}/aiperf/profile_export_aiperf.json"))
    got = {"requests": int(a["request_count"]["avg"]), "prompt": int(a["input_sequence_length"]["sum"]),
           "output": int(a["output_sequence_length"]["sum"])}
    server = delta(d, "aiperf")
    server = {k: server[k] for k in ("requests", "prompt", "output")}
    check(got == server, f"round {r}: AIPerf's counts {got} are the server's {server}")
    m = ours(d, "nano-vllm-as-aiperf")
    mine = {"requests": int(m["completed"]), "prompt": int(m["total_input_tokens"]), "output": int(m["total_output_tokens"])}
    check(mine == got == {"requests": 10, "prompt": 320, "output": 160},
          f"round {r}: nano-vllm bench's counts {mine} are AIPerf's")
    for label, theirs, key in (("TTFT p50 ms", a["time_to_first_token"]["p50"], "median_ttft_ms"),
                               ("ITL p50 ms", a["inter_token_latency"]["p50"], "median_itl_ms"),
                               ("request latency p50 ms", a["request_latency"]["p50"], "median_e2el_ms"),
                               ("output tok/s", a["output_token_throughput"]["avg"], "output_throughput")):
        rows.setdefault(("AIPerf", label), []).append((m[key], theirs))

    b = json.load(open(f"{d}/llama-benchy.json"))
    measured = {x["concurrency"]: len(x["e2e_ttft"]["values"]) for x in b["benchmarks"]}
    check(measured == {1: 3, 2: 6}, f"round {r}: llama-benchy measured 3 and 6 requests at concurrency 1 and 2 ({measured})")
    for client, run in (("AIPerf", "aiperf"), ("llama-benchy", "llama-benchy")):
        for key, label in (("ttft", "server's mean TTFT ms"), ("itl", "server's mean ITL ms")):
            theirs, mine = delta(d, run), delta(d, f"nano-vllm-as-{run}")
            mean = lambda x: x[f"{key}_us"] / 1000 / x[f"{key}_n"] if x[f"{key}_n"] else float("nan")
            rows.setdefault((client, label), []).append((mean(mine), mean(theirs)))
    server = delta(d, "llama-benchy")
    want = {"requests": 9 + 2, "output": 9 * 16 + 2}
    check({k: server[k] for k in want} == want,
          f"round {r}: the server counted llama-benchy's 9 requests of 16 tokens and its 2 one-token probes ({server})")
    for x in b["benchmarks"]:
        c = x["concurrency"]
        m = ours(d, f"nano-vllm-as-llama-benchy-c{c}")
        check(int(m["completed"]) == 3 * c and int(m["total_output_tokens"]) == 48 * c,
              f"round {r}: nano-vllm bench (chat, concurrency {c}): {int(m['completed'])} requests, "
              f"{int(m['total_output_tokens'])} output tokens")
        rows.setdefault(("llama-benchy", f"c{c} TTFT p50 ms"), []).append(
            (m["median_ttft_ms"], statistics.median(x["e2e_ttft"]["values"])))

print(f"\nnano-vllm bench vs the client on the same server and workload; median over {rounds} round(s) [min - max]:")
print(f"{'client':<14}{'metric':<26}{'nano-vllm bench':>28}{'client':>28}{'ratio':>8}")
for (client, label), pairs in rows.items():
    def cell(v):
        return f"{statistics.median(v):9.2f} [{min(v):8.2f} - {max(v):8.2f}]"
    mine, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
    ratio = statistics.median(mine) / statistics.median(theirs) if statistics.median(theirs) else float("nan")
    print(f"{client:<14}{label:<26}{cell(mine):>28}{cell(theirs):>28}{ratio:>8.2f}")
if problems:
    sys.exit(f"aiperf_and_llama_benchy: {len(problems)} check(s) failed")
print("AIPerf and llama-benchy: all checks passed")
PY

"""The same requests to vLLM and to `nano-vllm serve` on the same model: the answers must have the same shape (keys
and JSON types, recursively) and, where they are deterministic, the same values (run by ci/interop.sh).

    python ci/clients/same_as_vllm.py VLLM_URL SERVE_URL MODEL

Covers vLLM's `/tokenize` (a prompt with and without special tokens, token strings, chat messages with and without
the generation prompt) and `/detokenize`, and the status of an unknown model on both; `n` choices and lists of prompts
in `/v1/completions` and `n` in `/v1/chat/completions`, whole and streamed (the choices' indices and finish reasons,
the usage, the fields of each choice: every field nano-vllm sends, vLLM sends too, with the same JSON type); request
ids (`X-Request-Id`, the body's `request_id`). Standard library only. Prints one line per check; exits 1 if any
fails.
"""

import json
import sys
import urllib.error
import urllib.request

vllm_url, serve_url, model = sys.argv[1].rstrip("/"), sys.argv[2].rstrip("/"), sys.argv[3]
problems = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        problems.append(what)


def post(base, path, body, headers=None, raw=False):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            data = r.read()
            return (r.status, data.decode(), dict(r.headers)) if raw else (r.status, json.loads(data))
    except urllib.error.HTTPError as e:
        data = e.read()
        return (e.code, data.decode(), dict(e.headers)) if raw else (e.code, json.loads(data or b"null"))


def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [shape(v[0])] if v else []
    return type(v).__name__


text = "The capital of France is Paris. Ünïcödé, 日本語, emoji 🙂, code:\n\tdef f(x):  return x**2\n"
messages = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "What is 2 + 2?"}]
cases = [
    ("/tokenize", {"model": model, "prompt": text}),
    ("/tokenize", {"model": model, "prompt": text, "add_special_tokens": False, "return_token_strs": True}),
    ("/tokenize", {"model": model, "messages": messages}),
    ("/tokenize", {"model": model, "messages": messages, "add_generation_prompt": False}),
    ("/tokenize", {"prompt": "no model named"}),
]
for path, body in cases:
    (sv, v), (ss, s) = post(vllm_url, path, body), post(serve_url, path, body)
    what = f"{path} {json.dumps(body, ensure_ascii=False)[:90]}"
    check(sv == ss == 200, f"{what}: status vLLM {sv}, nano-vllm {ss}")
    check(shape(v) == shape(s), f"{what}: same shape {shape(s)}")
    check(v == s, f"{what}: same answer ({s.get('count')} tokens)" if v == s else f"{what}: vLLM {v} / nano-vllm {s}")

_, tokens = post(vllm_url, "/tokenize", {"model": model, "prompt": text, "add_special_tokens": False})
for body in ({"model": model, "tokens": tokens["tokens"]}, {"tokens": tokens["tokens"][:5]}):
    (sv, v), (ss, s) = post(vllm_url, "/detokenize", body), post(serve_url, "/detokenize", body)
    check(sv == ss == 200 and v == s, f"/detokenize {len(body['tokens'])} tokens: vLLM {sv} {v} / nano-vllm {ss} {s}")
check(post(serve_url, "/detokenize", {"model": model, "tokens": tokens["tokens"]})[1].get("prompt") == text,
      "/detokenize gives back the text /tokenize was given")

for path, body in (("/tokenize", {"model": "nope", "prompt": "x"}), ("/detokenize", {"model": "nope", "tokens": [1]})):
    sv, ss = post(vllm_url, path, body)[0], post(serve_url, path, body)[0]
    check(sv == ss == 404, f"{path} for an unknown model: vLLM {sv}, nano-vllm {ss}")


# n choices and lists of prompts: a fixed length (ignore_eos), so both must give the same counts; n > 1 samples
# (vLLM refuses it with greedy sampling), seeded, so the texts are not compared, only printed.
def subset_shape(ours, theirs, where):
    """Every key nano-vllm sends, vLLM sends too, with the same JSON type (recursively)."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [f"{where}: object vs {type(theirs).__name__}"]
        out = []
        for k, v in ours.items():
            if k not in theirs and k not in EXTENSIONS:
                out.append(f"{where}.{k}: not in vLLM's answer")
            elif k not in theirs:
                continue
            elif v is not None and theirs[k] is not None:
                out += subset_shape(v, theirs[k], f"{where}.{k}")
        return out
    if isinstance(ours, list):
        if not isinstance(theirs, list):
            return [f"{where}: list vs {type(theirs).__name__}"]
        return subset_shape(ours[0], theirs[0], f"{where}[0]") if ours and theirs else []
    return [] if type(ours) is type(theirs) or {type(ours), type(theirs)} <= {int, float} else \
        [f"{where}: {type(ours).__name__} vs {type(theirs).__name__}"]


# Fields nano-vllm sends that vLLM sends only when asked: usage.prompt_tokens_details (the prefix cache's hits: vLLM
# reports them with --enable-prompt-tokens-details).
EXTENSIONS = {"prompt_tokens_details"}
USAGE = ("prompt_tokens", "completion_tokens", "total_tokens")


def core(r):
    return {"object": r.get("object"), "id": r.get("id", "").split("-")[0],
            "choices": [(c["index"], c["finish_reason"]) for c in r.get("choices", [])],
            "usage": {k: (r.get("usage") or {}).get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}}


def stream_core(text):
    """A stream's chunks summed up: (index, finish) of each final chunk, the role chunks' indices, the usage."""
    chunks = [json.loads(l[6:]) for l in text.splitlines() if l.startswith("data: ") and l != "data: [DONE]"]
    finals = sorted((c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks
                    if c.get("choices") and c["choices"][0].get("finish_reason"))
    roles = [c["choices"][0]["index"] for c in chunks if c.get("choices") and c["choices"][0].get("delta", {}).get("role")]
    usage = [{k: c["usage"].get(k) for k in USAGE} for c in chunks if not c.get("choices") and c.get("usage")]
    return {"finals": finals, "roles": roles, "usage": usage, "done": text.rstrip().endswith("data: [DONE]")}, chunks


fixed = {"max_tokens": 6, "ignore_eos": True, "temperature": 0}
sampled = {**fixed, "temperature": 1.0, "seed": 5}
generate_cases = [
    ("/v1/completions", {"model": model, "prompt": "The capital of France is", "n": 3, **sampled}),
    ("/v1/completions", {"model": model, "prompt": ["Once upon a time", "def f(x):", "Paged attention"], "n": 2,
                         **sampled}),
    ("/v1/completions", {"model": model, "prompt": [[1, 2, 3], [4, 5, 6, 7]], "n": 2, **sampled}),
    ("/v1/completions", {"model": model, "prompt": ["Once upon a time", "def f(x):"], "n": 1, **fixed}),
    ("/v1/chat/completions", {"model": model, "messages": messages, "n": 2, **sampled}),
]
for path, body in generate_cases:
    what = f"{path} n={body['n']} {json.dumps(body.get('prompt', 'messages'))[:50]}"
    (sv, v), (ss, s) = post(vllm_url, path, body), post(serve_url, path, body)
    check(sv == ss == 200, f"{what}: status vLLM {sv}, nano-vllm {ss}")
    if sv == ss == 200:
        check(core(v) == core(s), f"{what}: same indices, finish reasons and usage {core(s)}"
              if core(v) == core(s) else f"{what}: vLLM {core(v)} / nano-vllm {core(s)}")
        diffs = subset_shape(s, v, "response")
        check(not diffs, f"{what}: every field of ours in vLLM's, same types" + (f": {diffs}" if diffs else ""))
        same_text = [c.get("text", c.get("message", {}).get("content")) for c in v["choices"]] == \
            [c.get("text", c.get("message", {}).get("content")) for c in s["choices"]]
        print(f"info  {what}: greedy texts {'equal' if same_text else 'differ'} between the servers")
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    (sv, v, _), (ss, s, _) = post(vllm_url, path, streamed, raw=True), post(serve_url, path, streamed, raw=True)
    (cv, chv), (cs, chs) = stream_core(v), stream_core(s)
    check(sv == ss == 200 and cv == cs, f"{what} streamed: same final chunks, role chunks and usage {cs}"
          if cv == cs else f"{what} streamed: vLLM {cv} / nano-vllm {cs}")
    diffs = subset_shape(chs[-2], chv[-2], "last chunk") if len(chs) > 1 and len(chv) > 1 else ["no chunks"]
    check(not diffs, f"{what} streamed: every field of our chunks in vLLM's" + (f": {diffs}" if diffs else ""))

# Request ids: the header wins, then the body's request_id; the response's id is the API's prefix and the id.
body = {"model": model, "prompt": "Hello", **fixed}
for headers, extra, want in (({"X-Request-Id": "interop-7"}, {}, "cmpl-interop-7"),
                             ({}, {"request_id": "body-7"}, "cmpl-body-7")):
    (_, v), (_, s) = post(vllm_url, "/v1/completions", {**body, **extra}, headers), \
        post(serve_url, "/v1/completions", {**body, **extra}, headers)
    check(v.get("id") == s.get("id") == want, f"request id {headers or extra}: vLLM {v.get('id')}, nano-vllm {s.get('id')}")
ids = {post(serve_url, "/v1/completions", body)[1]["id"] for _ in range(2)}
theirs = post(vllm_url, "/v1/completions", body)[1]["id"]
check(len(ids) == 2 and all(len(i) == len(theirs) and int(i[5:], 16) >= 0 for i in ids),
      f"fresh ids are new random hex ids of vLLM's length: {sorted(ids)} (vLLM {theirs})")

# Refused by both: a list that mixes texts and token ids.
mixed = {**body, "prompt": ["Once upon a time", [1, 2, 3]]}
sv, ss = post(vllm_url, "/v1/completions", mixed)[0], post(serve_url, "/v1/completions", mixed)[0]
check(sv == ss == 400, f"a list mixing a text and token ids: vLLM {sv}, nano-vllm {ss}")
# Refused by both, with vLLM's message.
for extra in ({"n": 0}, {"n": 2}):
    (sv, v), (ss, s) = post(vllm_url, "/v1/completions", {**body, **extra}), \
        post(serve_url, "/v1/completions", {**body, **extra})
    vm, sm = (v.get("error") or {}).get("message", ""), (s.get("error") or {}).get("message", "")
    check(sv == ss == 400 and sm in vm, f"{extra} (greedy): both 400; vLLM {vm[:100]!r}, nano-vllm {sm!r}")
# Refused by nano-vllm by name where vLLM ignores the field (printed beside vLLM's answer: see the README).
(sv, v), (ss, s) = post(vllm_url, "/v1/completions", {**body, "best_of": 2}), \
    post(serve_url, "/v1/completions", {**body, "best_of": 2})
check(ss == 400 and s["error"]["param"] == "best_of", f"best_of 2: nano-vllm 400 naming it ({s['error']['message']})")
print(f"info  best_of 2: vLLM {sv} {str(v)[:160]}")

if problems:
    print(f"{len(problems)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("all checks passed")

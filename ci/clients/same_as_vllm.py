"""The same requests to vLLM and to `nano-vllm serve` on the same model: the answers must have the same shape (keys
and JSON types, recursively) and, where they are deterministic, the same values (run by ci/interop.sh).

    python ci/clients/same_as_vllm.py VLLM_URL SERVE_URL MODEL

Covers vLLM's `/tokenize` (a prompt with and without special tokens, token strings, chat messages with and without
the generation prompt) and `/detokenize`, and the status of an unknown model on both. Standard library only. Prints
one line per check; exits 1 if any fails.
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


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


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

if problems:
    print(f"{len(problems)} check(s) failed", file=sys.stderr)
    sys.exit(1)
print("all checks passed")

"""The official `openai` Python SDK against `nano-vllm serve` (run by ci/interop.sh with the SDK vLLM pins).

    python ci/clients/openai_sdk.py BASE_URL MODEL

Completions and chat, whole and streamed (with usage), logprobs, stop strings, seeded sampling, and the errors the
SDK turns into exceptions (BadRequestError, NotFoundError). Prints one line per check; exits 1 if any fails.
"""

import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
problems = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what)
    if not cond:
        problems.append(what)


print(f"openai SDK {openai.__version__} against {base_url}")
models = client.models.list()
check([m.id for m in models.data] == [model], f"models.list: {[m.id for m in models.data]}")

c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=12, temperature=0,
                              extra_body={"ignore_eos": True})
check(c.object == "text_completion" and c.usage.completion_tokens == 12 and c.choices[0].finish_reason == "length",
      f"completions.create: {c.usage.completion_tokens} tokens, finish {c.choices[0].finish_reason}: "
      f"{c.choices[0].text!r}")
greedy = c.choices[0].text

pieces, usage, finish = [], None, None
for chunk in client.completions.create(model=model, prompt="The capital of France is", max_tokens=12, temperature=0,
                                       stream=True, stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True}):
    if chunk.choices:
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
check("".join(pieces) == greedy and usage is not None and usage.completion_tokens == 12 and finish == "length",
      f"completions streamed: the same text in {len(pieces)} chunks, usage {usage and usage.completion_tokens}")

lp = client.completions.create(model=model, prompt="One, two, three,", max_tokens=5, temperature=0, logprobs=3)
tops = lp.choices[0].logprobs.top_logprobs
check(len(lp.choices[0].logprobs.tokens) == 5 and all(len(t) == 3 for t in tops)
      and all(max(t.values()) == v for t, v in zip(tops, lp.choices[0].logprobs.token_logprobs)),
      "completions logprobs=3: the greedy token is the most likely of the top 3, every position")

words = greedy.split()
if len(words) >= 3:
    stop = " " + words[2]
    s = client.completions.create(model=model, prompt="The capital of France is", max_tokens=12, temperature=0,
                                  stop=[stop], extra_body={"ignore_eos": True})
    check(s.choices[0].finish_reason == "stop" and s.choices[0].text == greedy[:greedy.find(stop)],
          f"stop={stop!r}: text cut before it, finish {s.choices[0].finish_reason}")

a = client.completions.create(model=model, prompt="Once upon a time", max_tokens=10, temperature=0.8, seed=5)
b = client.completions.create(model=model, prompt="Once upon a time", max_tokens=10, temperature=0.8, seed=5)
check(a.choices[0].text == b.choices[0].text, "seeded sampling is reproducible")

r = client.completions.create(model=model, prompt=["Once upon a time", "The capital of France is"], n=2,
                              max_tokens=6, temperature=1.0, seed=3, extra_body={"ignore_eos": True})
check([c.index for c in r.choices] == [0, 1, 2, 3] and r.usage.completion_tokens == 24,
      f"two prompts, n=2: four choices in order, {r.usage.completion_tokens} completion tokens")
r = client.completions.create(model=model, prompt="Once upon a time", n=3, max_tokens=6, temperature=1.0, seed=9,
                              extra_headers={"X-Request-Id": "sdk-1"})
singles = [client.completions.create(model=model, prompt="Once upon a time", max_tokens=6, temperature=1.0,
                                     seed=9 + j).choices[0].text for j in range(3)]
check([c.text for c in r.choices] == singles and r.id == "cmpl-sdk-1",
      f"n=3 seeded: choice j is the request seeded seed + j; id {r.id}")

messages = [{"role": "user", "content": "What is the capital of France?"}]
r = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0)
check(r.object == "chat.completion" and r.choices[0].message.role == "assistant" and r.usage.completion_tokens > 0
      and r.choices[0].finish_reason in ("stop", "length"),
      f"chat.completions.create: {r.choices[0].finish_reason}, {r.usage.completion_tokens} tokens: "
      f"{r.choices[0].message.content!r}")
whole = r.choices[0].message.content

pieces, usage = [], None
for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
check("".join(pieces) == whole and usage is not None and usage.completion_tokens == r.usage.completion_tokens,
      f"chat streamed: the same text in {len(pieces)} chunks, usage {usage and usage.completion_tokens}")

r = client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0, logprobs=True,
                                   top_logprobs=2)
content = r.choices[0].logprobs.content
check(len(content) == 4 and all(len(c.top_logprobs) == 2 for c in content),
      "chat logprobs: 4 tokens with 2 alternatives each")

for what, call, exc in [
    ("max_tokens beyond the context", lambda: client.completions.create(model=model, prompt="hi", max_tokens=10**6),
     openai.BadRequestError),
    ("an unknown model", lambda: client.completions.create(model="no-such-model", prompt="hi", max_tokens=2),
     openai.NotFoundError),
    ("temperature -1", lambda: client.chat.completions.create(model=model, messages=messages, temperature=-1),
     openai.BadRequestError),
]:
    try:
        call()
        check(False, f"{what}: no error")
    except exc as e:
        check(isinstance(e.body, dict) and bool(e.body.get("message")),
              f"{what}: {type(e).__name__} {e.status_code}: {e.body.get('message') if isinstance(e.body, dict) else e.body}")
    except Exception as e:  # noqa: BLE001
        check(False, f"{what}: {type(e).__name__} instead of {exc.__name__}: {e}")

if problems:
    sys.exit(f"openai SDK: {len(problems)} checks failed")
print("openai SDK: all checks passed")

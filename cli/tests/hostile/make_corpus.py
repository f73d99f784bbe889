#!/usr/bin/env python3
"""Writes the hostile-input corpus: broken model files, impossible configs, bad traces, bad command lines and corrupt
baselines, each with the `nano-vllm` command that reads it and what its error must name. cli/tests/hostile.rs runs
every case and requires a non-zero exit with that error: never a panic, a signal, a hang, or a run directory replaced.

Usage: make_corpus.py OUT_DIR   (writes OUT_DIR/cases.json and the files it names; paths relative to the repo root)
Standard library only; derives every broken file from the committed fixtures/tiny-llama bundle.
"""

import json
import shutil
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
BUNDLE = REPO / "fixtures" / "tiny-llama"


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cases = []

    def case(name, args, *expect, timeout=60, ok=False, cwd=None):
        # ok: odd but valid input, which must run (and not crash, hang or allocate absurdly). cwd: where it runs (default
        # the repository root).
        cases.append({"name": name, "args": [str(a) for a in args], "expect": list(expect), "timeout_s": timeout,
                      "ok": ok, "cwd": cwd})

    def write(rel, data):
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p

    def hf_dir(name, config=None, safetensors=None, tokenizer=None, onnx=None):
        d = out / "hf" / name
        d.mkdir(parents=True, exist_ok=True)
        cfg = config if config is not None else (BUNDLE / "config.json").read_bytes()
        (d / "config.json").write_bytes(cfg if isinstance(cfg, bytes) else cfg.encode())
        st = safetensors if safetensors is not None else (BUNDLE / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(st)
        tok = tokenizer if tokenizer is not None else (BUNDLE / "tokenizer.json").read_bytes()
        (d / "tokenizer.json").write_bytes(tok if isinstance(tok, bytes) else tok.encode())
        if onnx is not None:
            (d / "model.onnx").write_bytes(onnx)
        return d

    gen = ["generate", "--prompt", "hi", "--max-tokens", "2", "--threads", "1"]

    # --- safetensors (an HF directory), for each runtime that reads it.
    st = (BUNDLE / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", st[:8])[0]
    header = json.loads(st[8 : 8 + n])
    data = st[8 + n :]

    def with_header(h):
        body = json.dumps(h).encode()
        body += b" " * (-len(body) % 8)
        return struct.pack("<Q", len(body)) + body + data

    broken = {
        "truncated": st[: len(st) // 2],
        "empty": b"",
        "header_length_huge": struct.pack("<Q", 1 << 60) + st[8:],
        "header_not_json": struct.pack("<Q", n) + b"x" * n + data,
    }
    h = json.loads(json.dumps(header))
    h["model.embed_tokens.weight"]["data_offsets"][1] += 10**9
    broken["offsets_beyond_file"] = with_header(h)
    h = json.loads(json.dumps(header))
    del h["model.layers.0.mlp.down_proj.weight"]
    broken["missing_tensor"] = with_header(h)
    h = json.loads(json.dumps(header))
    h["lm_head.weight"]["shape"] = list(reversed(h["lm_head.weight"]["shape"]))
    broken["transposed_tensor"] = with_header(h)
    h = json.loads(json.dumps(header))
    h["lm_head.weight"]["dtype"] = "BOGUS"
    broken["unknown_dtype"] = with_header(h)
    expect_st = {
        "truncated": ["model.safetensors"],
        "empty": ["model.safetensors"],
        "header_length_huge": ["model.safetensors"],
        "header_not_json": ["model.safetensors"],
        "offsets_beyond_file": ["model.safetensors", "model.embed_tokens.weight"],
        "missing_tensor": ["model.safetensors", "tensor"],
        "transposed_tensor": ["lm_head.weight"],
        "unknown_dtype": ["model.safetensors"],
    }
    for name, bytes_ in broken.items():
        d = hf_dir(f"st-{name}", safetensors=bytes_)
        for rt in ["native", "candle"]:
            case(f"safetensors {name} ({rt})", gen + ["--model", d, "--runtime", rt], *expect_st[name])

    # --- GGUF, for native (our reader) and llama.cpp.
    gguf = (BUNDLE / "model.f32.gguf").read_bytes()
    ggufs = {
        "truncated": gguf[: len(gguf) // 2],
        "header_only": gguf[:24],
        "empty": b"",
        "bad_magic": b"GGUX" + gguf[4:],
        "version_99": gguf[:4] + struct.pack("<I", 99) + gguf[8:],
        "tensor_count_huge": gguf[:8] + struct.pack("<Q", 1 << 62) + gguf[16:],
        "kv_count_huge": gguf[:16] + struct.pack("<Q", 1 << 62) + gguf[24:],
        "key_length_huge": gguf[:24] + struct.pack("<Q", 1 << 60) + gguf[32:],
    }
    for name, bytes_ in ggufs.items():
        p = write(f"gguf/{name}.gguf", bytes_)
        for rt in ["native", "llama-cpp"]:
            case(f"gguf {name} ({rt})", gen + ["--model", p, "--runtime", rt], f"{name}.gguf")

    # --- GGUF vocabularies the tokenizer cannot be built from (metadata rewritten, tensors kept).
    vocab_cases = {
        "tokenizer_model_t5": ({"tokenizer.ggml.model": (8, "t5")}, ["tokenizer.ggml.model", "'t5'"]),
        "scores_short": ({"tokenizer.ggml.model": (8, "llama"), "tokenizer.ggml.scores": (9, (6, [0.0, 1.0, 2.0]))},
                         ["tokenizer.ggml.scores", "3 entries"]),
        "scores_not_numbers": ({"tokenizer.ggml.model": (8, "llama"), "tokenizer.ggml.scores": (9, (8, ["a"] * 512))},
                               ["tokenizer.ggml.scores", "non-number"]),
        "bos_out_of_range": ({"tokenizer.ggml.add_bos_token": (7, True), "tokenizer.ggml.bos_token_id": (4, 10**6)},
                             ["BOS"]),
    }
    for name, (changes, expect) in vocab_cases.items():
        p = write(f"gguf/{name}.gguf", gguf_with_metadata(gguf, changes))
        case(f"gguf vocabulary {name}", gen + ["--model", p, "--runtime", "native"], *expect)

    # --- ONNX graph in an HF directory.
    onnx = (BUNDLE / "model.onnx").read_bytes()
    for name, bytes_ in {"truncated": onnx[: len(onnx) // 3], "garbage": b"\x08\x07" + b"\xff" * 4096, "empty": b""}.items():
        d = hf_dir(f"onnx-{name}", onnx=bytes_)
        case(f"onnx {name}", gen + ["--model", d, "--runtime", "onnx"], "model.onnx")

    # --- tokenizer.json.
    tok = (BUNDLE / "tokenizer.json").read_text()
    for name, text in {"not_json": "{oops", "empty": "", "empty_object": "{}", "truncated": tok[: len(tok) // 2]}.items():
        d = hf_dir(f"tok-{name}", tokenizer=text)
        case(f"tokenizer.json {name}", gen + ["--model", d, "--runtime", "native"], "tokenizer.json")

    # --- config.json: malformed, impossible, or asking for absurd sizes.
    cfg = json.loads((BUNDLE / "config.json").read_text())

    def config_case(name, change, *expect, ok=False, names_config=True):
        c = json.loads(json.dumps(cfg))
        if callable(change):
            change(c)
        text = change if isinstance(change, str) else json.dumps(c)
        d = hf_dir(f"cfg-{name}", config=text)
        for rt in ["native", "candle"]:
            case(f"config.json {name} ({rt})", gen + ["--model", d, "--runtime", rt], *(("config.json",) if names_config and not ok else ()),
                 *expect, ok=ok)

    config_case("not_json", "{oops")
    config_case("array", "[]")
    config_case("empty", "")
    config_case("no_model_type", lambda c: c.pop("model_type"), "model_type")
    config_case("falcon", lambda c: c.update(model_type="falcon"), "falcon")
    config_case("vocab_zero", lambda c: c.update(vocab_size=0), "vocab_size")
    config_case("vocab_string", lambda c: c.update(vocab_size="512"), "vocab_size")
    config_case("vocab_2_40", lambda c: c.update(vocab_size=1 << 40), "vocab_size")
    config_case("vocab_negative", lambda c: c.update(vocab_size=-512), "vocab_size")
    config_case("hidden_65", lambda c: c.update(hidden_size=65, head_dim=None), "hidden_size")
    config_case("layers_zero", lambda c: c.update(num_hidden_layers=0), "num_hidden_layers")
    config_case("heads_zero", lambda c: c.update(num_attention_heads=0), "num_attention_heads")
    config_case("kv_heads_3", lambda c: c.update(num_key_value_heads=3), "num_key_value_heads")
    config_case("intermediate_zero", lambda c: c.update(intermediate_size=0), "intermediate_size")
    # A context of 10^15 positions is odd but valid: runtimes must not size anything by it (a RoPE table did).
    config_case("context_petabytes", lambda c: c.update(max_position_embeddings=10**15), ok=True)
    config_case("context_zero", lambda c: c.update(max_position_embeddings=0), "max_position_embeddings")
    config_case("rope_yarn", lambda c: c.update(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}), "yarn")
    # 10^12 layers: the first layer the weights lack is named (no allocation sized by the config's count).
    config_case("layers_huge", lambda c: c.update(num_hidden_layers=10**12), "num_hidden_layers", "beyond any model")

    # --- a bundle's manifest.json, read by bench (checksums verified first) and parity.
    def bundle_case(name, change, *expect):
        d = out / "bundles" / name
        shutil.copytree(BUNDLE, d, dirs_exist_ok=True)
        m = json.loads((d / "manifest.json").read_text())
        if isinstance(change, str):
            (d / "manifest.json").write_text(change)
        else:
            change(m, d)
            (d / "manifest.json").write_text(json.dumps(m))
        run = out / "runs" / f"manifest-{name}"
        case(f"manifest {name} (bench)", ["bench", "--bundle", d, "--runtime", "mock", "--requests", "3", "--quiet",
                                            "--out", run], *expect)
        case(f"manifest {name} (parity)", ["parity", "--bundle", d, "--runtime", "native", "--threads", "1",
                                             "--out", out / "runs" / f"parity-{name}.json"], *expect)

    bundle_case("not_json", "{oops", "manifest.json")
    bundle_case("empty_object", "{}", "manifest.json")
    bundle_case("file_missing", lambda m, d: (d / "model.onnx").unlink(), "model.onnx")
    bundle_case("checksum_wrong", lambda m, d: d.joinpath("tokenizer.json").write_text(tok + " "), "tokenizer.json")
    bundle_case("path_escapes", lambda m, d: m["files"][0].update(path="../../../../etc/passwd"), "manifest.json")
    bundle_case("size_huge", lambda m, d: m["files"][0].update(size=1 << 62), m_first_path(BUNDLE))
    # The manifest's vocabulary beyond 32-bit token ids: the synthetic workload cannot draw from it.
    d = out / "bundles" / "vocab_2_40"
    shutil.copytree(BUNDLE, d, dirs_exist_ok=True)
    m = json.loads((d / "manifest.json").read_text())
    m["config"]["vocab_size"] = 1 << 40
    (d / "manifest.json").write_text(json.dumps(m))
    case("manifest vocab 2^40 (bench)", ["bench", "--bundle", d, "--runtime", "mock", "--requests", "3", "--quiet",
                                         "--out", out / "runs" / "manifest-vocab"], "vocab")
    # The manifest and config.json disagree on the context: named both, before anything runs (it failed mid-run with
    # "position 256 is beyond the model's 256 positions", naming neither).
    bundle_case("context_differs", lambda m, d: m["config"].update(context_length=4096), "config.context_length",
                "max_position_embeddings")
    bundle_case("reference_truncated", lambda m, d: d.joinpath("reference.safetensors").write_bytes(
        (BUNDLE / "reference.safetensors").read_bytes()[:1000]), "reference.safetensors")

    # --- engine settings that cannot work.
    def bench(name, extra, *expect, **kw):  # noqa: E306
        case(name, ["bench", "--runtime", "mock", "--requests", "4", "--quiet", "--out", out / "runs" / name.replace(" ", "_")]
             + extra, *expect, **kw)

    def cli(name, extra, *expect):
        case(name, ["bench", "--requests", "4", "--quiet", "--out", out / "runs" / name.replace(" ", "_")] + extra, *expect)

    bench("block size 0", ["--block-size", "0"], "block")
    bench("max num seqs 0", ["--max-num-seqs", "0"], "--max-num-seqs")
    bench("kv blocks 0", ["--kv-blocks", "0"], "--kv-blocks")
    bench("max batched tokens 0", ["--max-num-batched-tokens", "0"], "--max-num-batched-tokens")
    bench("max model len 0", ["--max-model-len", "0"], "--max-model-len")
    bench("kv blocks 1e15", ["--kv-blocks", "1000000000000000"], "--kv-blocks")
    bench("kv blocks usize max", ["--kv-blocks", "18446744073709551615"], "--kv-blocks")
    bench("max num seqs 1e12", ["--max-num-seqs", "1000000000000"], "--max-num-seqs")
    bench("block size usize max", ["--block-size", "18446744073709551615"], "--block-size")
    bench("max model len usize max", ["--max-model-len", "18446744073709551615"], "--max-model-len")
    bench("requests 0", ["--requests", "0"], "--requests")
    bench("requests 1e12", ["--requests", "1000000000000"], "--requests")
    # A shared prefix longer than every prompt is cut to each prompt: valid, and nothing absurd is allocated.
    bench("prefix len 1e12", ["--prefix-len", "1000000000000"], ok=True)
    bench("warmup 1e12", ["--warmup", "1000000000000"], "--warmup")
    bench("input len reversed", ["--input-len", "uniform:50:5"], "uniform:50:5")
    bench("input len negative std", ["--input-len", "normal:20:-3"], "normal:20:-3")
    bench("input len empty hist", ["--input-len", "hist:"], "hist:")
    bench("output len huge", ["--output-len", "18446744073709551615"], "output (18446744073709551615)", "context")
    bench("rate sweep zero", ["--rate-sweep", "0"], "rate")
    bench("percentile 101", ["--percentiles", "101"], "--percentiles")
    bench("slo negative", ["--slo", "ttft=-5ms"], "ttft=-5ms")
    bench("slo unknown metric", ["--slo", "latency=5ms"], "latency")
    bench("max concurrency 0", ["--max-concurrency", "0"], "--max-concurrency")
    bench("request timeout 0", ["--request-timeout", "0"], "--request-timeout")
    bench("request timeout nan", ["--request-timeout", "NaN"], "--request-timeout")
    bench("target not a url", ["--target", "openai:not a url", "--served-model", "m"], "not a url")
    bench("target unknown scheme", ["--target", "grpc://127.0.0.1:1", "--served-model", "m"], "grpc://127.0.0.1:1")
    bench("fleet without target", ["--fleet", "f"], "--target")
    bench("threads 1e6", ["--threads", "1000000"], "at most 1024")
    bench("rate negative", ["--mode", "online", "--rate", "-1"], "rate")
    # Held-out classes: arrivals that cannot be drawn, lengths whose sum overflows, flags that would be ignored.
    bench("rate 1e308 regular", ["--mode", "online", "--rate", "1e308", "--burstiness", "4"], "gaps too small")
    case("workload rate 1e308 regular", ["workload", "--out", out / "w-rate.jsonl", "--rate", "1e308", "--burstiness",
                                         "4"], "gaps too small")
    # Gaps of ~1e-308 s: silly but drawable, so it runs.
    bench("rate 1e308 bursty", ["--mode", "online", "--rate", "1e308", "--burstiness", "0.5"], ok=True)
    bench("input len usize max", ["--input-len", "18446744073709551615"], "context")
    case("workload input len usize max", ["workload", "--out", out / "w-len.jsonl", "--input-len",
                                          "18446744073709551615"], "context")
    bench("rate 0 offline", ["--rate", "0"], "--mode online")
    bench("burstiness offline", ["--burstiness", "2"], "--mode online")
    bench("baseline not a row", ["--baseline", "native"], "--baseline native", "mock")
    cli("unknown runtime", ["--runtime", "tensorrt"], "tensorrt")
    cli("unknown runtime option", ["--runtime", "native:bogus"], "bogus")
    cli("mock option not a number", ["--runtime", "mock:delay-us=abc"], "abc")
    cli("mock option negative", ["--runtime", "mock:fail-at=-1"], "-1")
    cli("mock delay absurd", ["--runtime", "mock:delay-us=100000000000"], "delay-us")
    cli("llama-cpp unknown variant", ["--runtime", "llama-cpp:q9_9"], "q9_9")
    cli("runtime list with an option that is no runtime", ["--runtime", "native:q8_0,tensorrt"], "tensorrt")
    cli("two storages of one runtime", ["--runtime", "native:q8_0,q4_0"], "q4_0")

    # --- quality corpora.
    def quality(name, extra, *expect):
        case(name, ["quality", "--runtime", "native", "--out", out / "quality" / f"{name.replace(' ', '_')}.json"]
             + extra, *expect)

    quality("quality corpus not utf-8", ["--corpus", write("quality/latin1.txt", "caf\xe9 ".encode("latin-1") * 400)],
            "latin1.txt", "UTF-8")
    quality("quality corpus empty", ["--corpus", write("quality/empty.txt", "")], "fewer than one chunk")
    quality("quality corpus a directory", ["--corpus", out], "reading the corpus")
    quality("quality ctx 0", ["--ctx", "0"], "--ctx")
    quality("quality ctx huge", ["--ctx", "18446744073709551615"], "--ctx")
    quality("quality chunks 0", ["--chunks", "0"], "--chunks")
    quality("quality base not scored", ["--base", "candle"], "--base candle")

    # Saved bases (--base-file): a file that is not one, damaged ones, and whole ones saved for other chunks.
    def base_file(name, rows, trailer):
        body = json.dumps(trailer).encode()
        return write(f"quality/{name}.kld", rows + body + struct.pack("<Q", len(body)) + b"NVQBASE1")

    def trailer(**kw):
        t = {"base": "native", "model": "tiny-llama", "model_sha256": None,
             "corpus": {"name": "fixtures/corpus.txt", "sha256": "0", "tokens": 300, "ctx": 256, "chunks": 1,
                        "first_scored": 128, "scored_tokens": 127},
             "chunk_xxh64": ["0000000000000000"], "vocab_size": 2, "nll": [1.0] * 127}
        t.update(kw)
        return t

    whole = b"\0" * (127 * 2 * 4)
    quality("quality base file not one", ["--base-file", BUNDLE / "config.json"], "config.json", "not a base file")
    quality("quality base file empty", ["--base-file", write("quality/empty.kld", b"")], "not a base file")
    quality("quality base file trailer length", ["--base-file", write("quality/len.kld", struct.pack("<Q", 1 << 62)
                                                 + b"NVQBASE1")], "not a base file", "trailer")
    quality("quality base file trailer garbage", ["--base-file", write("quality/garbage.kld", b"{not json"
                                                  + struct.pack("<Q", 9) + b"NVQBASE1")], "does not parse")
    quality("quality base file truncated", ["--base-file", base_file("truncated", whole[:-4], trailer())],
            "truncated or damaged")
    quality("quality base file other ctx", ["--base-file", base_file("ctx", whole, trailer()), "--ctx", "128"],
            "another --ctx")
    quality("quality base file fewer chunks", ["--base-file", base_file("fewer", whole, trailer()), "--chunks", "2"],
            "more chunks than it saved")
    quality("quality base file other tokens", ["--base-file", base_file("tokens", whole, trailer()), "--chunks", "1"],
            "chunk 0 has other tokens")
    quality("quality base file and base", ["--base-file", base_file("both", whole, trailer()), "--base", "native"],
            "--base")
    quality("quality save base nowhere", ["--save-base", out / "no-such-dir" / "base.kld"], "no-such-dir",
            "writing the base's logits")

    # --- traces.
    def trace(name, text, *expect, mode=None):
        p = write(f"traces/{name}.jsonl", text)
        extra = ["--workload", p, "--warmup", "0"] + (["--mode", mode] if mode else [])
        bench(f"trace {name}", extra, *expect)
        return p

    trace("invalid_json", '{"prompt_ids": [5], "max_tokens": 4}\n{oops\n', "invalid_json.jsonl:2")
    trace("nan_arrival", '{"arrival_s": NaN, "prompt_ids": [5], "max_tokens": 4}\n', "nan_arrival.jsonl:1")
    trace("negative_arrival", '{"arrival_s": -1, "prompt_ids": [5], "max_tokens": 4}\n', "arrival_s")
    trace("arrival_1e300", '{"arrival_s": 1e300, "prompt_ids": [5], "max_tokens": 4}\n', "arrives at", mode="online")
    trace("token_outside_vocab", '{"prompt_ids": [512], "max_tokens": 4}\n', "token id 512")
    trace("token_negative", '{"prompt_ids": [-1], "max_tokens": 4}\n', "token_negative.jsonl:1")
    trace("token_u32_overflow", '{"prompt_ids": [4294967296], "max_tokens": 4}\n', "token_u32_overflow.jsonl:1")
    trace("prompt_ids_string", '{"prompt_ids": "abc", "max_tokens": 4}\n', "prompt_ids_string.jsonl:1")
    trace("empty_prompt_ids", '{"prompt_ids": [], "max_tokens": 4}\n', "prompt_ids")
    trace("empty_text", '{"prompt": "", "max_tokens": 4}\n', "empty")
    trace("no_prompt", '{"max_tokens": 4}\n', "no_prompt.jsonl:1")
    trace("both_prompts", '{"prompt": "hi", "prompt_ids": [5], "max_tokens": 4}\n', "both_prompts.jsonl:1")
    trace("max_tokens_zero", '{"prompt_ids": [5], "max_tokens": 0}\n', "max_tokens")
    trace("max_tokens_1e9", '{"prompt_ids": [5], "max_tokens": 1000000000}\n', "context")
    trace("max_tokens_negative", '{"prompt_ids": [5], "max_tokens": -1}\n', "max_tokens_negative.jsonl:1")
    trace("no_max_tokens", '{"prompt_ids": [5]}\n', "max_tokens")
    trace("top_p_2", '{"prompt_ids": [5], "max_tokens": 4, "top_p": 2}\n', "top_p")
    trace("temperature_negative", '{"prompt_ids": [5], "max_tokens": 4, "temperature": -1}\n', "temperature")
    trace("null_line", "null\n", "null_line.jsonl:1")
    trace("array_line", "[]\n", "array_line.jsonl:1", "found an array")
    trace("object_expected_number", "5\n", "object_expected_number.jsonl:1", "found a number")
    trace("empty_file", "", "holds no request")
    trace("blank_lines", "\n\n   \n", "holds no request")
    trace("binary", "\x00\x01\x02\xff\xfe", "binary.jsonl")
    write("traces/invalid_utf8.jsonl", b'{"prompt": "\xff\xfe", "max_tokens": 4}\n')
    bench("trace invalid_utf8", ["--workload", out / "traces/invalid_utf8.jsonl", "--warmup", "0"], "invalid_utf8.jsonl")
    write("traces/one_long_line.jsonl", b'{"prompt_ids": [' + b"5, " * (3 << 20) + b'5], "max_tokens": 4}')
    bench("trace one long line", ["--workload", out / "traces/one_long_line.jsonl", "--warmup", "0"], "context")
    # A byte-order mark before the first line (Windows editors write one) is not JSON: skipped, the trace runs.
    write("traces/bom.jsonl", b'\xef\xbb\xbf{"prompt_ids": [5, 6], "max_tokens": 2}\n')
    bench("trace with a BOM", ["--workload", out / "traces/bom.jsonl", "--warmup", "0"], ok=True)
    bench("trace is /dev/zero", ["--workload", "/dev/zero", "--warmup", "0"], "/dev/zero:1", "without a newline", timeout=30)
    bench("trace is a directory", ["--workload", out / "traces", "--warmup", "0"], "traces")
    bench("trace missing", ["--workload", out / "traces/nope.jsonl"], "nope.jsonl")

    # --- where results go: an earlier run is never replaced, an unwritable place is found before the run.
    good = out / "runs" / "good"
    write("runs/good/results.json", (REPO / "cli/tests/data/ab/a/results.json").read_bytes())
    case("out holds a run", ["bench", "--runtime", "mock", "--requests", "3", "--quiet", "--out", good], "already holds a run")
    write("runs/file", "x")
    case("out below a file", ["bench", "--runtime", "mock", "--requests", "3", "--quiet", "--out", out / "runs/file/x"],
         "--out")
    case("report out is the run", ["report", good, "--out", good], "is the run directory")
    case("workload out below a file", ["workload", "--out", out / "runs/file/w.jsonl", "--requests", "3"], "w.jsonl")
    case("workload requests 1e12", ["workload", "--out", out / "w.jsonl", "--requests", "1000000000000"], "--requests")

    # --- results and baselines read back.
    results = json.loads((REPO / "cli/tests/data/ab/a/results.json").read_text())
    for name, text in {
        "not_json": "{oops",
        "truncated": json.dumps(results)[:500],
        "schema_99": json.dumps({**results, "schema_version": 99}),
        "runs_not_array": json.dumps({**results, "runs": 5}),
    }.items():
        run = write(f"results/{name}/results.json", text).parent
        case(f"report results {name}", ["report", run, "--out", out / "runs" / f"report-{name}"], "results.json")
        base = out / "baselines" / name
        base.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "results.json", base / "bad.json")
        case(f"gate baseline {name}", ["gate", "--baseline", base, "--current", REPO / "cli/tests/data/ab/a"],
             "bad.json")
    instr = write("instructions/bad.jsonl", '{"oops\n')
    case("gate instructions corrupt", ["gate", "--instructions", instr], "bad.jsonl")
    case("gate baseline missing", ["gate", "--baseline", out / "nope", "--current", good], "nope")

    # --- serve settings.
    serve = ["serve", "--model", "fixtures/tiny-llama", "--runtime", "mock"]
    case("serve port out of range", serve + ["--port", "70000"], "70000")
    case("serve host not an address", serve + ["--host", "not an address", "--port", "0"],
         "not an address", timeout=30)
    case("serve max pending 0", serve + ["--max-pending", "0", "--port", "0"], "--max-pending",
         timeout=30)

    # --- simulate: the engine on the mock, with its own flags.
    sim = ["simulate", "--requests", "4"]
    case("simulate vocab 0", sim + ["--vocab", "0"], "--vocab")
    case("simulate kv blocks near 2^32", sim + ["--kv-blocks", "4294967294"], "--kv-blocks")
    case("simulate prompt len usize max", sim + ["--prompt-len", "18446744073709551615"], "--prompt-len")
    case("simulate shared prefix beyond prompt", sim + ["--shared-prefix", "100", "--prompt-len", "10"], "--shared-prefix")
    # generate: a --max-tokens that would wrap a sum.
    case("generate max tokens usize max", ["generate", "--prompt", "hi", "--max-tokens", "18446744073709551615"],
         "exceeds the model's context")
    # report: a results.json named bare, from inside its run directory, written over with --out .
    case("report bare results.json over its own run", ["report", "results.json", "--out", "."], "is the run directory",
         cwd=str(good))

    (out / "cases.json").write_text(json.dumps(cases, indent=1))
    print(f"{len(cases)} cases in {out / 'cases.json'}")


# GGUF value types (gguf-py's GGUFValueType): fixed-size scalars by struct format.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _gguf_value(buf: bytes, at: int, kind: int):
    """One value of type `kind` at `at`: (value, next offset). Arrays are (item kind, [items])."""
    if kind in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[kind]
        return struct.unpack_from(fmt, buf, at)[0], at + struct.calcsize(fmt)
    if kind == 8:
        (n,) = struct.unpack_from("<Q", buf, at)
        return buf[at + 8 : at + 8 + n].decode("utf-8"), at + 8 + n
    if kind == 9:
        item, count = struct.unpack_from("<IQ", buf, at)
        at += 12
        items = []
        for _ in range(count):
            v, at = _gguf_value(buf, at, item)
            items.append(v)
        return (item, items), at
    raise ValueError(f"GGUF value type {kind}")


def _gguf_encode(kind: int, value) -> bytes:
    if kind in _GGUF_SCALARS:
        return struct.pack(_GGUF_SCALARS[kind], value)
    if kind == 8:
        raw = value.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw
    item, items = value
    return struct.pack("<IQ", item, len(items)) + b"".join(_gguf_encode(item, v) for v in items)


def gguf_with_metadata(gguf: bytes, changes: dict) -> bytes:
    """`gguf` (version 3) with the metadata keys in `changes` ({key: (type, value)}) set or added, tensors kept:
    the tensor data moves with the header, and its offsets are relative to it."""
    _, _, n_tensors, n_kv = struct.unpack_from("<IIQQ", gguf, 0)
    at, kvs = 24, {}
    for _ in range(n_kv):
        key, at = _gguf_value(gguf, at, 8)
        (kind,) = struct.unpack_from("<I", gguf, at)
        value, at = _gguf_value(gguf, at + 4, kind)
        kvs[key] = (kind, value)
    infos_start = at
    for _ in range(n_tensors):
        _, at = _gguf_value(gguf, at, 8)
        (dims,) = struct.unpack_from("<I", gguf, at)
        at += 4 + 8 * dims + 4 + 8
    infos = gguf[infos_start:at]
    align = kvs.get("general.alignment", (4, 32))[1]
    data = gguf[at + (-at % align) :]
    kvs.update(changes)
    head = struct.pack("<IIQQ", 0x46554747, 3, n_tensors, len(kvs))
    for key, (kind, value) in kvs.items():
        head += _gguf_encode(8, key) + struct.pack("<I", kind) + _gguf_encode(kind, value)
    head += infos
    return head + b"\0" * (-len(head) % align) + data


def m_first_path(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["files"][0]["path"]


if __name__ == "__main__":
    main()

"""Makes the tiny ONNX graphs of the error tests (tests/errors.rs): causal-LM look-alikes missing what
nano-vllm-onnx needs. Run from the repo root: .venv/bin/python runtimes/onnx/tests/data/make_graphs.py
(needs the `onnx` package of fixtures/requirements.txt). The outputs are deterministic and committed."""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).parent
VOCAB, KV_HEADS, HEAD_DIM = 8, 1, 2


def tensor(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def save(name, inputs, outputs, nodes):
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="make_graphs.py",
                             ir_version=10)
    onnx.checker.check_model(model)
    (HERE / f"{name}.onnx").write_bytes(model.SerializeToString(deterministic=True))


def logits_from_ids():
    """logits[b, s, v] = float(input_ids[b, s]) broadcast over a vocab of VOCAB."""
    return [
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["ids_f", "axis2"], ["ids_3d"]),
        helper.make_node("Expand", ["ids_3d", "vocab_shape"], ["logits"]),
    ]


def constants():
    return [
        helper.make_node("Constant", [], ["axis2"], value=helper.make_tensor("a", TensorProto.INT64, [1], [2])),
        helper.make_node("Constant", [], ["vocab_shape"],
                         value=helper.make_tensor("v", TensorProto.INT64, [3], [1, 1, VOCAB])),
    ]


ids = tensor("input_ids", TensorProto.INT64, ["batch", "seq"])
mask = tensor("attention_mask", TensorProto.INT64, ["batch", "total"])
pos = tensor("position_ids", TensorProto.INT64, ["batch", "seq"])
logits = tensor("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB])
past_k = tensor("past_key_values.0.key", TensorProto.FLOAT, ["batch", KV_HEADS, "past", HEAD_DIM])
past_v = tensor("past_key_values.0.value", TensorProto.FLOAT, ["batch", KV_HEADS, "past", HEAD_DIM])
present_k = tensor("present.0.key", TensorProto.FLOAT, ["batch", KV_HEADS, "past", HEAD_DIM])
present_v = tensor("present.0.value", TensorProto.FLOAT, ["batch", KV_HEADS, "past", HEAD_DIM])
passthrough = [helper.make_node("Identity", ["past_key_values.0.key"], ["present.0.key"]),
               helper.make_node("Identity", ["past_key_values.0.value"], ["present.0.value"])]

# Exported without a KV cache: no past inputs, no present outputs.
save("no_kv_cache", [ids, mask, pos], [logits], constants() + logits_from_ids())
# A KV cache but no position_ids input.
save("no_position_ids", [ids, mask, past_k, past_v], [logits, present_k, present_v],
     constants() + logits_from_ids() + passthrough)

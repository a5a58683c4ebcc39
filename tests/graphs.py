"""Small ONNX graphs shaped like what third-party exporters write, built with onnx.helper: weights in
Constant nodes and BatchNormalization left unfolded (Paddle2ONNX), recurrent state inputs without a batch
axis, a batch fixed by the graph, integer inputs indexing a table, a graph already quantized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(7)


def _w(*shape) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.3).astype(np.float32)


def _save(graph: onnx.GraphProto, path: Path, opset: int = 13) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


_info = helper.make_tensor_value_info


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def paddle_like_cnn(path: Path, batch: int | str = "N", opset: int = 11) -> Path:
    """Conv -> BatchNormalization -> Relu, twice, then Flatten -> Gemm, every weight in a Constant node, an
    Identity on the way, one weight stored twice under two names."""
    nodes, shared = [], _w(8, 8, 3, 3)
    nodes += [_constant("c1.w", _w(8, 3, 3, 3)), _constant("c2.w", _w(8, 8, 3, 3)), _constant("c3.w", shared),
              _constant("c4.w", shared.copy()),
              _constant("fc.w", _w(8 * 8 * 8, 10)), _constant("fc.b", _w(10))]
    for i in (1, 2):
        nodes += [_constant(f"bn{i}.{k}", v) for k, v in
                  (("s", 1 + _w(8)), ("b", _w(8)), ("m", _w(8)), ("v", np.abs(1 + _w(8)).astype(np.float32)))]
    nodes += [
        helper.make_node("Conv", ["x", "c1.w"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1.s", "bn1.b", "bn1.m", "bn1.v"], ["b1"]),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("Identity", ["r1"], ["i1"]),
        helper.make_node("Conv", ["i1", "c2.w"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "bn2.s", "bn2.b", "bn2.m", "bn2.v"], ["b2"]),
        helper.make_node("Relu", ["b2"], ["r2"]),
        helper.make_node("Conv", ["r2", "c3.w"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c3", "c4.w"], ["c4"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c4"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "paddle_like", [_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [_info("y", TensorProto.FLOAT, [batch, 10])])
    return _save(graph, path, opset)


def stateful(path: Path) -> Path:
    """One recurrent step: y, h' = f(input, h); `input: [batch, 16]`, the state `h: [1, 1, 8]` has no batch
    axis (it is broadcast over the batch, as a streaming audio model's state is)."""
    nodes = [
        helper.make_node("MatMul", ["input", "wx"], ["ax"]),
        helper.make_node("Reshape", ["h", "flat"], ["h2"]),
        helper.make_node("MatMul", ["h2", "wh"], ["ah"]),
        helper.make_node("Add", ["ax", "ah"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["y"]),
        helper.make_node("ReduceMean", ["y"], ["hm"], axes=[0], keepdims=1),
        helper.make_node("Reshape", ["hm", "state"], ["hn"]),
    ]
    inits = [numpy_helper.from_array(_w(16, 8), "wx"), numpy_helper.from_array(_w(8, 8), "wh"),
             numpy_helper.from_array(np.array([1, 8], np.int64), "flat"),
             numpy_helper.from_array(np.array([1, 1, 8], np.int64), "state")]
    graph = helper.make_graph(nodes, "stateful", [_info("input", TensorProto.FLOAT, ["batch", 16]),
                                                  _info("h", TensorProto.FLOAT, [1, 1, 8])],
                              [_info("y", TensorProto.FLOAT, ["batch", 8]), _info("hn", TensorProto.FLOAT, [1, 1, 8])],
                              inits)
    return _save(graph, path)


def byte_embedding(path: Path, table: int = 257, length: int = 32) -> Path:
    """Integer inputs (bytes 0..256) into an embedding table, then a small MatMul head: values of 257 and
    above would make Gather fail."""
    nodes = [
        helper.make_node("Gather", ["emb", "bytes"], ["e"]),
        helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["y"]),
    ]
    inits = [numpy_helper.from_array(_w(table, 64), "emb"), numpy_helper.from_array(_w(64, 8), "w")]
    graph = helper.make_graph(nodes, "bytes", [_info("bytes", TensorProto.INT32, ["batch", length])],
                              [_info("y", TensorProto.FLOAT, ["batch", 8])], inits)
    return _save(graph, path)


def already_quantized(path: Path) -> Path:
    """A MatMul dynamically quantized the way onnxruntime's quantize_dynamic writes it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = path.with_suffix(".float.onnx")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    inits = [numpy_helper.from_array(_w(64, 128), "w1"), numpy_helper.from_array(_w(128, 16), "w2")]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], inits)
    _save(graph, src)
    quantize_dynamic(str(src), str(path), weight_type=QuantType.QInt8)
    src.unlink()
    return path


def integer_features(path: Path) -> Path:
    """Integer inputs the graph only casts to float: nothing in it says which values they take."""
    nodes = [helper.make_node("Cast", ["counts"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["f", "w"], ["y"])]
    graph = helper.make_graph(nodes, "counts", [_info("counts", TensorProto.INT64, ["batch", 4])],
                              [_info("y", TensorProto.FLOAT, ["batch", 2])], [numpy_helper.from_array(_w(4, 2), "w")])
    return _save(graph, path)


def conv_lstm(path: Path, hidden: int = 32) -> Path:
    """A CRNN text recognizer in miniature: Conv -> Relu over `[batch, 1, 8, width]`, the columns as a sequence
    into a bidirectional LSTM (most of the weights), then a per-step MatMul to 10 classes."""
    c = 8
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[2], keepdims=0, name="pool"),  # [batch, c, width]
        helper.make_node("Transpose", ["m"], ["seq"], perm=[2, 0, 1], name="to_sequence"),  # [width, batch, c]
        helper.make_node("LSTM", ["seq", "lw", "lr", "lb"], ["h"], hidden_size=hidden, direction="bidirectional",
                         name="lstm"),  # [width, 2, batch, hidden]
        helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1, 3], name="steps"),
        helper.make_node("Reshape", ["ht", "flat"], ["hf"], name="join_directions"),
        helper.make_node("MatMul", ["hf", "fc"], ["y"], name="classes"),
    ]
    inits = [numpy_helper.from_array(_w(c, 1, 3, 3), "cw"), numpy_helper.from_array(_w(2, 4 * hidden, c), "lw"),
             numpy_helper.from_array(_w(2, 4 * hidden, hidden) * 0.5, "lr"),
             numpy_helper.from_array(_w(2, 8 * hidden) * 0.1, "lb"),
             numpy_helper.from_array(np.array([0, 0, 2 * hidden], np.int64), "flat"),
             numpy_helper.from_array(_w(2 * hidden, 10), "fc")]
    graph = helper.make_graph(nodes, "crnn", [_info("x", TensorProto.FLOAT, ["batch", 1, 8, "width"])],
                              [_info("y", TensorProto.FLOAT, ["width", "batch", 10])], inits)
    return _save(graph, path)


def outlier_block(path: Path, width: int = 64, post_norm: bool = False) -> Path:
    """A transformer feed-forward block whose activations have outlier channels, as trained transformers'
    do: LayerNormalization (a few channels' scale 40x the rest) -> MatMul -> Relu -> MatMul, plus the residual.
    Pre-norm: the residual is the block's input and the normalized tensor feeds only the first MatMul.
    Post-norm (BERT): the residual is the normalized tensor itself, so it also feeds the Add."""
    rng = np.random.default_rng(3)
    gamma = np.ones(width, np.float32)
    gamma[[3, 17, 40]] = 40.0
    w1 = (rng.standard_normal((width, 2 * width)) * 0.1).astype(np.float32)
    w1[:, [5, 9]] *= 20  # two hidden channels run hot after the Relu too
    w2 = (rng.standard_normal((2 * width, width)) * 0.1).astype(np.float32)
    residual = "n" if post_norm else "x"
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], axis=-1, name="norm"),
        helper.make_node("MatMul", ["n", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="act"),
        helper.make_node("MatMul", ["a", "w2"], ["o"], name="fc2"),
        helper.make_node("Add", ["o", residual], ["y"], name="residual"),
    ]
    inits = [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(_w(width) * 0.1, "beta"),
             numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    graph = helper.make_graph(nodes, "block", [_info("x", TensorProto.FLOAT, ["batch", 16, width])],
                              [_info("y", TensorProto.FLOAT, ["batch", 16, width])], inits)
    return _save(graph, path, opset=17)

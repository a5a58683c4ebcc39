"""A thin editable view of an ONNX graph for the steps that rewrite weights and wiring.

It indexes producers, consumers and constants, and knows which nodes multiply their input by a
constant weight (`WeightOp`: Gemm, MatMul with a constant right-hand side, Conv) and along which
axes of the weight the output and input channels lie.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


@dataclass
class WeightOp:
    """A node computing `input x weight` with a constant weight."""

    node: onnx.NodeProto
    weight: str  # initializer name
    out_axis: int  # axis of the weight that indexes output channels
    in_axis: int  # axis that indexes input channels (Conv: also the kernel dims follow)
    bias: str | None  # per-output-channel bias initializer (Gemm C, Conv B, or an Add right after a MatMul)
    output: str  # the tensor after the bias, where the output channels continue
    kind: str  # "linear" | "conv"

    @property
    def name(self) -> str:
        return self.node.name or self.node.output[0]


class Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.reindex()

    @classmethod
    def load(cls, path: Path) -> Graph:
        return cls(onnx.load(str(path)))

    def save(self, path: Path) -> Path:
        # shapes recorded for intermediate tensors may be stale after an edit; runtimes infer them again
        del self.g.value_info[:]
        onnx.save(self.model, str(path))
        return path

    def reindex(self) -> None:
        self.inits = {t.name: t for t in self.g.initializer}
        self.constants = {n.output[0]: n for n in self.g.node if n.op_type == "Constant"}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in self.g.output}

    # -- constants
    def is_const(self, name: str) -> bool:
        return name in self.inits or name in self.constants

    def array(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.constants.get(name)
        if node is not None:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def set_array(self, name: str, value: np.ndarray) -> None:
        """Replaces a constant's value (a Constant node becomes an initializer)."""
        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        if name in self.inits:
            self.inits[name].CopyFrom(tensor)
            return
        node = self.constants.pop(name, None)
        if node is not None:
            self.g.node.remove(node)
        self.g.initializer.append(tensor)
        self.inits[name] = self.g.initializer[-1]

    def add_initializer(self, name: str, value: np.ndarray) -> str:
        name = self.unique(name)
        self.g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        self.inits[name] = self.g.initializer[-1]
        return name

    def unique(self, base: str) -> str:
        taken = set(self.inits) | set(self.producer) | {i.name for i in self.g.input}
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        return name

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    # -- weight-bearing nodes
    def weight_ops(self) -> list[WeightOp]:
        ops = []
        for n in self.g.node:
            op = self._weight_op(n)
            if op is not None:
                ops.append(op)
        return ops

    def _weight_op(self, n: onnx.NodeProto) -> WeightOp | None:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Gemm" and len(n.input) >= 2 and n.input[1] in self.inits:
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                return None
            trans_b = attrs.get("transB", 0)
            bias = n.input[2] if len(n.input) > 2 and n.input[2] in self.inits else None
            if bias is not None and self.array(bias).ndim != 1:
                return None
            return WeightOp(n, n.input[1], 0 if trans_b else 1, 1 if trans_b else 0, bias, n.output[0], "linear")
        if n.op_type == "MatMul" and n.input[1] in self.inits and self.inits[n.input[1]].data_type in FLOAT_TYPES:
            w = self.inits[n.input[1]]
            if len(w.dims) != 2:
                return None
            bias, out = None, n.output[0]
            add = self.only_consumer(out)
            if add is not None and add.op_type == "Add":
                other = add.input[1] if add.input[0] == out else add.input[0]
                b = self.array(other) if other in self.inits else None
                if b is not None and b.shape == (w.dims[1],):
                    bias, out = other, add.output[0]
            return WeightOp(n, n.input[1], 1, 0, bias, out, "linear")
        if n.op_type == "Conv" and n.input[1] in self.inits and attrs.get("group", 1) == 1:
            bias = n.input[2] if len(n.input) > 2 and n.input[2] else None
            return WeightOp(n, n.input[1], 0, 1, bias, n.output[0], "conv")
        return None

    def remove(self, nodes: list[onnx.NodeProto]) -> None:
        for n in nodes:
            self.g.node.remove(n)
        self.reindex()

    def rename_input(self, old: str, new: str) -> None:
        """Every consumer of `old` reads `new` instead (graph outputs included)."""
        for n in self.g.node:
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = new
        for o in self.g.output:
            if o.name == old:
                o.name = new
        self.reindex()

    def drop_unused(self) -> None:
        """Removes nodes and initializers nothing reads any more."""
        needed = set(self.outputs)
        for n in reversed(list(self.g.node)):
            if any(o in needed for o in n.output):
                needed.update(n.input)
            else:
                self.g.node.remove(n)
        for t in list(self.g.initializer):
            if t.name not in needed:
                self.g.initializer.remove(t)
        self.reindex()


def matches(name: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, g) for g in globs)


def classifier_ops(graph: Graph, ops: list[WeightOp]) -> set[str]:
    """The final classifier / projection: for each graph output, the last weight op (in graph order)
    it depends on. Shrinking steps keep these by default."""
    order = {id(n): i for i, n in enumerate(graph.g.node)}
    by_node = {id(op.node): op for op in ops}
    result = set()
    for out in graph.outputs:
        stack, seen, last = [out], set(), None
        while stack:
            node = graph.producer.get(stack.pop())
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if id(node) in by_node and (last is None or order[id(node)] > order[id(last)]):
                last = node
            stack.extend(node.input)
        if last is not None:
            result.add(by_node[id(last)].name)
    return result


def gemm_as_matmul(graph: Graph) -> int:
    """Rewrites Gemm nodes with a constant weight as MatMul (+ Add), the form weight-only quantizers take.
    Returns how many were rewritten."""
    count = 0
    for op in [o for o in graph.weight_ops() if o.node.op_type == "Gemm"]:
        n = op.node
        w = graph.array(op.weight)
        weight = graph.add_initializer(op.weight + "_kn", w.T if op.out_axis == 0 else w)
        index = list(graph.g.node).index(n)
        matmul_out = n.output[0] + "_matmul" if op.bias else n.output[0]
        nodes = [helper.make_node("MatMul", [n.input[0], weight], [matmul_out], name=n.name + "/MatMul")]
        if op.bias:
            nodes.append(helper.make_node("Add", [matmul_out, op.bias], [n.output[0]], name=n.name + "/Add"))
        graph.g.node.remove(n)
        for offset, new in enumerate(nodes):
            graph.g.node.insert(index + offset, new)
        count += 1
    graph.reindex()
    graph.drop_unused()
    return count


def tidy_quantized(src: Path, path: Path) -> None:
    """What onnxruntime's quantizers add to a model beyond the quantization itself, removed (see below)."""
    model = onnx.load(str(path))
    known = {v.name for v in onnx.load(str(src), load_external_data=False).graph.value_info}
    if _drop_added_shapes(model, known) | _drop_unused_opsets(model):
        onnx.save(model, str(path))


def _drop_added_shapes(model: onnx.ModelProto, known: set[str]) -> bool:
    """The shape annotations (value_info) the quantizer's shape inference wrote, where the input had none: with
    them onnxruntime fuses each residual Add + LayerNormalization into SkipLayerNormalization, whose CPU kernel
    made int8 all-MiniLM-L6-v2 about 9 % slower at batch 1 (tests/unit/test_onnxgraph.py)."""
    kept = [v for v in model.graph.value_info if v.name in known]
    if len(kept) == len(model.graph.value_info):
        return False
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return True


def _drop_unused_opsets(model: onnx.ModelProto) -> bool:
    """Opset imports that no node uses (the static pre-processing declares every domain it knows): a few
    hundred bytes of a small model's file. Left alone where nodes hold subgraphs or the model has functions."""
    nodes = list(model.graph.node)
    if model.functions or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                              for n in nodes for a in n.attribute):
        return False
    used = {n.domain for n in nodes} | {""}
    kept = [o for o in model.opset_import if o.domain in used]
    if len(kept) == len(model.opset_import):
        return False
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return True

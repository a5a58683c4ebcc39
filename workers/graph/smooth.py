"""SmoothQuant (Xiao et al., 2023) for int8 MatMuls: a few activation channels of a transformer run far larger
than the rest, so one scale for the whole activation tensor (dynamic int8) leaves the others with a handful of
levels. Dividing each input channel j by s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and multiplying row j of
the weight by s_j computes exactly the same product and moves the outliers into the weights, which are
quantized per channel.

The division is folded into the LayerNormalization before the MatMuls where nothing else reads its output
(pre-norm transformers: GPT-2, ViT, Whisper), and is otherwise one Mul in front of them (post-norm BERT-style
encoders, whose normalized output also feeds the residual, and the feed-forward output layer after GELU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from workers.engine.data import Split
from workers.graph.onnx_graph import FLOAT_TYPES, Graph

CHUNK = 8  # samples per calibration run: the activations of a chunk are reduced before the next
FLOOR = 1e-5  # smallest channel range and scale taken (a channel that never fires keeps scale 1)


@dataclass
class Group:
    """MatMuls with constant weights reading one activation tensor: they share one smoothing scale."""

    tensor: str
    matmuls: list[onnx.NodeProto]
    norm: onnx.NodeProto | None  # the LayerNormalization whose scale and bias absorb 1 / s, if it can


def groups(graph: Graph) -> list[Group]:
    found = []
    for tensor, users in graph.consumers.items():
        matmuls = [n for n in users if n.op_type == "MatMul" and n.input[0] == tensor and _weight(graph, n)]
        if not matmuls:
            continue
        producer = graph.producer.get(tensor)
        foldable = (producer is not None and producer.op_type == "LayerNormalization" and len(users) == len(matmuls)
                    and tensor not in graph.outputs and all(i in graph.inits for i in producer.input[1:3]))
        found.append(Group(tensor, matmuls, producer if foldable else None))
    return found


def _weight(graph: Graph, node: onnx.NodeProto) -> bool:
    """A 2-D float weight that this MatMul alone reads (scaling its rows changes no other node)."""
    w = graph.inits.get(node.input[1])
    return (w is not None and len(w.dims) == 2 and w.data_type in FLOAT_TYPES
            and len(graph.consumers.get(node.input[1], [])) == 1)


def channel_ranges(path: Path, tensors: list[str], samples: Split, providers: list[str]) -> dict[str, np.ndarray]:
    """max |x| of each channel (the last axis) of each tensor, over the samples."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in tensors if t not in known)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # fusions would hide the tensors
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
    ranges: dict[str, np.ndarray] = {}
    for start in range(0, len(samples), CHUNK):
        values = sess.run(tensors, samples.feed(slice(start, start + CHUNK)))
        for t, v in zip(tensors, values, strict=True):
            top = np.abs(v.reshape(-1, v.shape[-1])).max(axis=0)
            ranges[t] = top if t not in ranges else np.maximum(ranges[t], top)
    return ranges


def outlier_ratio(ranges: np.ndarray) -> float:
    """How far the widest channel stands out: its range over the median channel's."""
    median = float(np.median(ranges))
    return float(ranges.max()) / median if median > 0 else 1.0


@dataclass
class Smoothed:
    path: Path
    alpha: float
    before: dict[str, float]  # MatMul group (its first layer's name) -> outlier ratio of its input
    after: dict[str, float]

    def summary(self) -> str:
        """Every smoothed layer's outlier ratio before and after, the worst first."""
        order = sorted(self.before, key=self.before.__getitem__, reverse=True)
        said = ", ".join(f"{k} {self.before[k]:.1f} -> {self.after[k]:.1f}" for k in order)
        return (f"SmoothQuant alpha {self.alpha}: {len(self.before)} MatMul inputs smoothed; outlier ratio of each "
                f"(widest channel / median channel), before -> after: {said}")


def smooth(src: Path, out: Path, ranges: dict[str, np.ndarray], alpha: float) -> Smoothed:
    """Writes the smoothed graph; every group with measured ranges is smoothed."""
    graph = Graph.load(src)
    before, after = {}, {}
    for group in groups(graph):
        x = ranges.get(group.tensor)
        weights = [graph.array(n.input[1]) for n in group.matmuls]
        if x is None or any(w.shape[0] != len(x) for w in weights):
            continue
        w = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        s = np.where((x > FLOOR) & (w > FLOOR), np.maximum(x, FLOOR) ** alpha / np.maximum(w, FLOOR) ** (1 - alpha), 1)
        s = np.maximum(s, FLOOR).astype(np.float32)
        for node, weight in zip(group.matmuls, weights, strict=True):
            graph.set_array(node.input[1], (weight * s[:, None]).astype(weight.dtype))
        _divide_input(graph, group, s)
        label = group.matmuls[0].name or group.matmuls[0].output[0]
        before[label], after[label] = outlier_ratio(x), outlier_ratio(x / s)
    graph.reindex()
    return Smoothed(graph.save(out), alpha, before, after)


def _divide_input(graph: Graph, group: Group, s: np.ndarray) -> None:
    if group.norm is not None:
        for name in group.norm.input[1:3]:
            if name and len(graph.consumers.get(name, [])) == 1:
                value = graph.array(name)
                graph.set_array(name, (value / s).astype(value.dtype))
            elif name:  # shared with another LayerNormalization: this one gets its own copy
                copy = graph.add_initializer(f"{name}_smoothed", (graph.array(name) / s).astype(np.float32))
                position = list(group.norm.input).index(name)
                group.norm.input[position] = copy
        return
    inverse = graph.add_initializer(f"{group.tensor}_smooth", (1 / s).astype(np.float32))
    smoothed = graph.unique(f"{group.tensor}_smoothed")
    first = min(list(graph.g.node).index(n) for n in group.matmuls)
    graph.g.node.insert(first, helper.make_node("Mul", [group.tensor, inverse], [smoothed],
                                                name=graph.unique(f"{group.tensor}/smooth")))
    for node in group.matmuls:
        node.input[0] = smoothed


def outputs_agree(reference: Path, candidate: Path, samples: Split, providers: list[str]) -> float:
    """The worst per-sample cosine between the two graphs' outputs (all outputs of a sample together)."""
    import onnxruntime as ort

    from workers.engine.data import run_samples

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    a, b = (run_samples(ort.InferenceSession(str(p), opts, providers=providers), samples, len(samples))
            for p in (reference, candidate))
    x = np.concatenate([o.reshape(len(o), -1) for o in a], axis=1).astype(np.float64)
    y = np.concatenate([o.reshape(len(o), -1) for o in b], axis=1).astype(np.float64)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    cos = np.where(norms > 0, (x * y).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0)
    return float(cos.min())


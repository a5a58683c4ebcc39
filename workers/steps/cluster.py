"""cluster: k-means weight sharing. Each layer keeps uint8 indices into a float codebook; a Gather rebuilds
the weight, which onnxruntime folds into a plain constant when it loads the model."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from core.errors import ErrorCode, InvalidRecipe
from core.steps.cluster import Cluster
from workers.graph.onnx_graph import Graph
from workers.steps import implements
from workers.steps.common import selected
from workers.steps.context import ModelHandle, StepContext


def kmeans_1d(values: np.ndarray, k: int, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids [k], index of each value) by Lloyd's algorithm from quantile starts; 1-D, so
    assignment is a search among sorted boundaries."""
    flat = values.ravel().astype(np.float64)
    centroids = np.unique(np.quantile(flat, np.linspace(0, 1, k)))
    for _ in range(iterations):
        bounds = (centroids[1:] + centroids[:-1]) / 2
        index = np.searchsorted(bounds, flat)
        sums = np.bincount(index, weights=flat, minlength=len(centroids))
        counts = np.bincount(index, minlength=len(centroids))
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(moved, centroids):
            break
        centroids = np.sort(moved)
    index = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, flat)
    return centroids.astype(values.dtype), index.reshape(values.shape)


@implements(Cluster)
def cluster(handle: ModelHandle, p: Cluster, ctx: StepContext) -> ModelHandle:
    graph = Graph.load(handle.onnx_path)
    ops = [op for op in selected(graph, p) if graph.array(op.weight).size >= p.min_size]
    if not ops:
        raise InvalidRecipe(f"cluster: no layer has at least {p.min_size} weights", code=ErrorCode.step_not_applicable)
    for op in ops:
        w = graph.array(op.weight)
        centroids, index = kmeans_1d(w, p.clusters, p.iterations)
        book = graph.add_initializer(op.weight + "_codebook", centroids)
        codes = graph.add_initializer(op.weight + "_codes", index.astype(np.uint8))
        graph.g.initializer.remove(graph.inits.pop(op.weight))
        wide = graph.unique(op.weight + "_index")  # Gather takes int32/int64 indices; the file keeps uint8
        graph.g.node.insert(0, helper.make_node("Gather", [book, wide], [op.weight], name=op.weight + "/decode"))
        graph.g.node.insert(0, helper.make_node("Cast", [codes], [wide], to=TensorProto.INT32,
                                                name=op.weight + "/codes"))
    graph.reindex()
    ctx.notes.append(f"cluster shared {p.clusters} values per layer in {len(ops)} layers")
    return ModelHandle(graph.save(ctx.path("clustered.onnx")))

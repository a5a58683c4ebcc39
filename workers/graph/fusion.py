"""Transformer fusion: onnxruntime's transformer optimizer rewrites each encoder layer into its fused
operators (Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization), which quantize
whole (Attention -> QAttention). On all-MiniLM-L6-v2 (batch 1, sequence 128, side by side on a 2-core
CPU): at 2 threads once fp32 1.23x faster and dynamic int8 2.24x faster than fp32 where int8 of the unfused
graph gave 2.03x, minutes later the unfused int8 4 % ahead; at 1 thread the fused graphs were the slower
ones (fp32 0.94x, int8 2.06x against 2.36x). Which to use is therefore measured per job, not assumed
(quantize auto and optimize_graph time both).

The optimizer recognises the attention pattern of a classic (eager) BERT-style export; its head count
comes from each layer's reshapes, so a head count the export left to inference (-1) is written in first,
layer by layer (after head pruning, layers differ). Graphs it does not recognise are left alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.graph.channels import ChannelGroup, attention_heads
from workers.graph.onnx_graph import Graph

FUSED = ("Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization")


def fuse_transformer(src: Path, out: Path) -> dict[str, int] | None:
    """The fused graph written to `out` and how many of each fused operator it has, or None where no
    attention layer could be fused (then `out` is not written)."""
    graph = Graph.load(src)
    groups = attention_heads(graph, {id(op.node): op for op in graph.weight_ops()})
    if not groups:
        return None
    for group in groups:
        _explicit_head_count(graph, group)
    graph.reindex()
    explicit = graph.save(out)

    from onnxruntime.transformers.optimizer import optimize_model

    first = groups[0]
    model = optimize_model(str(explicit), model_type="bert", num_heads=first.size // first.unit,
                           hidden_size=first.size, opt_level=0)
    counts = {op: sum(n.op_type == op for n in model.model.graph.node) for op in FUSED}
    if not counts["Attention"]:
        out.unlink()
        return None
    model.save_model_to_file(str(out), use_external_data_format=False)
    return counts


def _explicit_head_count(graph: Graph, group: ChannelGroup) -> None:
    """[batch, sequence, -1, head_dim] reshapes of the Q, K and V projections get the head count itself."""
    heads = group.size // group.unit
    for op in group.producers:
        for reshape in graph.consumers.get(op.output, []):
            concat = graph.producer.get(reshape.input[1]) if reshape.op_type == "Reshape" else None
            if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
                continue
            count, head_dim = graph.array(concat.input[2]), graph.array(concat.input[3])
            if count is not None and head_dim is not None and count.size == 1 and int(count.item()) == -1 \
                    and int(head_dim.item()) == group.unit:
                concat.input[2] = graph.add_initializer(f"{op.name}/heads", np.array([heads], np.int64))


def described(counts: dict[str, int]) -> str:
    """"6 Attention, 12 SkipLayerNormalization, ...": what a fusion made, for a candidate's notes."""
    return ", ".join(f"{n} {op}" for op, n in counts.items() if n)

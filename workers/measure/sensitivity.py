"""Accuracy-aware quantization fallback: check a quantized model against the recipe's quality goals and,
when it misses them, keep its most sensitive layers in float until they hold.

Sensitivity of a layer: how far the model's outputs move when that layer alone is quantized. Layers
are kept in float most sensitive first; the smallest number that meets the goals is found by doubling,
then bisection.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from core.recipe import Goal
from core.report import Candidate, Decision, Metrics
from workers.measure import goals as G
from workers.measure.bench import fidelity
from workers.measure.quality import agreement, quality
from workers.measure.variants import outputs, session
from workers.steps.context import StepContext

MAX_RANKED = 64  # layers whose sensitivity is measured one by one


def quality_goals(ctx: StepContext) -> list[Goal]:
    return [g for g in ctx.goals if g.is_constraint and g.metric.startswith(("quality", "fidelity"))]


def _candidate(cid: str, out, reference, ctx: StepContext) -> Candidate:
    classification = ctx.data.task == "classification"
    return Candidate(id=cid, metrics=Metrics(
        size_bytes=0, size_gzip_bytes=0, params=0, nonzero_params=0,
        quality=quality(out, ctx.labels, ctx.metrics),
        fidelity=fidelity(reference, out, classification) if reference is not None else None))


def check(model: Path, baseline_out, ctx: StepContext) -> tuple[bool, list]:
    """Whether `model` meets the quality goals on the evaluation split, and the goal results."""
    n = len(ctx.data.eval)
    base = _candidate("baseline", baseline_out, None, ctx)
    cand = _candidate("c", outputs(session(model, ctx), ctx.samples, n=n), baseline_out, ctx)
    results = G.evaluate(cand, base, quality_goals(ctx))
    return all(r.met for r in results), results


def fallback_layers(src: Path, quantized: Path, layers: list[str], build: Callable[[list[str], str], Path],
                    alone: Callable[[str], Path], ctx: StepContext) -> Path:
    baseline_out = outputs(session(ctx.teacher("baseline"), ctx), ctx.samples, n=len(ctx.data.eval))
    met, results = check(quantized, baseline_out, ctx)
    if met or not layers:
        return quantized
    ctx.checkpoint(f"quantize fallback: ranking {min(len(layers), MAX_RANKED)} layers by sensitivity")
    reference = outputs(session(src, ctx), ctx.samples)
    alone_fidelity = {layer: agreement(reference, outputs(session(alone(layer), ctx), ctx.samples),
                                       ctx.data.task == "classification") for layer in layers[:MAX_RANKED]}
    ranked = sorted(alone_fidelity, key=alone_fidelity.__getitem__)
    tried: dict[int, tuple[bool, Path]] = {}

    def holds(k: int) -> bool:
        if k not in tried:
            ctx.checkpoint(f"quantize fallback: {k} layers in float")
            path = build(ranked[:k], str(k))
            tried[k] = (check(path, baseline_out, ctx)[0], path)
        return tried[k][0]

    k = 1
    while k < len(ranked) and not holds(k):
        k *= 2
    k = min(k, len(ranked))
    if not holds(k):
        ctx.decisions += sensitivity_table(src, ranked, alone_fidelity, kept=0)
        gaps = ", ".join(f"{r.metric} {r.value:.4f} vs {r.bound:.4f}" for r in results if not r.met)
        ctx.notes.append(f"quantize fallback could not meet the quality goals ({gaps}) even with the "
                         f"{len(ranked)} most sensitive layers in float; the int8 model is kept")
        return quantized
    low, high = k // 2, k  # holds(high); the smallest k in (low, high] that holds
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if holds(mid) else (mid, high)
    ctx.notes.append(f"quantize fallback kept {high} of {len(layers)} layers in float to meet the quality goals: "
                     + ", ".join(ranked[:high]))
    ctx.decisions += sensitivity_table(src, ranked, alone_fidelity, kept=high)
    return tried[high][1]


def sensitivity_table(src: Path, ranked: list[str], alone_fidelity: dict[str, float], kept: int) -> list[Decision]:
    """Each ranked layer, the most sensitive first: its operator, its weights, the fidelity of the model with that
    layer alone quantized, and whether it was kept in float."""
    model = onnx.load(str(src), load_external_data=False)
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    table = []
    for rank, layer in enumerate(ranked, 1):
        node = nodes.get(layer)
        params = sum(sizes.get(i, 0) for i in node.input) if node is not None else None
        in_float = rank <= kept
        table.append(Decision(
            step="quantize fallback", option=f"keep {layer} in float", fidelity=alone_fidelity[layer],
            settings={"layer": layer, "op_type": node.op_type if node is not None else None, "params": params,
                      "sensitivity_rank": rank},
            chosen=in_float, why=(f"kept in float: {rank} of the {kept} most sensitive layers" if in_float else
                                  f"quantized: sensitivity rank {rank} of {len(ranked)}")))
    return table

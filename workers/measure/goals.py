"""Goals over measured candidates: which meet the constraints, the Pareto frontier, the recommendation.

Metric names: `quality` (the first label-based quality metric, else fidelity cosine),
`quality.<name>`, `fidelity.<name>`, `latency_p50_ms` / `latency_p90_ms` / `latency_p99_ms` (first
batch size), `size_bytes`, `size_gzip_bytes`, `params`, `nonzero_params`, `macs`, `peak_memory_bytes`,
`throughput_per_s`.
"""

from __future__ import annotations

from core.recipe import Goal, higher_is_better
from core.report import Candidate, GoalResult

DEFAULT_OBJECTIVES = (Goal(metric="quality", maximize=True), Goal(metric="latency_p50_ms", minimize=True),
                      Goal(metric="size_bytes", minimize=True))
QUALITY = DEFAULT_OBJECTIVES[0]
TIE = 0.02  # values within 2 % count as equal when ranking by the next objective


def value(c: Candidate, metric: str) -> float | None:
    m = c.metrics
    if metric == "quality":
        if m.quality:
            return next(iter(m.quality.values()))
        return m.fidelity.cosine if m.fidelity else 1.0
    if metric.startswith("quality."):
        return m.quality.get(metric.split(".", 1)[1])
    if metric.startswith("fidelity."):
        if m.fidelity is None:  # the baseline agrees with itself
            return 0.0 if metric.endswith("max_abs_error") else 1.0
        return getattr(m.fidelity, metric.split(".", 1)[1])
    if metric.startswith("latency_"):
        if not m.latency_ms:
            return None
        first = min(m.latency_ms, key=int)
        return getattr(m.latency_ms[first], metric.split("_")[1])
    return getattr(m, metric, None)


def evaluate(c: Candidate, baseline: Candidate, goals: list[Goal]) -> list[GoalResult]:
    results = []
    for g in goals:
        v = value(c, g.metric)
        if not g.is_constraint:
            results.append(GoalResult(metric=g.metric, met=True, value=v))
            continue
        up = higher_is_better(g.metric)
        if g.threshold is not None:
            bound = g.threshold
        else:
            base = value(baseline, g.metric) or 0.0
            room = abs(base) * g.max_degradation if g.relative else g.max_degradation
            bound = base - room if up else base + room
        met = v is not None and (v >= bound if up else v <= bound)
        gap = 0.0 if met or v is None else abs(bound - v)
        results.append(GoalResult(metric=g.metric, met=met, value=v, bound=bound, gap=gap))
    return results


def objectives(goals: list[Goal]) -> list[Goal]:
    """What the recipe minimizes or maximizes, in priority order, and quality last: a frontier always trades
    something against quality, even where quality is only a constraint."""
    own = [g for g in goals if not g.is_constraint] or list(DEFAULT_OBJECTIVES)
    return own if any(g.metric == "quality" for g in own) else [*own, QUALITY]


def _score(c: Candidate, g: Goal) -> float:
    """Larger is better, for every objective."""
    v = value(c, g.metric)
    if v is None:
        return float("-inf")
    return v if (g.maximize or (not g.minimize and higher_is_better(g.metric))) else -v


def dominates(a: Candidate, b: Candidate, objs: list[Goal]) -> bool:
    sa, sb = [_score(a, g) for g in objs], [_score(b, g) for g in objs]
    return all(x >= y for x, y in zip(sa, sb, strict=True)) and any(x > y for x, y in zip(sa, sb, strict=True))


def frontier(cands: list[Candidate], objs: list[Goal]) -> list[Candidate]:
    return [c for c in cands if not any(dominates(o, c, objs) for o in cands if o is not c)]


def recommend(cands: list[Candidate], objs: list[Goal]) -> Candidate:
    """The best goal-meeting candidate by objective priority (values within TIE of the best count as
    equal, then the next objective decides); if none meets the goals, the one with the smallest total
    relative gap: the best so far."""
    pool = [c for c in cands if c.goals_met]
    if not pool:
        return min(cands, key=lambda c: sum((r.gap or 0) / (abs(r.bound or 0) or 1) for r in c.goals))
    for g in objs:
        best = max(_score(c, g) for c in pool)
        pool = [c for c in pool if _score(c, g) >= best - abs(best) * TIE]
    return max(pool, key=lambda c: [_score(c, g) for g in objs])

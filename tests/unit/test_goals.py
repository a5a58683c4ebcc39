from __future__ import annotations

from core.recipe import Goal
from core.report import Candidate, Fidelity, Latency, Metrics
from workers.measure import goals as G


def cand(cid, size, p50, accuracy=None, cosine=1.0) -> Candidate:
    return Candidate(id=cid, metrics=Metrics(
        size_bytes=size, size_gzip_bytes=size, params=1, nonzero_params=1,
        latency_ms={"1": Latency(p50=p50, p90=p50, p99=p50)},
        quality={"accuracy": accuracy} if accuracy is not None else {},
        fidelity=Fidelity(cosine=cosine, max_abs_error=0.0)))


def test_max_degradation_absolute_and_relative():
    base = cand("baseline", 100, 1.0, accuracy=0.9)
    ok, bad = cand("a", 50, 1.0, accuracy=0.895), cand("b", 50, 1.0, accuracy=0.85)
    goal = [Goal(metric="quality", max_degradation=0.01)]
    assert G.evaluate(ok, base, goal)[0].met
    r = G.evaluate(bad, base, goal)[0]
    assert not r.met and abs(r.gap - 0.04) < 1e-9 and abs(r.bound - 0.89) < 1e-9
    rel = [Goal(metric="latency_p50_ms", max_degradation=0.1, relative=True)]
    assert G.evaluate(cand("c", 1, 1.09), base, rel)[0].met
    assert not G.evaluate(cand("d", 1, 1.2), base, rel)[0].met


def test_threshold_direction_follows_the_metric():
    base = cand("baseline", 100, 1.0)
    assert G.evaluate(cand("a", 40, 1.0), base, [Goal(metric="size_bytes", threshold=50)])[0].met
    assert not G.evaluate(cand("a", 60, 1.0), base, [Goal(metric="size_bytes", threshold=50)])[0].met
    assert G.evaluate(cand("a", 1, 1.0, cosine=0.995), base, [Goal(metric="fidelity.cosine", threshold=0.99)])[0].met


def test_frontier_drops_dominated_candidates():
    a, b, c = cand("a", 10, 1.0, 0.9), cand("b", 20, 2.0, 0.9), cand("c", 5, 3.0, 0.8)
    objs = list(G.DEFAULT_OBJECTIVES)
    assert {x.id for x in G.frontier([a, b, c], objs)} == {"a", "c"}


def test_the_frontier_trades_against_quality_even_when_quality_is_only_a_constraint():
    goals = [Goal(metric="quality", max_degradation=0.05), Goal(metric="latency_p50_ms", minimize=True)]
    fastest, accurate, worse = cand("fastest", 10, 1.0, 0.96), cand("accurate", 10, 1.5, 0.98), \
        cand("worse", 10, 1.6, 0.97)
    objs = G.objectives(goals)
    assert [g.metric for g in objs] == ["latency_p50_ms", "quality"]
    assert {c.id for c in G.frontier([fastest, accurate, worse], objs)} == {"fastest", "accurate"}
    assert G.recommend([fastest, accurate, worse], objs).id == "fastest"  # latency first, as the recipe says


def test_recommend_by_priority_with_tolerance():
    fast = cand("fast", 30, 1.0, 0.899)
    small = cand("small", 10, 2.0, 0.9)
    objs = [Goal(metric="quality", maximize=True), Goal(metric="latency_p50_ms", minimize=True)]
    assert G.recommend([fast, small], objs).id == "fast"  # accuracies within 2 %: latency decides
    objs = [Goal(metric="size_bytes", minimize=True)]
    assert G.recommend([fast, small], objs).id == "small"


def test_when_nothing_meets_the_goals_the_closest_is_recommended():
    base = cand("baseline", 100, 1.0, 0.9)
    near, far = cand("near", 10, 1.0, 0.88), cand("far", 10, 1.0, 0.5)
    goals = [Goal(metric="quality", max_degradation=0.001)]
    for c in (near, far):
        c.goals = G.evaluate(c, base, goals)
        c.goals_met = all(r.met for r in c.goals)
    assert G.recommend([far, near], G.objectives(goals)).id == "near"


def _measurement():
    from core.report import Measurement

    return Measurement(device="cpu", providers=["CPUExecutionProvider"], threads=1, warmup=1, repeats=5,
                       batch_sizes=[1], inputs="generated", samples=4)


def test_a_candidate_the_baseline_dominates_is_never_recommended():
    """The same size, no faster (within the rounds' noise), no better: the baseline is recommended, and the
    report says why each candidate lost; the baseline is always on the frontier."""
    from workers.report.build import build

    base = cand("baseline", 100, 1.0)
    same = cand("c1", 100, 0.99)  # 1 % faster: noise, not a speed-up
    noisy = cand("c2", 120, 0.9)
    noisy.metrics.latency_ms["1"].spread = base.metrics.latency_ms["1"].spread = 0.4  # rounds 40 % apart
    report = build("j", base, [same, noisy], [], _measurement(), result="c1")
    assert report.recommended == "baseline" and report.frontier[0] == "baseline"
    assert [w.split(":")[0] for w in report.why_baseline] == ["c1", "c2"]
    with_goals = build("j", base, [same], [Goal(metric="latency_p50_ms", minimize=True)], _measurement())
    assert with_goals.recommended == "baseline"


def test_a_candidate_better_anywhere_can_be_recommended():
    from workers.report.build import build

    base = cand("baseline", 100, 1.0, accuracy=0.9)
    smaller, faster, better = cand("s", 50, 1.0, 0.9), cand("f", 100, 0.5, 0.9), cand("b", 100, 1.0, 0.95)
    for c in (smaller, faster, better):
        assert build("j", base, [c], [], _measurement(), result=c.id).recommended == c.id


def test_a_speed_up_timed_on_a_loaded_machine_says_how_noisy_it_is():
    from core.report import Measurement
    from workers.report.build import build, noise_notes

    base, steady, noisy = cand("baseline", 100, 10.0), cand("c1", 50, 5.0), cand("c2", 50, 5.0)
    for c, spread in ((base, 0.05), (steady, 0.08), (noisy, 0.40)):
        c.metrics.latency_ms["1"].spread = spread
    assert noise_notes(steady, base) == []
    (note,) = noise_notes(noisy, base)
    assert "batch 1 is noisy" in note and "40%" in note and "2.00x" in note
    how = Measurement(device="cpu", providers=["CPUExecutionProvider"], threads=1, warmup=1, repeats=5,
                      batch_sizes=[1], inputs="generated", samples=8)
    report = build("j", base, [steady, noisy], [], how, result="c1")
    assert report.candidates[1].vs_baseline.speedup_spread == 0.40
    assert report.candidates[0].vs_baseline.speedup_spread == 0.08  # the ratio's, not the baseline's own
    assert report.candidates[1].notes.count(note) == 1

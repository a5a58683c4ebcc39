"""A job's coordinator: plan the candidates (the recipe's steps, its comparison branch, or the search's
trials) as a tree whose shared prefixes are computed once, call helper tasks on the other workers of the
queue, measure the baseline while they start, run the nodes with them, and build the report from what was
measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from core.assets import ModelRecord
from core.errors import BudgetExceeded, ErrorCode, JobCancelled, ParetoError
from core.job import Job
from core.objectstore import ObjectStore
from core.queue import TRIALS_TASK, celery_client, queue_for
from core.report import Candidate, Failure, Measurement, Report, SearchSummary
from core.settings import Settings
from workers.engine.fleet import POLL_S, Fleet
from workers.engine.plan import BASELINE, Plan
from workers.engine.trials import Trials
from workers.engine.workspace import Workspace, measure_baseline, prepare, run_node
from workers.graph.program import onnx_to_program
from workers.measure import goals as G
from workers.measure.bench import SIDE_BY_SIDE_ROUNDS
from workers.measure.profile import causes, speedups
from workers.report.build import build
from workers.report.html import render

Checkpoint = Callable[..., None]  # (done, total, message, fraction=None); raises JobCancelled
# the job's progress fraction through its phases: the baseline prepared and measured, the candidates made and
# measured (shared out by how many are done), timed side by side, profiled, written
PREPARED, MADE, TIMED, PROFILED = 0.1, 0.8, 0.85, 0.9


@dataclass(frozen=True)
class Stored:
    """An artifact already in the object store: copied, not uploaded again."""

    key: str


@dataclass
class Outcome:
    report: Report
    artifacts: dict[str, Path | Stored]  # artifact name -> local file or stored object


class Coordinator:
    def __init__(self, job: Job, ws: Workspace, fleet: Fleet, checkpoint: Checkpoint):
        self.job, self.ws, self.fleet, self.checkpoint = job, ws, fleet, checkpoint
        self.baseline: Candidate | None = None  # measured while helpers start the first nodes
        self.plan, self.trials = Plan(), Trials(job.recipe)
        self.ends: set[str] = set()  # nodes where a trial's path ends
        self.reported: set[str] = set()
        self.skipped: set[str] = set()
        self.stopped: str | None = None
        self.first_end: str | None = None

    def add(self, proposals) -> None:
        new = []
        for path, token in proposals:
            end, added = self.plan.add(path)
            new += added
            self.first_end = self.first_end or end
            self.ends.add(end)
            self.trials.started(end, token)
        self.fleet.publish(new)  # all at once: the order nodes are taken in weighs the whole plan

    def tick(self, message: str = "") -> None:
        done = len(self.fleet.done())
        text = f"{done} of {len(self.plan.nodes)} candidates" + (f"; {message}" if message else "")
        total = max(1, len(self.plan.nodes))
        self.checkpoint(done, total + 1, text, fraction=PREPARED + (MADE - PREPARED) * done / total)

    def loop(self) -> None:
        deadline = time.monotonic() + (self.job.recipe.search.max_time_s if self.trials.searching else 10**9)
        while True:
            node = self.fleet.take()
            if node is not None:
                self._run(node)
            else:
                time.sleep(POLL_S)
            done, failed = self.fleet.done(), self.fleet.failed()
            self._note_results(done, failed)
            if self.trials.searching and not self.stopped:
                self._maybe_stop(done, deadline)
            if self.stopped:  # what finishing nodes made ready is not started either
                self.skipped |= set(self.fleet.drop_waiting())
            else:
                self.add(self.trials.more(len(self.fleet.running()) + self.fleet.waiting()))
            self.fleet.requeue_expired()
            if set(self.plan.nodes) <= set(done) | set(failed) | self.skipped:
                return
            self.tick()

    def _run(self, node) -> None:
        try:
            run_node(self.ws, self.fleet, node, lambda message: self.tick(message))
        except JobCancelled:
            raise
        except ParetoError as e:
            if not e.user_error and not self.trials.searching:
                raise
            self.fleet.fail(node, e.code, e.message)

    def _note_results(self, done: dict, failed: dict) -> None:
        for node_id, error in failed.items():
            if not self.trials.searching:
                raise ParetoError(error["message"], code=error["code"])
            if self.fleet.made(node_id):  # made and shared, then its measurement failed: the children stand
                continue
            for child in self.plan.descendants(node_id):
                if child not in done and child not in failed:
                    self.fleet.fail(self.plan.nodes[child], ErrorCode.parent_failed,
                                    f"{node_id} failed: {error['message']}")
        for end in self.ends:
            if end in self.reported or (end not in done and end not in failed):
                continue
            self.reported.add(end)
            self.trials.finished(end, Candidate(**done[end]) if end in done else None)

    def _maybe_stop(self, done: dict, deadline: float) -> None:
        search = self.job.recipe.search
        if time.monotonic() > deadline:
            self.stopped = f"max_time_s ({search.max_time_s} s) reached"
        elif search.stop_when_goals_met and self.job.recipe.goals and any(
                all(r.met for r in G.evaluate(Candidate(**done[e]), self.baseline, self.job.recipe.goals))
                for e in self.ends if e in done):
            self.stopped = "a candidate met every goal (stop_when_goals_met)"
        if self.stopped:
            self.skipped |= set(self.fleet.drop_waiting())
            self.skipped |= {n for n in self.plan.nodes if n not in done and n not in self.fleet.running()}


def _dispatch_helpers(job: Job, settings: Settings, count: int) -> None:
    """Helper tasks for the other workers of the queue; each leaves as soon as nothing is left to run."""
    if count <= 0:
        return
    client, queue = celery_client(settings), queue_for(job.recipe.target.device)
    for _ in range(count):
        client.send_task(TRIALS_TASK, args=[job.tenant, job.id, job.attempts], queue=queue)


def run_recipe(job: Job, model: ModelRecord, source: Path, workdir: Path, settings: Settings,
               checkpoint: Checkpoint, objects: ObjectStore, r: redis.Redis) -> Outcome:
    """Plans the first nodes and calls the helpers before measuring the baseline, so that other workers start
    on the first steps meanwhile (they measure what they make once the baseline's outputs are shared)."""
    def tick(message: str) -> None:
        checkpoint(0, 1, message, fraction=PREPARED / 2)

    fleet = Fleet(r, job.id, job.attempts, settings.node_lease_s, settings.worker_retry_s)
    ws = prepare(job, model, source, settings, objects, workdir, tick)
    coordinator = Coordinator(job, ws, fleet, checkpoint)
    coordinator.add(coordinator.trials.first())
    _dispatch_helpers(job, settings, min(len(coordinator.plan.nodes) - 1, settings.max_fanout))
    try:
        coordinator.baseline = coordinator.trials.baseline = measure_baseline(ws, fleet, tick)
        coordinator.loop()
    finally:
        fleet.close()
    return _outcome(coordinator, fleet, model)


def _outcome(c: Coordinator, fleet: Fleet, model: ModelRecord) -> Outcome:
    job, ws = c.job, c.ws
    done, failed = fleet.done(), fleet.failed()
    candidates = [Candidate(**done[n]) for n in c.plan.nodes if n in done]
    if not candidates:
        raise ParetoError("no candidate could be made: " + "; ".join(f"{k}: {v['message']}" for k, v in failed.items()),
                          code=ErrorCode.no_candidates)
    target = job.recipe.target
    measurement = Measurement(
        device=target.device, runtime=target.runtime, providers=ws.bench.ran_on or ws.bench.providers,
        threads=ws.bench.threads, warmup=target.warmup,
        repeats=target.repeats, batch_sizes=target.batch_sizes,
        inputs="dataset" if ws.data.from_dataset else "generated", samples=len(ws.data.eval),
        train_samples=len(ws.data.train) if ws.data.from_dataset and job.recipe.trains else 0,
    )
    result = None if c.trials.searching or c.first_end not in done else c.first_end
    c.checkpoint(1, 1, "timing the candidates side by side with the baseline", fraction=MADE)
    try:
        retime(ws, c.baseline, candidates, job.recipe.goals)
        measurement.side_by_side_rounds = SIDE_BY_SIDE_ROUNDS
    except BudgetExceeded:
        raise
    except ParetoError as e:  # each model's own measurement stands; the report says the comparison is weaker
        c.baseline.notes.append(f"the side-by-side timing failed ({e.message}): every p50 is from the model's own "
                                "measurement, taken at another moment")
    report = build(job.id, c.baseline, candidates, job.recipe.goals, measurement, result)
    c.checkpoint(1, 1, "profiling the baseline and the candidates per operator", fraction=TIMED)
    explain(ws, report)
    report.normalization = ws.normalization
    report.failures = [Failure(id=n, steps=c.plan.nodes[n].steps, **failed[n]) for n in c.plan.nodes if n in failed]
    if c.trials.searching:
        s = job.recipe.search
        report.search = SearchSummary(sampler=s.sampler, space_size=s.size, trials=c.trials.asked,
                                      candidates=len(candidates), failed=len(failed), skipped=len(c.skipped),
                                      stopped=c.stopped)
    artifacts = _artifacts(c, report, model, ws)
    page = ws.workdir / "report.html"
    page.write_text(render(report, f"{job.id} ({job.recipe.name})"))
    artifacts["report.html"] = page
    return Outcome(report, artifacts)


SIDE_BY_SIDE_MAX = 8  # candidates timed again beside the baseline; the others keep their own probe's figures


def retime(ws: Workspace, baseline: Candidate, candidates: list[Candidate], goals) -> None:
    """Each candidate's p50 (and the baseline's) timed again side by side in one process, so that a speed-up
    compares two models measured under the same load rather than minutes apart; the p50s are replaced and the
    rounds' spread recorded. Beyond SIDE_BY_SIDE_MAX candidates, those on the probe's frontier and then the
    fastest are timed again."""
    objs = G.objectives(goals)
    first = G.frontier(candidates, objs)
    ids = {c.id for c in first}
    rest = sorted((c for c in candidates if c.id not in ids), key=lambda c: G.value(c, "latency_p50_ms") or 0)
    chosen = (first + rest)[:SIDE_BY_SIDE_MAX]
    timed = ws.bench.side_by_side({BASELINE: ws.local(BASELINE), **{c.id: ws.local(c.id) for c in chosen}})
    for cand in [baseline, *chosen]:
        for batch, figures in timed[cand.id].items():
            latency = cand.metrics.latency_ms.get(batch)
            if latency is not None and latency.p50 > 0:
                scale = figures["p50"] / latency.p50  # the tail keeps its shape around the p50 timed side by side
                latency.p50, latency.p90, latency.p99 = figures["p50"], latency.p90 * scale, latency.p99 * scale
                latency.spread = figures["spread"]
    timed_ids = {c.id for c in chosen}
    for cand in candidates:
        if cand.id not in timed_ids:
            cand.notes.append(f"latency from its own measurement: only {SIDE_BY_SIDE_MAX} candidates are timed "
                              "side by side with the baseline")


PROFILED_MAX = 6  # candidates profiled beside the baseline: the frontier and those with regressions, in order


def explain(ws: Workspace, report: Report) -> None:
    """Per-operator profiles of the baseline and of the candidates a reader looks at first (on the frontier, or
    slower than the baseline somewhere), each candidate's with the causes of its difference in words
    (workers/measure/profile.py). A profile that cannot be taken leaves a note, never fails the job."""
    if ws.bench.target.runtime == "torch":
        return
    wanted = [c for c in report.candidates if c.id in report.frontier or c.regressions][:PROFILED_MAX]
    try:
        found = ws.bench.profiles({BASELINE: ws.local(BASELINE), **{c.id: ws.local(c.id) for c in wanted}})
    except BudgetExceeded:
        raise
    except ParetoError as e:
        report.baseline.notes.append(f"no per-operator profile: {e.message}")
        return
    report.baseline.profile = base = found[BASELINE]
    for cand in wanted:
        cand.profile = found[cand.id]
        cand.profile.causes = causes(cand.profile, base, ws.bench.providers[0])
        if not cand.regressions:
            cand.profile.causes += speedups(cand.profile, base)


def _artifacts(c: Coordinator, report: Report, model: ModelRecord, ws: Workspace) -> dict[str, Path | Stored]:
    artifacts: dict[str, Path | Stored] = {}
    for cand in report.candidates:
        stem = "model" if cand.id == report.recommended else cand.id
        cand.artifact = f"{stem}.onnx"
        artifacts[cand.artifact] = Stored(ws.shared + f"{cand.id}.onnx")
        if model.format == "pt2":
            c.checkpoint(1, 1, f"writing {stem}.pt2", fraction=PROFILED)
            pt2 = _as_program(ws.local(cand.id), ws.workdir / f"{stem}.pt2", model, ws.data.eval, cand)
            if pt2 is not None:
                artifacts[pt2.name] = pt2
    return artifacts


def _as_program(onnx_path: Path, out: Path, model: ModelRecord, samples, candidate: Candidate) -> Path | None:
    """The candidate as a .pt2 too, when its operators have torch equivalents (quantized ones do not)."""
    from workers.graph.torch_module import UnsupportedOp

    try:
        path = onnx_to_program(onnx_path, out, model.inputs, samples)
    except UnsupportedOp as e:
        candidate.notes.append(f"no .pt2 for this candidate: {e}")
        return None
    except Exception as e:  # torch.export refusing a graph is not the job's failure
        candidate.notes.append(f"no .pt2 for this candidate: torch.export failed ({type(e).__name__}: {str(e)[:200]})")
        return None
    candidate.artifact_pt2 = path.name
    return path


__all__ = ["BASELINE", "Outcome", "Stored", "run_recipe"]

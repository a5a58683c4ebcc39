"""Goal-driven search through the public API: the frontier, impossible goals, dry runs, fan-out over
workers (and a worker lost mid-search), cancellation, TPE, and the accuracy-aware int8 fallback."""

from __future__ import annotations

import time

import pytest
import redis

from tests.helpers import other_database, submit, upload_dataset, upload_model
from tests.stack import wait_job

SPACE = {"steps": [{"prune": {"method": "structured", "ratio": [0.3, 0.5, 0.7]}},
                   {"distill": {"epochs": 2, "lr": 0.002}},
                   {"quantize": {"mode": ["dynamic", "static"], "fallback": False}}],
         "search": {"sampler": "grid", "max_trials": 12, "optional": ["distill"]},
         "goals": [{"metric": "quality", "max_degradation": 0.05},
                   {"metric": "latency_p50_ms", "minimize": True}, {"metric": "size_bytes", "minimize": True}]}


def objectives(c: dict) -> tuple[float, float, float]:
    m = c["metrics"]
    return m["quality"]["accuracy"], -m["latency_ms"]["1"]["p50"], -m["size_bytes"]


def weakly_dominates(a: dict, b: dict) -> bool:
    return all(x >= y for x, y in zip(objectives(a), objectives(b), strict=True))


@pytest.fixture
def two_workers(stack):
    """A second worker for the session's stack, for one test (others count on one worker)."""
    extra = stack.add_worker()
    yield stack
    extra.stop()
    stack.workers.remove(extra)


def test_grid_search_frontier_dominates_single_techniques(api, digits_job, two_workers):
    model, data = digits_job
    job, report = submit(api, model, data, SPACE)
    everything = {c["id"]: c for c in [report["baseline"], *report["candidates"]]}
    assert report["search"]["trials"] == 12 and report["search"]["space_size"] == 12
    assert len(report["candidates"]) == 18 and report["search"]["failed"] == 0  # 3 + 3 + 12, prefixes shared
    for c in report["candidates"]:  # lineage: every parent exists and has one step fewer
        parent = everything[c["parent_id"]]
        assert parent["steps"] == c["steps"][:-1]
    frontier = [everything[i] for i in report["frontier"]]
    assert any(len(c["steps"]) > 1 for c in frontier)
    single = [c for c in report["candidates"] if len(c["steps"]) == 1 and c["goals_met"]]
    for c in single:
        assert any(weakly_dominates(f, c) for f in frontier), c["id"]
    recommended = everything[report["recommended"]]
    assert recommended["goals_met"] and report["goals_met"] and recommended["id"] in report["frontier"]
    logs = [w.log.read_text(errors="replace") for w in two_workers.workers]
    assert sum(job["id"] in log for log in logs) == 2  # both workers ran some of the candidates


def test_impossible_goals_still_answer_with_the_gaps(api, digits_job):
    model, data = digits_job
    recipe = {**SPACE, "steps": [SPACE["steps"][0], SPACE["steps"][2]], "search": {"sampler": "grid",
                                                                                  "max_trials": 6},
              "goals": [{"metric": "quality", "threshold": 1.01}, {"metric": "size_bytes", "threshold": 1000}]}
    job, report = submit(api, model, data, recipe)
    assert job["status"] == "succeeded" and report["goals_met"] is False
    assert len(report["candidates"]) == 9
    best = next(c for c in report["candidates"] if c["id"] == report["recommended"])
    gaps = {g["metric"]: g for g in best["goals"]}
    assert not gaps["quality"]["met"] and gaps["quality"]["gap"] > 0 and gaps["size_bytes"]["gap"] > 0


def test_dry_run_plans_without_queueing_and_unbounded_search_is_refused(api, digits_job, stack):
    model, data = digits_job
    before = api.get("/v1/jobs", params={"limit": 100}).json()["items"]
    r = api.post("/v1/jobs", params={"dry_run": "true"}, json={"model_id": model["id"], "dataset_id": data,
                                                               "recipe": SPACE})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["dry_run"] and plan["trials"] == 12 and plan["candidates"] == 18 and plan["training_epochs"] == 6
    assert plan["estimate_s"] > 0 and plan["recipe"]["search"]["space"]
    assert api.get("/v1/jobs", params={"limit": 100}).json()["items"] == before  # no job was made
    unbounded = {**SPACE, "search": {"sampler": "grid", "max_trials": 5, "optional": ["distill"]}}
    r = api.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data, "recipe": unbounded})
    assert r.status_code == 422 and "max_trials" in r.json()["detail"]
    bad = {**SPACE, "steps": [{"prune": {"method": "structured", "ratio": [0.3, 1.5]}}]}
    r = api.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data, "recipe": bad})
    assert r.status_code == 422 and "ratio" in r.json()["detail"]


def test_tpe_search_and_stop_when_goals_met(api, digits_job):
    model, data = digits_job
    recipe = {**SPACE, "search": {"sampler": "tpe", "max_trials": 6, "seed": 3, "optional": ["distill"]}}
    job, report = submit(api, model, data, recipe)
    assert report["search"]["sampler"] == "tpe" and report["search"]["trials"] == 6
    assert report["frontier"] and report["goals_met"]
    early = {**recipe, "search": {**recipe["search"], "sampler": "grid", "max_trials": 12,
                                  "stop_when_goals_met": True}}
    job, report = submit(api, model, data, early)
    assert report["search"]["stopped"] and report["search"]["skipped"] > 0 and report["goals_met"]


def test_cancelling_a_search_cancels_its_candidates(api, digits_job, stack):
    model, data = digits_job
    slow = {**SPACE, "steps": [SPACE["steps"][0], {"distill": {"epochs": 300}}, SPACE["steps"][2]],
            "search": {"sampler": "grid", "max_trials": 12, "optional": ["distill"]}}
    job = api.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data, "recipe": slow}).json()
    deadline = time.monotonic() + 120
    while "candidates" not in api.get(f"/v1/jobs/{job['id']}").json()["progress"]["message"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    time.sleep(2)
    api.post(f"/v1/jobs/{job['id']}/cancel")
    assert wait_job(api, job["id"], timeout=90)["status"] == "cancelled"
    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    assert r.exists(f"pareto:fleet:{job['id']}:1:closed")  # helpers see the run closed and leave


def test_accuracy_aware_fallback_keeps_sensitive_layers_in_float(api, digits_job):
    model, data = digits_job
    recipe = {"steps": [{"quantize": {"mode": "static", "per_channel": False, "calibration_samples": 8}}],
              "goals": [{"metric": "fidelity.cosine", "threshold": 0.99995}]}
    job, report = submit(api, model, data, recipe)
    notes = " ".join(report["candidates"][0]["notes"])
    assert "quantize fallback" in notes
    table = [d for d in report["candidates"][0]["decisions"] if d["step"] == "quantize fallback"]
    assert table and [d["settings"]["sensitivity_rank"] for d in table] == list(range(1, len(table) + 1))
    fidelity = [d["fidelity"] for d in table]
    assert fidelity == sorted(fidelity)  # the most sensitive (the lowest fidelity when quantized alone) first
    assert all(d["settings"]["op_type"] in ("Conv", "MatMul", "Gemm") and d["settings"]["params"] for d in table)
    kept = [d for d in table if d["chosen"]]
    assert kept == table[: len(kept)] and bool(kept) == ("quantize fallback kept" in notes)
    if "kept" in notes:
        assert report["candidates"][0]["goals_met"]
    else:  # it could not: the report says so and the job still answers
        assert "could not meet" in notes and not report["goals_met"]


@pytest.fixture(scope="module")
def fleet(services, tmp_path_factory):
    """Two workers with a short node lease, so that a lost worker's candidate is rerun within seconds."""
    from tests.stack import Stack

    redis_url, s3_url, _ = services
    s = Stack.start(tmp_path_factory.mktemp("fleet"), other_database(redis_url, 2), s3_url, workers=2,
                    PARETO_NODE_LEASE_S=8)
    yield s
    s.stop()


@pytest.mark.slow
def test_a_worker_lost_mid_search_loses_no_candidate(fleet, digits_cnn):
    with fleet.client() as api:
        model, data = upload_model(api, digits_cnn["onnx"], "onnx"), upload_dataset(api, digits_cnn["all"])["id"]
        recipe = {**SPACE, "steps": [SPACE["steps"][0], {"distill": {"epochs": 15, "lr": 0.002}},
                                     SPACE["steps"][2]]}
        job = api.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data, "recipe": recipe}).json()
        helper = wait_for_helper(fleet, job["id"])
        time.sleep(1.5)  # in the middle of a candidate
        helper.kill()
        done = wait_job(api, job["id"], timeout=600)
        assert done["status"] == "succeeded", done
        report = api.get(f"/v1/jobs/{job['id']}/report").json()
        assert len(report["candidates"]) == 18 and not report["failures"]  # every candidate accounted for


def wait_for_helper(stack, job_id: str, timeout: float = 120):
    """The worker running a helper task (not the coordinator) of the job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in stack.workers:
            log = w.log.read_text(errors="replace")
            if "pareto.trials[" in log and job_id in log and f"pareto.optimize[{job_id}]" not in log:
                return w
        time.sleep(0.2)
    raise AssertionError("no helper task started")

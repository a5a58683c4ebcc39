"""Reports people read and measurement on the real target: report.json against its published schema for
every built-in recipe, report.html parsed, regressions flagged, torch eager as a runtime, workers
advertising what they serve, and a job no worker can serve failing fast."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
import jsonschema
import pytest

from core.recipes import builtin_names
from tests.helpers import artifacts, submit
from tests.stack import wait_job


@pytest.fixture(scope="module")
def schema(api):
    body = api.get("/v1/schemas/report").json()
    assert body["$id"].endswith("/report/v1.json") and body["properties"]["schema_version"]["const"] == 1
    return body


@pytest.mark.parametrize("recipe", builtin_names())
def test_report_validates_against_the_schema_for_every_builtin_recipe(api, digits_job, schema, recipe):
    model, data = digits_job
    job, report = submit(api, model, data, recipe)
    jsonschema.validate(report, schema)
    files = artifacts(api, job)
    assert {"model.onnx", "report.json", "report.html"} <= set(files)


class Page(HTMLParser):
    """What a person would look at: plots, table rows and their classes, the text."""

    def __init__(self):
        super().__init__()
        self.svgs, self.rows, self.text, self.tags = 0, [], [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "svg":
            self.svgs += 1
        if tag == "tr":
            self.rows.append(dict(attrs).get("class") or "")

    def handle_data(self, data):
        self.text.append(data)


def test_slower_candidate_is_flagged_and_the_page_shows_it(api, digits_job):
    model, data = digits_job
    slow = {"quantize": {"mode": "dynamic", "op_types": ["Conv", "MatMul", "Gemm"]}}  # ConvInteger on CPU: slow
    job, report = submit(api, model, data, {"steps": [slow]}, target={"batch_sizes": [1, 16], "repeats": 20})
    candidate = report["candidates"][0]
    assert candidate["regressions"] and "x the baseline's" in candidate["regressions"][0]
    assert report["regressions"] == [candidate["id"]]
    page = Page()
    page.feed(artifacts(api, job)["report.html"].decode())
    assert page.svgs >= 2 and "script" not in page.tags  # two plots, inline, nothing to fetch
    candidate_rows = [cls for cls in page.rows if cls != "op" and "decision" not in cls]  # the candidates table's
    assert len(candidate_rows) == 1 + 1 + len(report["candidates"])  # header, baseline, candidates
    assert any("regression" in cls for cls in page.rows) and any("recommended" in cls for cls in page.rows)
    text = " ".join(page.text)
    assert "Slower than the baseline" in text and report["environment"]["cpu"] in text and "frontier" in text.lower()
    # why it is slower, from the per-operator profiles: the integer convolutions, named
    assert report["baseline"]["profile"]["ops"] and candidate["profile"]["total_ms"] > 0
    assert "ConvInteger" in {o["op"] for o in candidate["profile"]["ops"]}
    assert any(c.startswith("ConvInteger on ") and "no fast CPU kernel" in c for c in candidate["profile"]["causes"])
    assert "Where the time goes" in text and "ConvInteger on " in text
    assert "Deploy " in text or "Keep the uploaded model" in text  # what to deploy, in one sentence
    assert "link" not in page.tags and "img" not in page.tags


def test_torch_eager_is_a_runtime(api, digits_job):
    model, data = digits_job
    recipe = {"steps": [{"prune": {"method": "structured", "ratio": 0.5}}, {"quantize": {"mode": "static"}}]}
    job, report = submit(api, model, data, recipe, target={"runtime": "torch", "batch_sizes": [1], "repeats": 10})
    assert report["measurement"]["runtime"] == "torch" and "eager" in report["measurement"]["providers"][0]
    assert report["candidates"][0]["metrics"]["latency_ms"]["1"]["p50"] > 0
    int8 = report["candidates"][1]
    assert any("not runnable on torch eager" in n for n in int8["notes"])  # measured on onnxruntime, said so


def test_workers_advertise_what_they_serve(api):
    workers = api.get("/v1/workers").json()
    assert workers and all("cpu" in w["queues"] and "CPUExecutionProvider" in w["providers"] for w in workers)


def test_a_target_no_worker_serves_fails_fast(api, digits_job):
    model, _ = digits_job
    r = api.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "target": {"device": "cuda"}})
    job = wait_job(api, r.json()["id"], timeout=60)  # the stack waits PARETO_TARGET_WAIT_S=10 s
    assert job["status"] == "failed" and job["error"]["code"] == "target_unavailable"
    assert "pareto worker --queues gpu" in job["error"]["message"]
    assert httpx.get(api.base_url.join("/healthz")).status_code == 200

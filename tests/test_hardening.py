"""One tenant must not stall the service, and no tenant's data may leak onto disk: each input a hostile tenant
(or an unauthenticated client) could send is answered in bounded time, through the public API on the real
stack, and leaves the service free for the others."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import npz_bytes, other_database, problem, refused_upload, relu_model, upload_model
from tests.hostile import (
    endless_pickles,
    export_small_program,
    huge_size_expression,
    if_with_external_subgraph_tensor,
    incomplete_shape_inference,
    many_programs,
    matmul_chain,
)
from tests.stack import Stack, wait_job
from tests.webhook_receiver import Receiver

REPO = Path(__file__).resolve().parents[1]


def onnx_upload(client, model: onnx.ModelProto) -> dict:
    r = client.post("/v1/models", params={"format": "onnx"}, content=model.SerializeToString())
    assert r.status_code == 201, r.text
    return r.json()


ANY_MODEL = {"steps": [{"optimize_graph": {}}]}  # a recipe every graph can take
# A target that keeps the baseline's measurement busy for minutes: only stopping it ends the job early.
ENDLESS = {"batch_sizes": [1024], "repeats": 20000, "warmup": 0}


# --------------------------------------------------------------------------------------------------
# search spaces
# --------------------------------------------------------------------------------------------------

def test_a_search_whose_options_repeat_is_one_point(client, digits):
    model = upload_model(client, digits[0])
    recipe = {"steps": [{"quantize": {"mode": "dynamic", "per_channel": [True] * 10_001}}],
              "search": {"sampler": "random", "max_trials": 20}}
    started = time.monotonic()
    r = client.post("/v1/jobs", params={"dry_run": "true"}, json={"model_id": model["id"], "recipe": recipe})
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 10
    assert r.json()["trials"] == 1 and r.json()["recipe"]["search"]["space"][0]["values"] == [True]
    job = wait_job(client, client.post("/v1/jobs", json={"model_id": model["id"], "recipe": recipe,
                                                         "target": {"repeats": 5}}).json()["id"])
    assert job["status"] == "succeeded", job


@pytest.mark.parametrize("step", [0, -1, 2])
def test_a_search_space_naming_no_step_is_422(client, digits, step):
    model = upload_model(client, digits[0])
    space = [{"step": step, "param": "per_channel", "values": [True, False]}]
    recipe = {"steps": [{"quantize": {"mode": "dynamic"}}], "search": {"sampler": "random", "space": space}}
    for params in ({"dry_run": "true"}, {}):
        problem(client.post("/v1/jobs", params=params, json={"model_id": model["id"], "recipe": recipe}), 422,
                "invalid_recipe")


# --------------------------------------------------------------------------------------------------
# hostile .pt2 and ONNX uploads: refused quickly, outside the API process
# --------------------------------------------------------------------------------------------------

def api_rss(stack: Stack) -> int:
    """The API process's peak resident memory (VmHWM), bytes."""
    for line in Path(f"/proc/{stack.api.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def pt2_archive(tmp_path_factory):
    return export_small_program(tmp_path_factory.mktemp("pt2") / "seq.pt2")


def test_pt2_of_many_compressible_programs_costs_the_api_nothing(client, stack, pt2_archive, tmp_path):
    hostile = many_programs(pt2_archive, tmp_path / "many.pt2")
    assert hostile.stat().st_size < 2 * 1024 * 1024
    before = api_rss(stack)
    started = time.monotonic()
    refused_upload(client, hostile.read_bytes(), "unsafe_archive", fmt="pt2")
    assert time.monotonic() - started < 20
    assert api_rss(stack) - before < 200 * 1024 * 1024


def test_pt2_of_endless_pickles_is_refused_in_seconds(client, pt2_archive, tmp_path):
    hostile = endless_pickles(pt2_archive, tmp_path / "nones.pt2")
    started = time.monotonic()
    r = client.post("/v1/models", params={"format": "pt2"}, content=hostile.read_bytes())
    assert r.status_code == 422 and r.json()["code"] in ("archive_too_large", "unsafe_pickle"), r.text
    assert time.monotonic() - started < 20


def test_pt2_with_a_huge_size_expression_is_refused(client, pt2_archive, tmp_path):
    refused_upload(client, huge_size_expression(pt2_archive, tmp_path / "pow.pt2").read_bytes(), "unsafe_graph",
                   fmt="pt2")


def test_onnx_external_data_is_refused_in_subgraphs_too(client):
    refused_upload(client, if_with_external_subgraph_tensor().SerializeToString(), "external_data")


def test_onnx_node_count_includes_subgraphs(client):
    from core.checks.model import MAX_NODES

    body = relu_model(1)
    loop_body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         *[helper.make_node("Identity", ["v" if i == 0 else f"v{i}"], [f"v{i + 1}"]) for i in range(MAX_NODES)]],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info(f"v{MAX_NODES}", TensorProto.FLOAT, ["n", 3])])
    body.graph.node.append(helper.make_node("Loop", ["", "", "y"], ["z"], body=loop_body))
    body.graph.output[0].name = "z"
    problem_body = refused_upload(client, body.SerializeToString(), "invalid_model")
    assert "subgraphs" in problem_body["detail"]


# --------------------------------------------------------------------------------------------------
# the API: authentication before the body, caps on streams and form fields
# --------------------------------------------------------------------------------------------------

def test_a_request_without_a_key_is_refused_before_its_body(stack):
    port = urlsplit(stack.api_url).port
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n{")  # and then nothing: a slow body
        started = time.monotonic()
        answer = s.recv(65536)
        assert time.monotonic() - started < 5
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_event_streams_per_key_are_capped(client, stack, digits):
    model = upload_model(client, digits[0])
    job = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "target": {"device": "cuda"}}).json()
    streams = []
    try:
        for _ in range(8):  # PARETO_MAX_STREAMS_PER_KEY's default
            s = client.stream("GET", f"/v1/jobs/{job['id']}/events")
            streams.append(s)
            assert s.__enter__().status_code == 200
        body = problem(client.get(f"/v1/jobs/{job['id']}/events"), 429, "too_many_streams")
        assert "PARETO_MAX_STREAMS_PER_KEY" in body["detail"]
    finally:
        for s in streams:
            s.__exit__(None, None, None)
        client.post(f"/v1/jobs/{job['id']}/cancel")
    time.sleep(1)
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as again:
        assert again.status_code == 200


def test_form_fields_are_capped(client, digits):
    fields = {f"f{i}": "x" for i in range(17)}  # PARETO_MAX_FORM_FIELDS's default is 16
    r = client.post("/v1/models", data=fields, files={"file": ("m.onnx", digits[0].read_bytes())})
    problem(r, 422, "too_many_form_fields")


# --------------------------------------------------------------------------------------------------
# submit: what a job would choke on is a 422 up front
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [[1, 65536, 65536], [1, 4096, 4096, 8]])
def test_generated_inputs_are_capped_in_total(client, shape):
    big = relu_model()
    for value in (*big.graph.input, *big.graph.output):  # as many dynamic dimensions as the shape asked for
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for axis in range(len(shape)):
            dims.add().dim_param = f"d{axis}"
    model = onnx_upload(client, big)
    body = problem(client.post("/v1/jobs", json={"model_id": model["id"], "recipe": ANY_MODEL,
                                                 "target": {"input_shapes": {"x": shape}}}), 422, "inputs_too_large")
    assert "PARETO_MAX_INPUT_ELEMENTS" in body["detail"]


def test_model_dimensions_are_capped_in_total(client):
    huge = relu_model()
    for value in (*huge.graph.input, *huge.graph.output):
        value.type.tensor_type.shape.dim[1].dim_value = 2**31
    model = onnx_upload(client, huge)
    problem(client.post("/v1/jobs", json={"model_id": model["id"], "recipe": ANY_MODEL}), 422, "inputs_too_large")


def test_empty_and_non_finite_datasets_are_refused(client):
    body = problem(client.post("/v1/datasets", content=npz_bytes(x=np.zeros((0, 3), np.float32))), 422,
                   "empty_dataset")
    assert "no sample" in body["detail"]
    x = np.ones((4, 3), np.float32)
    x[2, 1] = np.nan
    problem(client.post("/v1/datasets", content=npz_bytes(x=x)), 422, "non_finite_values")
    problem(client.post("/v1/datasets", content=npz_bytes(x=np.ones((4, 3), np.float32),
                                                           labels=np.array([0, 1, np.inf, 2]))), 422,
            "non_finite_values")


def test_a_split_without_evaluation_rows_is_refused_at_submit(client):
    model = onnx_upload(client, relu_model())
    r = client.post("/v1/datasets", content=npz_bytes(x=np.ones((4, 3), np.float32), split=np.zeros(4, np.int64)))
    assert r.status_code == 201, r.text
    assert r.json()["split"] == {"train": 4, "eval": 0}
    problem(client.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": r.json()["id"], "recipe": ANY_MODEL}),
            422, "no_eval_samples")


def test_an_idempotency_key_with_another_body_is_422(client, digits):
    model = upload_model(client, digits[0])
    body = {"model_id": model["id"], "recipe": "int8", "target": {"device": "cuda"}}  # stays queued
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "hardening-1"})
    assert first.status_code == 202
    other = {**body, "target": {"device": "cuda", "repeats": 7}}
    problem(client.post("/v1/jobs", json=other, headers={"Idempotency-Key": "hardening-1"}), 422,
            "idempotency_key_reused")
    assert client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "hardening-1"}).json()["id"] == \
        first.json()["id"]
    client.post(f"/v1/jobs/{first.json()['id']}/cancel")


@pytest.mark.parametrize("url", ["http://[2002:7f00:1::]/hook", "http://[2002:a00:1::]:8080/"])  # 6to4
def test_callbacks_to_addresses_embedding_private_ones_are_refused(client, digits, url):
    model = upload_model(client, digits[0])
    problem(client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "callback_url": url}), 422,
            "callback_url_refused")


# --------------------------------------------------------------------------------------------------
# workers: cancelling frees the worker; webhooks and metrics do not hold it; nothing leaks onto disk
# --------------------------------------------------------------------------------------------------

def test_cancelling_a_job_inside_a_measurement_frees_the_worker_in_seconds(client, other_client, digits):
    busy = onnx_upload(client, matmul_chain())
    job = client.post("/v1/jobs", json={"model_id": busy["id"], "recipe": "int8", "target": ENDLESS}).json()
    wait_until_message(client, job["id"], "measuring the baseline")
    time.sleep(1)
    cancelled_at = time.monotonic()
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    assert wait_job(client, job["id"], timeout=30)["status"] == "cancelled"
    assert time.monotonic() - cancelled_at < 10
    theirs = upload_model(other_client, digits[0])
    after = other_client.post("/v1/jobs", json={"model_id": theirs["id"], "recipe": "int8",
                                                "target": {"repeats": 5}}).json()
    assert wait_job(other_client, after["id"], timeout=120)["status"] == "succeeded"


def wait_until_message(client, job_id: str, text: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if text in (job["progress"]["message"] or "") or job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never said {text!r}")


def test_a_callback_receiver_that_never_answers_does_not_hold_the_worker(client, other_client, digits):
    silent = Receiver(mode="hang", for_s=300)
    try:
        model = upload_model(client, digits[0])
        first = client.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8", "callback_url": silent.url,
                                              "target": {"repeats": 5}}).json()
        theirs = upload_model(other_client, digits[0])
        second = other_client.post("/v1/jobs", json={"model_id": theirs["id"], "recipe": "int8",
                                                     "target": {"repeats": 5}}).json()
        done = wait_job(client, first["id"])
        assert done["status"] == "succeeded"
        started = other_client.get(f"/v1/jobs/{second['id']}").json()
        deadline = time.monotonic() + 10
        while started["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.2)
            started = other_client.get(f"/v1/jobs/{second['id']}").json()
        assert started["status"] != "queued", "the worker is still held by the first job's callback"
        deadline = time.monotonic() + 10  # the callback goes out from a background thread: it may still be connecting
        while not silent.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(silent.requests) >= 1
        assert wait_job(other_client, second["id"])["status"] == "succeeded"
    finally:
        silent.close()


def test_macro_f1_over_many_distinct_labels_is_quick(client):
    """Macro-F1 once looped over every distinct label: quadratic, minutes for this dataset."""
    n = 300_000
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["logits"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 8])],
                              [numpy_helper.from_array(w, "w")])
    model = onnx_upload(client, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    data = client.post("/v1/datasets", content=npz_bytes(x=rng.standard_normal((n, 4)).astype(np.float32),
                                                          labels=np.arange(n)))
    assert data.status_code == 201, data.text
    started = time.monotonic()
    job = client.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data.json()["id"],
                                        "recipe": {"steps": [{"quantize": {"mode": "dynamic"}}]},
                                        "target": {"repeats": 5}}).json()
    done = wait_job(client, job["id"], timeout=300)
    assert done["status"] == "succeeded", done
    assert time.monotonic() - started < 60
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert "macro_f1" in report["baseline"]["metrics"]["quality"]


def stray_files(folder: Path) -> list[Path]:
    return [p for p in folder.glob("*") if p.name.startswith("sym_shape_infer_temp") or p.suffix == ".data"]


def test_shape_inference_writes_nothing_outside_the_jobs_folder(client, stack):
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = incomplete_shape_inference()
    os.chdir(stack.root)  # shows the graph does what this test needs: the temporary files land in the cwd
    try:
        with pytest.raises(Exception, match="Incomplete symbolic shape inference"):
            SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)
        assert stray_files(stack.root)
        for f in stray_files(stack.root):
            f.unlink()
    finally:
        os.chdir(REPO)
    before = set(stray_files(REPO))
    uploaded = onnx_upload(client, model)
    job = wait_job(client, client.post("/v1/jobs", json={"model_id": uploaded["id"], "recipe": ANY_MODEL,
                                                         "target": {"repeats": 5}}).json()["id"])
    assert job["status"] in ("succeeded", "failed"), job
    assert job["status"] == "succeeded" or job["error"]["code"] != "internal_error", job
    assert set(stray_files(REPO)) == before  # the worker's current directory
    work = stack.root / "work"
    assert not any(stray_files(work)) and not list(work.glob("*/"))  # the job's folder went with the job


def test_job_errors_do_not_show_worker_paths(client):
    """onnxruntime names the file it could not load; the job's error must not show the worker's folders."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "k"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor("k", TensorProto.INT64, [3], [1, 2, 3])])
    model = onnx_upload(client, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    job = wait_job(client, client.post("/v1/jobs", json={"model_id": model["id"], "recipe": ANY_MODEL}).json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "model_run_failed", job
    assert "Load model from" in job["error"]["message"]  # onnxruntime's words, which name the file
    assert not re.search(r"(^|[\s'\"(])/\w", job["error"]["message"]), job["error"]["message"]


def test_the_embedded_filer_does_not_serve_files(client, services, digits):
    _, s3_url, _ = services
    model = upload_model(client, digits[0])
    filer = urlsplit(s3_url).port + 3
    try:
        r = httpx.get(f"http://127.0.0.1:{filer}/buckets/pareto/tenant-a/models/{model['id']}/model", timeout=5)
    except httpx.HTTPError:
        return  # not listening at all: fine
    assert r.status_code != 200 and digits[0].read_bytes()[:64] not in r.content


# --------------------------------------------------------------------------------------------------
# a stack with small limits: budgets and body deadlines
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tight(services, tmp_path_factory):
    redis_url, s3_url, _ = services
    s = Stack.start(tmp_path_factory.mktemp("tight"), other_database(redis_url, 3), s3_url, workers=1,
                    PARETO_BODY_TIMEOUT_S=3, PARETO_BODY_IDLE_TIMEOUT_S=2, PARETO_HEADER_TIMEOUT_S=2,
                    PARETO_JOB_CPU_S=15, PARETO_JOB_MEMORY_BYTES=3 * 1024**3, PARETO_CANCEL_GRACE_S=3,
                    PARETO_WEBHOOK_SECRET="s")
    yield s
    s.stop()


def test_a_refused_callback_does_not_say_what_a_name_resolves_to(tight, digits):
    """No allowlist on this stack: localhost is refused, and the answer does not tell what it resolved to."""
    with tight.client("tenant-a") as c:
        model = upload_model(c, digits[0])
        body = problem(c.post("/v1/jobs", json={"model_id": model["id"], "recipe": "int8",
                                                "callback_url": "http://localhost:9/hook"}), 422,
                       "callback_url_refused")
    assert "localhost" in body["detail"] and "127.0.0.1" not in body["detail"] and "::1" not in body["detail"]


def test_a_body_sent_slowly_is_cut_off_at_its_total_deadline(tight):
    port = urlsplit(tight.api_url).port
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
                  + tight.keys["tenant-a"].encode() + b"\r\nContent-Length: 1000\r\n\r\n")
        started, answer = time.monotonic(), b""
        while not answer and time.monotonic() - started < 15:
            s.sendall(b" ")  # a byte a second: never idle for PARETO_BODY_IDLE_TIMEOUT_S
            s.settimeout(1)
            try:
                answer = s.recv(65536)
            except TimeoutError:
                pass
        assert time.monotonic() - started < 8
        s.settimeout(5)
        with contextlib.suppress(ConnectionResetError):  # closed with our trickled bytes unread: a reset
            while chunk := s.recv(65536):  # the rest of the answer, until the API closes the connection
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"took longer than 3" in answer


def test_a_connection_that_never_finishes_its_headers_is_closed(tight):
    port = urlsplit(tight.api_url).port
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        started = time.monotonic()
        s.settimeout(10)
        assert s.recv(65536) == b""  # closed by the server
        assert time.monotonic() - started < 5
    with tight.client("tenant-a") as c:  # a request that does finish its headers is served as before
        assert c.get("/v1/recipes").status_code == 200


def test_a_job_over_its_cpu_budget_fails_with_a_code(tight):
    with tight.client("tenant-a") as c:
        busy = onnx_upload(c, matmul_chain())
        job = c.post("/v1/jobs", json={"model_id": busy["id"], "recipe": "int8", "target": ENDLESS}).json()
        done = wait_job(c, job["id"], timeout=120)
        assert done["status"] == "failed" and done["error"]["code"] == "cpu_budget_exceeded", done
        assert "PARETO_JOB_CPU_S" in done["error"]["message"]


def test_a_job_over_its_memory_budget_fails_with_a_code(tight):
    """Tile makes each sample of 16 floats 2^20 times larger (64 MiB): the outputs of the 64 generated samples
    alone are 4 GiB, over the 3 GiB budget."""
    graph = helper.make_graph([helper.make_node("Tile", ["x", "reps"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16 << 20])],
                              [numpy_helper.from_array(np.array([1, 1 << 20], np.int64), "reps")])
    with tight.client("tenant-a") as c:
        model = onnx_upload(c, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
        job = c.post("/v1/jobs", json={"model_id": model["id"], "recipe": ANY_MODEL,
                                       "target": {"batch_sizes": [64], "repeats": 5}}).json()
        done = wait_job(c, job["id"], timeout=120)
        assert done["status"] == "failed" and done["error"]["code"] == "memory_budget_exceeded", done
        # the worker is free again
        again = c.post("/v1/jobs", json={"model_id": onnx_upload(c, relu_model())["id"], "recipe": ANY_MODEL,
                                         "target": {"repeats": 5}}).json()
        assert wait_job(c, again["id"], timeout=120)["status"] == "succeeded"

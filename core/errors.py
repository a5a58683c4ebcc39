"""Errors that say who must act.

Each carries a stable `code` (what clients match on), the HTTP status the gateway answers with, and
whether it is the user's to fix. Workers store `code` and the message on a failed job; the gateway turns
them into problem+json. Nobody sees a bare traceback as the message.
"""

from __future__ import annotations

import re
from enum import StrEnum


class ErrorCode(StrEnum):
    """Every stable code a client can meet: in a problem+json answer (`status`: its HTTP status) or as a failed
    job's `error.code` (`status` 0). `who` must act (client, operator); `action` says what to do. docs/errors.md
    is generated from this table (`python -m cli.docs`), and no code is written anywhere else
    (tests/unit/test_errors.py)."""

    def __new__(cls, value: str, status: int, who: str, action: str):
        member = str.__new__(cls, value)
        member._value_ = value
        member.status, member.who, member.action = status, who, action
        return member

    # -- any request
    unauthorized = ("unauthorized", 401, "client",
                    "send `Authorization: Bearer <key>` with a valid key that was not revoked")
    rate_limited = "rate_limited", 429, "client", "wait `Retry-After` seconds; spread the requests out"
    too_many_streams = ("too_many_streams", 429, "client",
                        "close an event stream of this key, or poll `GET /v1/jobs/{id}` instead")
    payload_too_large = ("payload_too_large", 413, "client",
                         "send a smaller body (PARETO_MAX_JSON_BYTES, PARETO_MAX_UPLOAD_BYTES)")
    request_timeout = "request_timeout", 408, "client", "send the request body faster and without pauses"
    invalid_request = "invalid_request", 422, "client", "fix the fields the answer's `errors` list names"
    invalid_input = "invalid_input", 422, "client", "fix the input the detail names"
    not_found = ("not_found", 404, "client",
                 "check the path and the id (another tenant's resources are not found either)")
    method_not_allowed = "method_not_allowed", 405, "client", "use a method the route takes (see `/docs`)"
    http_error = "http_error", 400, "client", "fix the request the detail describes"
    conflict = "conflict", 409, "client", "read the resource's state first"
    internal_error = ("internal_error", 500, "operator",
                      "a bug: report it with the answer's X-Request-ID or the job's id")
    service_unavailable = "service_unavailable", 503, "operator", "retry later; check Redis and S3 (`/readyz`)"
    jobstore_unavailable = "jobstore_unavailable", 503, "operator", "retry later; check Redis"
    queue_unavailable = "queue_unavailable", 503, "operator", "retry later; check the broker (Redis)"
    # -- uploads
    empty_upload = "empty_upload", 422, "client", "send the file in the body"
    invalid_multipart = ("invalid_multipart", 422, "client",
                         "send multipart/form-data with a boundary and a `file` part, or the raw file")
    too_many_form_fields = ("too_many_form_fields", 422, "client",
                            "send the file with at most PARETO_MAX_FORM_FIELDS other fields")
    invalid_format = "invalid_format", 422, "client", "say `format=onnx` or `format=pt2`"
    invalid_model = ("invalid_model", 422, "client",
                     "upload a valid ONNX model (onnx.checker.check_model passes); the detail says what is wrong")
    external_data = ("external_data", 422, "client",
                     "save the model self-contained: onnx.save(model, path, save_as_external_data=False)")
    model_check_limit = ("model_check_limit", 422, "client",
                         "upload a smaller or simpler model; the check went over PARETO_CHECK_CPU_S or its memory")
    not_pt2 = ("not_pt2", 422, "client",
               "save the model with torch.export.save(torch.export.export(model, example_inputs), path)")
    unsafe_pickle = ("unsafe_pickle", 422, "client",
                     "re-export with plain tensors as example inputs and no custom objects")
    unsafe_archive = ("unsafe_archive", 422, "client",
                      "save one program with torch.export.save; no links, extra programs or native code")
    archive_too_large = "archive_too_large", 422, "client", "upload a smaller archive (no zip bombs)"
    unsafe_graph = ("unsafe_graph", 422, "client",
                    "export with plain symbolic sizes (torch.export.Dim); the expression named is refused")
    unsupported_model = ("unsupported_model", 422, "client",
                         "export a program whose inputs and outputs are tensors")
    invalid_dataset = ("invalid_dataset", 422, "client",
                       "upload an .npz of numeric arrays named after the model's inputs (np.savez)")
    empty_dataset = "empty_dataset", 422, "client", "upload a dataset with at least one sample"
    non_finite_values = "non_finite_values", 422, "client", "replace NaN and infinite values in the dataset"
    model_not_found = "model_not_found", 404, "client", "check the model id (GET /v1/models)"
    dataset_not_found = "dataset_not_found", 404, "client", "check the dataset id (GET /v1/datasets)"
    # -- submitting a job
    invalid_recipe = "invalid_recipe", 422, "client", "fix the recipe where the detail says (GET /v1/steps)"
    unknown_recipe = "unknown_recipe", 422, "client", "name a built-in recipe (GET /v1/recipes) or send one inline"
    recipe_not_found = "recipe_not_found", 404, "client", "name a built-in recipe (GET /v1/recipes)"
    unsupported_step = ("unsupported_step", 422, "client",
                        "leave out the steps the detail names, or choose others for this model")
    dataset_required = "dataset_required", 422, "client", "pass a dataset_id: the steps named learn from data"
    dataset_mismatch = ("dataset_mismatch", 422, "client",
                        "give the dataset an array per model input, of its dtype and shape")
    no_eval_samples = ("no_eval_samples", 422, "client",
                       "mark samples for evaluation (split 1) or lower data.eval_fraction")
    inputs_too_large = ("inputs_too_large", 422, "client",
                        "fix dynamic dimensions with target.input_shapes, or use smaller batch sizes")
    input_shapes_mismatch = ("input_shapes_mismatch", 422, "client",
                             "give target.input_shapes only for the model's inputs, with their rank and fixed sizes")
    idempotency_key_reused = "idempotency_key_reused", 422, "client", "use a new Idempotency-Key for a new job"
    callback_url_refused = ("callback_url_refused", 422, "client",
                            "use a public http(s) address, or ask the operator to allowlist it")
    webhooks_disabled = ("webhooks_disabled", 422, "operator",
                         "set PARETO_WEBHOOK_SECRET to accept callback URLs (or submit without one)")
    # -- reading jobs
    job_not_found = "job_not_found", 404, "client", "check the job id (GET /v1/jobs)"
    job_finished = "job_finished", 409, "client", "nothing to do: the job already ended"
    job_not_finished = "job_not_finished", 409, "client", "wait until the job has succeeded (poll or stream it)"
    job_has_no_results = "job_has_no_results", 409, "client", "the job failed or was cancelled: read its error"
    job_state = "job_state", 409, "operator", "a bug: a job was moved to a state it cannot reach from its own"
    report_missing = "report_missing", 404, "operator", "the report is gone from storage; submit the job again"
    # -- a failed job's error.code
    cancelled = "cancelled", 0, "client", "nothing: the job was cancelled as asked"
    worker_lost = ("worker_lost", 0, "operator",
                   "workers died running this job (out of memory?); give workers more memory, or submit again")
    time_limit = ("time_limit", 0, "client",
                  "ask for less (fewer trials, epochs, repeats), or an operator raises PARETO_TASK_TIME_LIMIT_S")
    budget_exceeded = "budget_exceeded", 0, "client", "ask for less; the job went over its budget"
    memory_budget_exceeded = ("memory_budget_exceeded", 0, "client",
                              "use smaller batches or inputs, or an operator raises PARETO_JOB_MEMORY_BYTES")
    cpu_budget_exceeded = ("cpu_budget_exceeded", 0, "client",
                           "ask for less work (repeats, trials, epochs), or an operator raises PARETO_JOB_CPU_S")
    interrupted = "interrupted", 0, "client", "submit the job again: Redis lost it while it ran"
    enqueue_failed = "enqueue_failed", 0, "operator", "the broker did not answer; submit the job again"
    target_unavailable = ("target_unavailable", 0, "operator",
                          "start a worker that serves the target (device, execution provider)")
    storage_unavailable = "storage_unavailable", 0, "operator", "check S3 and Redis; submit the job again"
    model_run_failed = ("model_run_failed", 0, "client",
                        "the model did not run on the target: fix the model or the input shapes it names")
    conversion_failed = ("conversion_failed", 0, "client",
                         "the .pt2 program could not become ONNX: upload ONNX, or export a simpler program")
    step_not_applicable = "step_not_applicable", 0, "client", "change the step's parameters as the message says"
    labels_required = "labels_required", 0, "client", "give the dataset an array named labels"
    parent_failed = "parent_failed", 0, "client", "fix the earlier step that failed (see the report's failures)"
    no_candidates = ("no_candidates", 0, "client",
                     "no candidate could be made: the report's failures say why for each")


class ParetoError(Exception):
    code: str = ErrorCode.internal_error
    status = 500
    title = "Internal error"
    user_error = False  # True: the input is wrong; retrying will not help

    def __init__(self, message: str | None = None, *, code: str | None = None, **extra):
        super().__init__(message or self.title)
        self.message = message or self.title
        if code:
            self.code = code
        self.extra = extra


class Unauthorized(ParetoError):
    code, status, title, user_error = ErrorCode.unauthorized, 401, "Missing or invalid API key", True


class NotFound(ParetoError):
    code, status, title, user_error = ErrorCode.not_found, 404, "Not found", True


class Conflict(ParetoError):
    code, status, title, user_error = ErrorCode.conflict, 409, "Conflict", True


class PayloadTooLarge(ParetoError):
    code, status, title, user_error = ErrorCode.payload_too_large, 413, "Payload too large", True


class RequestTimeout(ParetoError):
    code, status, title, user_error = ErrorCode.request_timeout, 408, "Request timeout", True


class InvalidInput(ParetoError):
    code, status, title, user_error = ErrorCode.invalid_input, 422, "Invalid input", True


class InvalidModel(InvalidInput):
    code, title = ErrorCode.invalid_model, "Not a loadable model"


class InvalidDataset(InvalidInput):
    code, title = ErrorCode.invalid_dataset, "Not a usable dataset"


class InvalidRecipe(InvalidInput):
    code, title = ErrorCode.invalid_recipe, "Invalid recipe"


class TooManyRequests(ParetoError):
    """A key went over its rate limit; `retry_after_s` says when a request will be accepted again."""

    code, status, title, user_error = ErrorCode.rate_limited, 429, "Too many requests", True

    def __init__(self, message: str, retry_after_s: int, code: str | None = None):
        super().__init__(message, code=code, retry_after_s=retry_after_s)
        self.headers = {"Retry-After": str(retry_after_s)}


class Unavailable(ParetoError):
    """A dependency (Redis, S3) did not answer: transient, worth retrying."""

    code, status, title = ErrorCode.service_unavailable, 503, "A backing service is unavailable"


class JobCancelled(ParetoError):
    """Raised inside a worker when the job was cancelled; ends the job `cancelled`, not `failed`."""

    code, status, title, user_error = ErrorCode.cancelled, 409, "Job cancelled", True


class BudgetExceeded(ParetoError):
    """A job went over its CPU or memory budget (PARETO_JOB_CPU_S, PARETO_JOB_MEMORY_BYTES): the model or the
    recipe asks for more than this service gives one job."""

    code, status, title, user_error = ErrorCode.budget_exceeded, 422, "Over the job's budget", True


_ABSOLUTE_PATH = re.compile(r"""(?:^|(?<=[\s'"(\[=]))/(?:[\w.+-]+/)+([\w.+-]*)""")


def without_paths(message: str) -> str:
    """A message for the user: the worker's absolute file paths reduced to their file names."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "(a folder)", message)

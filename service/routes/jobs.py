"""Jobs: submit (validated before anything is queued), read, list, cancel, report, artifacts."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ValidationError

from core.api import ArtifactLink, DryRun, JobCreate, JobPage
from core.assets import AssetStore
from core.callbacks import check_callback_url
from core.checks.dataset_fit import dataset_problems, held_out_problems
from core.checks.recipe import input_shape_problems, input_size_problems, preflight
from core.errors import Conflict, ErrorCode, InvalidDataset, InvalidRecipe, NotFound, Unavailable
from core.ids import ID_PATTERN, new_id
from core.job import Job, JobError, JobStatus
from core.objectstore import job_prefix
from core.queue import enqueue
from core.recipe import Recipe, Target
from core.recipes import builtin_recipe
from core.search import estimate
from service.deps import Backends, BackendsDep, TenantDep

router = APIRouter(tags=["jobs"])
log = logging.getLogger("pareto.api")


def resolve_recipe(spec: str | dict[str, Any], target: Target | None) -> Recipe:
    if isinstance(spec, str):
        recipe = builtin_recipe(spec)
    else:
        try:
            recipe = Recipe.model_validate(spec)
        except ValidationError as e:
            errors = [{"loc": ["recipe", *e_["loc"]], "msg": e_["msg"]} for e_ in e.errors()]
            detail = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in errors)
            raise InvalidRecipe(detail, errors=errors) from e
    return recipe.model_copy(update={"target": target}) if target else recipe


def _enqueue(b: Backends, job: Job) -> None:
    try:
        enqueue(b.celery, job)
    except Exception as e:
        log.error("could not enqueue job %s: %s", job.id, e)
        b.jobs.transition(job.id, JobStatus.failed,
                          error=JobError(code=ErrorCode.enqueue_failed, message="the job queue did not answer"))
        raise Unavailable("the job queue did not answer; the job was not queued",
                          code=ErrorCode.queue_unavailable) from e


@router.post("/jobs", status_code=202, response_model=Job | DryRun)
def create_job(
    body: JobCreate, tenant: TenantDep, b: BackendsDep, response: Response,
    idempotency_key: str | None = Header(None, max_length=200),
    dry_run: bool = Query(False, description="Validate and plan only: nothing is queued."),
) -> Job | DryRun:
    recipe = resolve_recipe(body.recipe, body.target)
    if body.callback_url:
        check_callback_url(body.callback_url, b.settings)
    model, dataset = _checked_inputs(body, tenant, b, recipe)
    if dry_run:
        response.status_code = 200
        return DryRun(recipe=recipe, **estimate(recipe, model.size_bytes, dataset.samples if dataset else 0))
    job = Job(id=new_id("j"), tenant=tenant, model_id=body.model_id, dataset_id=body.dataset_id,
              recipe=recipe, callback_url=body.callback_url)
    if idempotency_key and (existing := b.idempotency.claim(tenant, idempotency_key, job.id,
                                                            body.model_dump_json())):
        job = b.jobs.get(tenant, existing)
    else:
        b.jobs.create(job)
        _enqueue(b, job)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job


def _checked_inputs(body: JobCreate, tenant: str, b: Backends, recipe: Recipe):
    """The model and dataset, once they are known to fit the recipe (422 with every problem otherwise)."""
    assets = AssetStore(b.objects)
    model = assets.load(tenant, "models", body.model_id)
    problems = preflight(recipe, model)
    if problems:
        raise InvalidRecipe("the recipe cannot run on this model: " + "; ".join(problems),
                            code=ErrorCode.unsupported_step, problems=problems)
    shapes = input_shape_problems(recipe, model)
    if shapes:
        raise InvalidRecipe("; ".join(shapes), code=ErrorCode.input_shapes_mismatch, problems=shapes)
    dataset = None
    if body.dataset_id:
        dataset = assets.load(tenant, "datasets", body.dataset_id)
        mismatch = dataset_problems(dataset, model, recipe)
        if mismatch:
            raise InvalidDataset("the dataset does not fit the model and recipe: " + "; ".join(mismatch),
                                 code=ErrorCode.dataset_mismatch, problems=mismatch)
        split = held_out_problems(dataset, recipe)
        if split:
            raise InvalidDataset("; ".join(split), code=ErrorCode.no_eval_samples, problems=split)
    elif recipe.needs_dataset:
        steps = [s.name for s in recipe.steps if s.needs_data]
        raise InvalidRecipe(f"steps {steps} need a dataset: pass dataset_id", code=ErrorCode.dataset_required)
    elif unknown := [s.name for s in model.inputs if not s.generable]:
        raise InvalidRecipe(f"integer inputs {unknown}: the graph does not show which values they may take, so "
                            "none can be made up; pass a dataset_id with real samples",
                            code=ErrorCode.dataset_required)
    too_large = input_size_problems(recipe, model, dataset, b.settings.max_input_elements)
    if too_large:
        raise InvalidRecipe("; ".join(too_large), code=ErrorCode.inputs_too_large, problems=too_large)
    return model, dataset


@router.get("/jobs", response_model=JobPage)
def list_jobs(
    tenant: TenantDep, b: BackendsDep,
    status: JobStatus | None = None,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, pattern=ID_PATTERN),
) -> JobPage:
    items = b.jobs.list(tenant, status, limit, cursor)
    page = JobPage.model_construct(items=items, next_cursor=items[-1].id if len(items) == limit else None)
    return _json(page)


@router.get("/jobs/{job_id}", response_model=Job)
def read_job(job_id: str, tenant: TenantDep, b: BackendsDep) -> Job:
    return _json(b.jobs.get(tenant, job_id))


def _json(value: BaseModel) -> Response:
    """Jobs come validated from the store: serialized once, not validated again by FastAPI on the way out
    (the polling path; bench/api.py measures it)."""
    return Response(value.model_dump_json(), media_type="application/json")


@router.post("/jobs/{job_id}/cancel", status_code=202, response_model=Job)
def cancel_job(job_id: str, tenant: TenantDep, b: BackendsDep) -> Job:
    b.jobs.get(tenant, job_id)

    def cancel(job: Job) -> Job:
        if job.status.terminal:
            raise Conflict(f"job {job.id} is already {job.status}", code=ErrorCode.job_finished)
        if job.status is JobStatus.queued:
            return job.moved_to(JobStatus.cancelled)
        return job.model_copy(update={"cancel_requested": True})  # the worker stops between steps

    job = b.jobs.update(job_id, cancel)
    try:
        b.celery.control.revoke(job_id)
    except Exception as e:  # the status check in the worker is what guarantees it never runs
        log.warning("revoke of %s failed: %s", job_id, e)
    return job


def _finished(b: Backends, tenant: str, job_id: str) -> Job:
    job = b.jobs.get(tenant, job_id)
    if not job.status.terminal:
        raise Conflict(f"job {job_id} is {job.status}; results exist once it has succeeded",
                       code=ErrorCode.job_not_finished)
    if job.status is not JobStatus.succeeded:
        raise Conflict(f"job {job_id} {job.status}; it has no results", code=ErrorCode.job_has_no_results)
    return job


@router.get("/jobs/{job_id}/report")
def read_report(job_id: str, tenant: TenantDep, b: BackendsDep) -> dict:
    _finished(b, tenant, job_id)
    report = b.objects.get_json(job_prefix(tenant, job_id) + "report.json")
    if report is None:
        raise NotFound(f"the report of job {job_id} is missing from storage", code=ErrorCode.report_missing)
    return report


@router.get("/jobs/{job_id}/artifacts", response_model=list[ArtifactLink])
def list_artifacts(job_id: str, tenant: TenantDep, b: BackendsDep) -> list[ArtifactLink]:
    job = _finished(b, tenant, job_id)
    links = []
    for a in job.artifacts:
        url, expires = b.objects.presigned_get(a.key, a.name, b.settings.presign_ttl_s)
        links.append(ArtifactLink(name=a.name, size_bytes=a.size_bytes, sha256=a.sha256, url=url,
                                  expires_at=expires.isoformat()))
    return links

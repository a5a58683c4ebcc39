"""The Pareto client: upload a model and its data, submit a recipe, follow the job, fetch the results.

    from sdk import Client
    with Client("http://127.0.0.1:8000", "key") as pareto:
        model = pareto.upload_model("model.onnx")
        job = pareto.submit(model.id, "int8")
        job = pareto.wait(job.id, progress=lambda j: print(j.status, j.progress.message))
        report = pareto.report(job.id)
        files = pareto.download_artifacts(job.id, "out")

Return values are the service's own schemas (core/): `Job`, `ModelRecord`, `DatasetRecord`, `Report`,
`Recipe`. The service never discloses a job's tenant: `Job.tenant` is "" on this side. Needs neither
torch nor onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from core.api import ArtifactLink, JobPage
from core.assets import DatasetRecord, ModelRecord
from core.errors import ErrorCode
from core.job import Job
from core.recipe import Recipe, Target
from core.report import Report
from sdk.errors import ApiError, ChecksumMismatch, WaitTimeout
from sdk.sse import parse
from sdk.transport import Transport

CHUNK = 1024 * 1024
STREAM_READ_TIMEOUT_S = 60.0  # the event stream sends a heartbeat every 15 s
Progress = Callable[[Job], None]


def as_job(data: dict) -> Job:
    return Job.model_validate({**data, "tenant": ""})


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class _Changes:
    """Calls `progress` once per distinct job state seen."""

    def __init__(self, progress: Progress | None):
        self.progress, self.last, self.job = progress, None, None

    def __call__(self, job: Job) -> Job:
        seen = job.model_dump(mode="json")
        if seen != self.last:
            self.last, self.job = seen, job
            if self.progress:
                self.progress(job)
        return job


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 max_retries: int = 5, max_retry_wait: float = 30.0):
        url = url or os.environ.get("PARETO_URL")
        api_key = api_key or os.environ.get("PARETO_API_KEY")
        if not url or not api_key:
            raise ValueError("the service's URL and an API key are needed (or PARETO_URL and PARETO_API_KEY)")
        self.url = url.rstrip("/")
        self.http = Transport(self.url, api_key, timeout, max_retries, max_retry_wait)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- uploads -------------------------------------------------------------------------------------
    def _upload(self, route: str, path: str | Path, params: dict) -> dict:
        path = Path(path)
        size = path.stat().st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        params = {k: v for k, v in params.items() if v is not None}
        return self.http.request("POST", route, body=lambda: file_chunks(path), params=params,
                                 headers=headers).json()

    def upload_model(self, path: str | Path, name: str | None = None, format: str | None = None) -> ModelRecord:
        """Streams an ONNX model or a `.pt2` program from disk; `format` defaults to the file's suffix."""
        path = Path(path)
        format = format or {".onnx": "onnx", ".pt2": "pt2"}.get(path.suffix.lower())
        return ModelRecord.model_validate(
            self._upload("/v1/models", path, {"name": name or path.stem, "format": format}))

    def upload_dataset(self, path: str | Path, name: str | None = None) -> DatasetRecord:
        """Streams a `.npz` (arrays named after the model's inputs, optional `labels`) from disk."""
        path = Path(path)
        return DatasetRecord.model_validate(self._upload("/v1/datasets", path, {"name": name or path.stem}))

    def models(self) -> list[ModelRecord]:
        return [ModelRecord.model_validate(m) for m in self.http.request("GET", "/v1/models").json()]

    def datasets(self) -> list[DatasetRecord]:
        return [DatasetRecord.model_validate(d) for d in self.http.request("GET", "/v1/datasets").json()]

    # -- jobs ----------------------------------------------------------------------------------------
    def submit(self, model_id: str, recipe: str | dict | Recipe, dataset_id: str | None = None,
               target: dict | Target | None = None, idempotency_key: str | None = None,
               callback_url: str | None = None) -> Job:
        """Queues a job: `recipe` is a built-in recipe's name or an inline recipe; `target` overrides its target."""
        body: dict[str, Any] = {"model_id": model_id, "recipe": _plain(recipe)}
        for key, value in (("dataset_id", dataset_id), ("target", _plain(target)), ("callback_url", callback_url)):
            if value is not None:
                body[key] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return as_job(self.http.request("POST", "/v1/jobs", json=body, headers=headers).json())

    def job(self, job_id: str) -> Job:
        return as_job(self.http.request("GET", f"/v1/jobs/{job_id}").json())

    def jobs(self, status: str | None = None, limit: int = 20, cursor: str | None = None) -> JobPage:
        params = {k: v for k, v in (("status", status), ("limit", limit), ("cursor", cursor)) if v is not None}
        page = self.http.request("GET", "/v1/jobs", params=params).json()
        return JobPage(items=[as_job(j) for j in page["items"]], next_cursor=page.get("next_cursor"))

    def cancel(self, job_id: str) -> Job:
        return as_job(self.http.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def events(self, job_id: str, read_timeout: float = STREAM_READ_TIMEOUT_S) -> Iterator[Job]:
        """The job at once and at each change, from the service's event stream, until it ends (after the
        terminal state, or earlier if the service closes it: then follow it again, or poll)."""
        timeout = httpx.Timeout(self.http.api.timeout.connect, read=read_timeout)
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout,
                              headers={"Accept": "text/event-stream"}) as response:
            for event in parse(response.iter_lines()):
                if event.event == "error":
                    return
                if event.event in ("status", "progress"):
                    yield as_job(json.loads(event.data))

    def wait(self, job_id: str, progress: Progress | None = None, timeout: float = 3600.0,
             poll_interval: float = 1.0) -> Job:
        """Follows the job until it is succeeded, failed or cancelled, calling `progress(job)` at each
        change; returns the final job (it does not raise for a failed job: check `job.status`). Uses the
        event stream, and polls when the stream is not available."""
        deadline = time.monotonic() + timeout
        changes = _Changes(progress)
        streaming = True
        while (remaining := deadline - time.monotonic()) > 0:
            if streaming:
                job, streaming = self._follow(job_id, changes, remaining)
            else:
                job = changes(self.job(job_id))
                if not job.status.terminal:
                    time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))
            if job is not None and job.status.terminal:
                return job
        raise WaitTimeout(job_id, timeout, changes.job)

    def _follow(self, job_id: str, changes: _Changes, remaining: float) -> tuple[Job | None, bool]:
        """Follows one event stream: (the terminal job, or None; whether to use the stream again)."""
        opened = time.monotonic()
        try:
            with closing(self.events(job_id, read_timeout=min(STREAM_READ_TIMEOUT_S, remaining))) as jobs:
                for job in jobs:
                    if changes(job).status.terminal:
                        return job, True
        except ApiError as e:
            if e.status == 401 or e.code == ErrorCode.job_not_found:
                raise
            return None, False  # no event stream here (an older service, a proxy): poll
        except httpx.TransportError:
            return None, False
        return None, time.monotonic() - opened >= 1.0  # ended early: connect again, unless it closes at once

    # -- results -------------------------------------------------------------------------------------
    def report(self, job_id: str) -> Report:
        return Report.model_validate(self.http.request("GET", f"/v1/jobs/{job_id}/report").json())

    def artifacts(self, job_id: str) -> list[ArtifactLink]:
        return [ArtifactLink.model_validate(a) for a in self.http.request("GET", f"/v1/jobs/{job_id}/artifacts").json()]

    def download_artifacts(self, job_id: str, out_dir: str | Path, names: list[str] | None = None) -> dict[str, Path]:
        """Downloads the job's artifacts (or those in `names`) through their presigned URLs into `out_dir`,
        streaming to disk; each file's size and SHA-256 are checked before it gets its final name."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        for link in self.artifacts(job_id):
            if names is None or link.name in names:
                files[link.name] = self._download(link, out / Path(link.name).name)
        return files

    def _download(self, link: ArtifactLink, path: Path) -> Path:
        partial = path.with_name(path.name + ".part")
        digest, size = hashlib.sha256(), 0
        try:
            with self.http.stream("GET", link.url, api=False) as response, open(partial, "wb") as f:
                for chunk in response.iter_bytes(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    f.write(chunk)
            if digest.hexdigest() != link.sha256 or size != link.size_bytes:
                raise ChecksumMismatch(link.name, link.sha256, f"{digest.hexdigest()} ({size} bytes)")
            partial.replace(path)
            return path
        finally:
            partial.unlink(missing_ok=True)

    # -- catalog -------------------------------------------------------------------------------------
    def recipes(self) -> list[Recipe]:
        return [Recipe.model_validate(r) for r in self.http.request("GET", "/v1/recipes").json()]

    def recipe(self, name: str) -> Recipe:
        return Recipe.model_validate(self.http.request("GET", f"/v1/recipes/{name}").json())

    def steps(self) -> list[dict]:
        """Every step with its parameters' JSON schema."""
        return self.http.request("GET", "/v1/steps").json()


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

"""The job and its state machine: queued -> running -> succeeded | failed | cancelled."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from core.errors import Conflict, ErrorCode
from core.recipe import Recipe


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})

# running -> running: a redelivered job starts again after its worker died.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.failed, JobStatus.cancelled}),
    JobStatus.running: frozenset({JobStatus.running} | TERMINAL),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.cancelled: frozenset(),
}


def now() -> datetime:
    return datetime.now(UTC)


class Progress(BaseModel):
    step: int = 0
    steps_total: int = 0
    fraction: float = 0.0
    message: str = ""


class JobError(BaseModel):
    code: str
    message: str


class Artifact(BaseModel):
    name: str
    key: str = Field(exclude=True)  # object key; never shown to clients
    size_bytes: int
    sha256: str


class Job(BaseModel):
    id: str
    tenant: str = Field(exclude=True)
    status: JobStatus = JobStatus.queued
    model_id: str
    dataset_id: str | None = None
    recipe: Recipe  # resolved: built-in names expanded, the request's target applied
    callback_url: str | None = None
    progress: Progress = Field(default_factory=Progress)
    error: JobError | None = None
    created_at: datetime = Field(default_factory=now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    cancel_requested: bool = False
    artifacts: list[Artifact] = Field(default_factory=list, exclude=True)

    def moved_to(self, status: JobStatus, **changes) -> Job:
        """A copy in `status`; refuses a move the state machine does not allow (terminal states are final)."""
        if status not in TRANSITIONS[self.status]:
            raise Conflict(f"job {self.id} is {self.status}; it cannot become {status}", code=ErrorCode.job_state)
        stamp = now()
        if status is JobStatus.running and self.started_at is None:
            changes.setdefault("started_at", stamp)
        if status.terminal:
            changes.setdefault("finished_at", stamp)
        return self.model_copy(update={"status": status, **changes})

    def manifest(self) -> dict:
        """The durable record mirrored to S3: everything, tenant and artifact keys included."""
        data = self.model_dump(mode="json")
        data["tenant"] = self.tenant
        data["artifacts"] = [a.model_dump(mode="json") | {"key": a.key} for a in self.artifacts]
        return data

    @classmethod
    def from_manifest(cls, data: dict) -> Job:
        return cls.model_validate(data)

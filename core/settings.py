"""Every setting of Pareto, read from the environment (documented in README.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_S3_ACCESS_KEY = "pareto"
DEV_S3_SECRET_KEY = "pareto-dev-secret"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    env: Literal["development", "production"] = Field("development", validation_alias=_env("PARETO_ENV"))
    api_keys: str = Field("", validation_alias=_env("PARETO_API_KEYS"))

    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("S3_ENDPOINT_URL"))
    s3_public_endpoint_url: str | None = Field(None, validation_alias=_env("S3_PUBLIC_ENDPOINT_URL"))
    s3_bucket: str = Field("pareto", validation_alias=_env("S3_BUCKET"))
    s3_region: str = Field("us-east-1", validation_alias=_env("S3_REGION"))
    s3_access_key: str | None = Field(DEV_S3_ACCESS_KEY, validation_alias=_env("AWS_ACCESS_KEY_ID"))
    s3_secret_key: str | None = Field(DEV_S3_SECRET_KEY, validation_alias=_env("AWS_SECRET_ACCESS_KEY"))

    data_dir: Path = Field(Path(".pareto"), validation_alias=_env("PARETO_DATA_DIR"))
    work_dir: Path | None = Field(None, validation_alias=_env("PARETO_WORK_DIR"))

    max_upload_bytes: int = Field(2 * 1024**3, gt=0, validation_alias=_env("PARETO_MAX_UPLOAD_BYTES"))
    presign_ttl_s: int = Field(600, ge=30, le=7 * 24 * 3600, validation_alias=_env("PARETO_PRESIGN_TTL_S"))

    visibility_timeout_s: int = Field(3600, gt=0, validation_alias=_env("PARETO_VISIBILITY_TIMEOUT_S"))
    task_time_limit_s: int = Field(3300, gt=0, validation_alias=_env("PARETO_TASK_TIME_LIMIT_S"))
    max_attempts: int = Field(3, ge=1, validation_alias=_env("PARETO_MAX_ATTEMPTS"))
    restore_interval_s: int = Field(10, gt=0, validation_alias=_env("PARETO_RESTORE_INTERVAL_S"))
    worker_queues: str = Field("cpu", validation_alias=_env("PARETO_WORKER_QUEUES"))
    intra_op_threads: int = Field(0, ge=0, validation_alias=_env("PARETO_INTRA_OP_THREADS"))
    max_fanout: int = Field(16, ge=0, le=1024, validation_alias=_env("PARETO_MAX_FANOUT"))
    target_wait_s: int = Field(600, ge=1, validation_alias=_env("PARETO_TARGET_WAIT_S"))
    node_lease_s: int = Field(60, ge=5, le=3600, validation_alias=_env("PARETO_NODE_LEASE_S"))

    # reliability and security (issue 7)
    worker_retry_s: float = Field(120, ge=0, validation_alias=_env("PARETO_WORKER_RETRY_S"))
    api_retry_s: float = Field(5, ge=0, validation_alias=_env("PARETO_API_RETRY_S"))
    revoked_key_ids: str = Field("", validation_alias=_env("PARETO_REVOKED_KEY_IDS"))
    rate_limit_per_s: float = Field(50, ge=0, validation_alias=_env("PARETO_RATE_LIMIT_PER_S"))
    rate_limit_burst: int = Field(100, ge=1, validation_alias=_env("PARETO_RATE_LIMIT_BURST"))
    max_json_bytes: int = Field(1024 * 1024, gt=0, validation_alias=_env("PARETO_MAX_JSON_BYTES"))
    body_idle_timeout_s: float = Field(30, gt=0, validation_alias=_env("PARETO_BODY_IDLE_TIMEOUT_S"))
    request_timeout_s: float = Field(60, gt=0, validation_alias=_env("PARETO_REQUEST_TIMEOUT_S"))
    webhook_secret: str = Field("", validation_alias=_env("PARETO_WEBHOOK_SECRET"))
    webhook_allowlist: str = Field("", validation_alias=_env("PARETO_WEBHOOK_ALLOWLIST"))
    webhook_timeout_s: float = Field(5, gt=0, validation_alias=_env("PARETO_WEBHOOK_TIMEOUT_S"))
    webhook_attempts: int = Field(5, ge=1, le=20, validation_alias=_env("PARETO_WEBHOOK_ATTEMPTS"))
    webhook_budget_s: float = Field(60, gt=0, le=3600, validation_alias=_env("PARETO_WEBHOOK_BUDGET_S"))

    # one tenant must not stall the service (issue 18)
    body_timeout_s: float = Field(30, gt=0, validation_alias=_env("PARETO_BODY_TIMEOUT_S"))
    upload_min_bytes_per_s: int = Field(64 * 1024, ge=1, validation_alias=_env("PARETO_UPLOAD_MIN_BYTES_PER_S"))
    header_timeout_s: float = Field(10, gt=0, validation_alias=_env("PARETO_HEADER_TIMEOUT_S"))
    api_concurrency: int = Field(4096, ge=1, validation_alias=_env("PARETO_API_CONCURRENCY"))
    api_backlog: int = Field(2048, ge=1, validation_alias=_env("PARETO_API_BACKLOG"))
    max_streams_per_key: int = Field(8, ge=1, validation_alias=_env("PARETO_MAX_STREAMS_PER_KEY"))
    max_form_fields: int = Field(16, ge=1, validation_alias=_env("PARETO_MAX_FORM_FIELDS"))
    max_input_elements: int = Field(1 << 26, ge=1, validation_alias=_env("PARETO_MAX_INPUT_ELEMENTS"))
    check_cpu_s: int = Field(60, ge=1, validation_alias=_env("PARETO_CHECK_CPU_S"))
    check_timeout_s: int = Field(120, ge=1, validation_alias=_env("PARETO_CHECK_TIMEOUT_S"))
    job_memory_bytes: int = Field(16 * 1024**3, ge=256 * 1024**2, validation_alias=_env("PARETO_JOB_MEMORY_BYTES"))
    job_cpu_s: int = Field(4 * 3600, ge=1, validation_alias=_env("PARETO_JOB_CPU_S"))
    cancel_grace_s: float = Field(5, gt=0, le=300, validation_alias=_env("PARETO_CANCEL_GRACE_S"))

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.task_time_limit_s >= self.visibility_timeout_s:
            raise ValueError(
                "PARETO_TASK_TIME_LIMIT_S must be below PARETO_VISIBILITY_TIMEOUT_S, "
                "or Redis redelivers a job that is still running"
            )
        if self.env == "production":
            if not self.api_keys:
                raise ValueError("PARETO_API_KEYS must be set when PARETO_ENV=production")
            if not self.redis_url:
                raise ValueError("REDIS_URL must be set when PARETO_ENV=production (no embedded server)")
            if self.s3_secret_key == DEV_S3_SECRET_KEY:
                raise ValueError("AWS_SECRET_ACCESS_KEY is the development default; set a real one")
        return self

    @property
    def soft_time_limit_s(self) -> int:
        """The task is told to stop here, a little before it is killed."""
        return max(1, self.task_time_limit_s - min(30, max(1, self.task_time_limit_s // 10)))

    @property
    def job_work_dir(self) -> Path:
        return self.work_dir or self.data_dir / "work"


@lru_cache
def get_settings() -> Settings:
    return Settings()

"""Pareto's Python SDK: `Client` over the REST API (httpx and the service's own schemas; no torch)."""

from core.job import Job, JobStatus
from sdk.client import ArtifactLink, Client, JobPage
from sdk.errors import ApiError, ChecksumMismatch, WaitTimeout

__all__ = ["ApiError", "ArtifactLink", "ChecksumMismatch", "Client", "Job", "JobPage", "JobStatus", "WaitTimeout"]

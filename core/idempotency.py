"""Idempotency keys of job submissions: the same key (per tenant) within a day means the same job, and a key
remembers a digest of the body it came with, so that the same key with another body is refused."""

from __future__ import annotations

import hashlib

import redis

from core.errors import ErrorCode, InvalidInput
from core.jobstore import PREFIX

TTL_S = 24 * 3600


class IdempotencyStore:
    def __init__(self, r: redis.Redis):
        self.r = r

    def claim(self, tenant: str, key: str, job_id: str, body: str) -> str | None:
        """The job already created for this key, or None after claiming the key for job_id. InvalidInput
        (idempotency_key_reused) when the key came with another body."""
        slot = f"{PREFIX}idem:{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"
        digest = hashlib.sha256(body.encode()).hexdigest()
        if self.r.set(slot, f"{job_id}:{digest}", nx=True, ex=TTL_S):
            return None
        existing, _, claimed = self.r.get(slot).decode().partition(":")
        if claimed and claimed != digest:
            raise InvalidInput("this Idempotency-Key was used with another request body in the last 24 hours; "
                               "use a new key for a new job", code=ErrorCode.idempotency_key_reused)
        return existing

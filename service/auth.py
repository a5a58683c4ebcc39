"""API keys: `PARETO_API_KEYS="tenant-a:key-a,tenant-b:key-b"`, several keys per tenant allowed.

Only SHA-256 digests are kept in memory; a presented key is hashed and compared with every digest in
constant time, so neither timing nor an early exit tells how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac

from core.errors import ErrorCode, Unauthorized
from core.ids import is_tenant


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    def __init__(self, spec: str):
        self._entries: list[tuple[bytes, str]] = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            tenant, sep, key = item.partition(":")
            if not sep or not key or not is_tenant(tenant):
                raise ValueError(
                    "PARETO_API_KEYS must look like 'tenant-a:key-a,tenant-b:key-b' "
                    "(tenant: lower-case letters, digits, '-', '_')"
                )
            self._entries.append((_digest(key), tenant))

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, presented: str | None) -> tuple[str, str]:
        """(tenant, key id) of a presented key; the id names the key in revocations and rate limits."""
        return self.tenant_for(presented), key_id(presented)

    def tenant_for(self, presented: str | None) -> str:
        if not presented:
            raise Unauthorized("send 'Authorization: Bearer <key>'", code=ErrorCode.unauthorized)
        digest = _digest(presented)
        found = None
        for known, tenant in self._entries:  # no early exit: every key is compared
            if hmac.compare_digest(known, digest):
                found = tenant
        if found is None:
            raise Unauthorized("the API key is not valid", code=ErrorCode.unauthorized)
        return found


def key_id(key: str) -> str:
    """A public name for a key (`pareto admin key-id KEY`): a prefix of its SHA-256, not enough to use it."""
    return "k_" + hashlib.sha256(key.encode()).hexdigest()[:20]


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None

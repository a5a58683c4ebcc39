"""Resource ids and names that are safe inside object keys.

Ids sort by creation time (12 hex digits of milliseconds, then 10 random hex digits), so a
lexicographic range over them is a time range. Object keys are built only from ids that match
ID_PATTERN and tenants that match TENANT_PATTERN: never from raw client input.
"""

from __future__ import annotations

import re
import secrets
import time

ID_PATTERN = r"^(m|d|j)_[0-9a-f]{22}$"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_ID = re.compile(ID_PATTERN)
_TENANT = re.compile(TENANT_PATTERN)


def new_id(kind: str) -> str:
    """`kind` is m (model), d (dataset) or j (job)."""
    return f"{kind}_{int(time.time() * 1000):012x}{secrets.token_hex(5)}"


def is_id(value: str, kind: str | None = None) -> bool:
    # fullmatch: `$` alone would accept a trailing newline (an id sent as %0A in a path)
    return bool(_ID.fullmatch(value)) and (kind is None or value.startswith(kind + "_"))


def is_tenant(value: str) -> bool:
    return bool(_TENANT.fullmatch(value))


def safe_filename(name: str, default: str = "model") -> str:
    """A display name reduced to characters safe in a file name and a Content-Disposition header."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:100]
    return cleaned or default

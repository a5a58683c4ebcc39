"""Per-key checks after authentication: revocation and a rate limit.

- Revoked keys (`PARETO_REVOKED_KEY_IDS`, or the Redis set managed by `pareto admin revoke-key`) are
  refused with 401, like unknown keys. The set is re-read every REVOCATION_REFRESH_S seconds.
- Each key has a token bucket in Redis (`PARETO_RATE_LIMIT_PER_S` refill, `PARETO_RATE_LIMIT_BURST`
  capacity), shared by every API replica; over it: 429 with Retry-After. A rate of 0 turns it off.
  If Redis does not answer, requests are let through (the routes that need Redis answer 503 themselves).
"""

from __future__ import annotations

import logging
import math
import threading
import time

import redis

from core.errors import ErrorCode, TooManyRequests, Unauthorized
from core.jobstore import PREFIX
from core.settings import Settings

log = logging.getLogger("pareto.api")
REVOKED = f"{PREFIX}revoked-keys"
REVOCATION_REFRESH_S = 2.0

# tokens refill at ARGV[1]/s up to ARGV[2]; one request takes one. Returns {allowed, seconds to wait}.
_BUCKET = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or t
tokens = math.min(burst, tokens + math.max(0, t - ts) * rate)
local allowed, wait = 0, 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(t))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


def revoke(r: redis.Redis, key_id: str) -> bool:
    return bool(r.sadd(REVOKED, key_id))


def unrevoke(r: redis.Redis, key_id: str) -> bool:
    return bool(r.srem(REVOKED, key_id))


class KeyGuard:
    def __init__(self, r: redis.Redis, settings: Settings):
        self.r, self.settings = r, settings
        self.static = frozenset(filter(None, (k.strip() for k in settings.revoked_key_ids.split(","))))
        self._revoked: frozenset[str] = frozenset()
        self._read_at = -math.inf
        self._lock = threading.Lock()
        self._bucket = r.register_script(_BUCKET)

    def needs_redis(self) -> bool:
        """Whether `check` will call Redis (then it belongs off the event loop)."""
        return self.settings.rate_limit_per_s > 0 or time.monotonic() - self._read_at > REVOCATION_REFRESH_S

    def check(self, key_id: str) -> None:
        if key_id in self.static or key_id in self._revoked_ids():
            raise Unauthorized("the API key was revoked", code=ErrorCode.unauthorized)
        if self.settings.rate_limit_per_s > 0:
            self._take(key_id)

    def _revoked_ids(self) -> frozenset[str]:
        if time.monotonic() - self._read_at > REVOCATION_REFRESH_S and self._lock.acquire(blocking=False):
            try:
                self._revoked = frozenset(m.decode() for m in self.r.smembers(REVOKED))
                self._read_at = time.monotonic()
            except redis.RedisError as e:  # keep the last list; try again on the next request
                log.warning("could not read revoked keys: %s", e)
            finally:
                self._lock.release()
        return self._revoked

    def _take(self, key_id: str) -> None:
        s = self.settings
        try:
            allowed, wait = self._bucket(keys=[f"{PREFIX}rate:{key_id}"], args=[s.rate_limit_per_s, s.rate_limit_burst])
        except redis.RedisError as e:
            log.warning("rate limit not checked: %s", e)
            return
        if not int(allowed):
            retry_after = max(1, math.ceil(float(wait)))
            raise TooManyRequests(f"this API key is over its limit of {s.rate_limit_per_s:g} requests/s "
                                  f"(bursts of {s.rate_limit_burst}); retry in {retry_after} s", retry_after)

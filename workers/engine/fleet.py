"""A job's work shared with the fleet, in Redis: the planned nodes, the ones ready to run, leases on the
ones running (so that a node whose worker died is run again, not lost), and the results.

The job's own task (the coordinator) and helper tasks on other workers all take ready nodes from the same
set, the one with the most work below it first (its critical path: training epochs count most), so that the
long chains start early and the quick leaves fill the gaps. A node's children become ready as soon as its
model is made and shared (`release`), while its own worker is still measuring it. Keys are scoped by the
job's attempt, so a redelivered job starts a clean run.
"""

from __future__ import annotations

import functools
import json
import time
import uuid

import redis

from core.errors import ErrorCode, without_paths
from core.retry import Backoff
from workers.engine.plan import BASELINE, Node

KEY_TTL_S = 7 * 24 * 3600
POLL_S = 0.1  # how often an idle worker looks for ready work (Redis reads: cheap)
# Pops the best ready node and leases it in one step, so that a retried take (its reply lost to a Redis
# restart) cannot lose a node: the one popped before is leased, and requeued when nobody renews it.
_TAKE = """local popped = redis.call('ZPOPMAX', KEYS[1])
if #popped == 0 then return false end
redis.call('HSET', KEYS[2], popped[1], ARGV[1])
return popped[1]"""


def _retried(method):
    """The method again while Redis is briefly unreachable (a restart), as the job store's calls are."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return self.backoff.call(lambda: method(self, *args, **kwargs), f"Redis fleet {method.__name__}",
                                 code=ErrorCode.jobstore_unavailable)
    return call


class Fleet:
    def __init__(self, r: redis.Redis, job_id: str, attempt: int, lease_s: int = 60, retry_s: float = 120):
        self.r, self.lease_s = r, lease_s  # a running node's lease, renewed while its step runs
        self.prefix = f"pareto:fleet:{job_id}:{attempt}:"
        self.backoff = Backoff(retry_s)

    def _k(self, name: str) -> str:
        return self.prefix + name

    # -- planning (coordinator)
    @_retried
    def publish(self, nodes: list[Node]) -> None:
        if not nodes:
            return
        pipe = self.r.pipeline()
        pipe.hset(self._k("plan"), mapping={n.id: n.to_json() for n in nodes})
        for name in ("plan", "ready", "leases", "made", "done", "failed", "closed"):
            pipe.expire(self._k(name), KEY_TTL_S)
        pipe.execute()
        runnable = [n.id for n in nodes if n.parent == BASELINE or self.made(n.parent)]
        self._make_ready(runnable)
        # The new nodes may lengthen the paths below the waiting ones: rescored, only while still waiting
        # (XX never adds back a node another worker has taken meanwhile).
        waiting = [i.decode() for i in self.r.zrange(self._k("ready"), 0, -1)]
        self._make_ready(waiting, only_waiting=True)

    @_retried
    def _make_ready(self, node_ids: list[str], only_waiting: bool = False) -> None:
        if node_ids:
            lengths = critical_paths(self.plan())
            self.r.zadd(self._k("ready"), {i: lengths[i] for i in node_ids}, xx=only_waiting)

    @_retried
    def plan(self) -> dict[str, Node]:
        return {k.decode(): Node.from_json(v) for k, v in self.r.hgetall(self._k("plan")).items()}

    @_retried
    def close(self) -> None:
        self.r.set(self._k("closed"), 1, ex=KEY_TTL_S)
        self.r.delete(self._k("ready"))

    @_retried
    def closed(self) -> bool:
        return bool(self.r.exists(self._k("closed")))

    @_retried
    def drop_waiting(self) -> list[str]:
        """Stops everything not started yet (time or goals reached); the ids dropped."""
        waiting = [i.decode() for i in self.r.zrange(self._k("ready"), 0, -1)]
        self.r.delete(self._k("ready"))
        return waiting

    # -- running (any worker)
    @_retried
    def take(self) -> Node | None:
        popped = self.r.eval(_TAKE, 2, self._k("ready"), self._k("leases"), time.time() + self.lease_s)
        if not popped:
            return None
        raw = self.r.hget(self._k("plan"), popped.decode())
        return Node.from_json(raw) if raw else None

    @_retried
    def renew(self, node_id: str) -> None:
        self.r.hset(self._k("leases"), node_id, time.time() + self.lease_s)

    def release(self, node: Node) -> None:
        """The node's model is shared: its children may start. Once only: a rerun of the node (its worker died)
        releases nothing, while a retry of this call (its reply lost to a Redis restart) still does."""
        self._release(node, uuid.uuid4().hex)

    @_retried
    def _release(self, node: Node, token: str) -> None:
        pipe = self.r.pipeline()
        pipe.hsetnx(self._k("made"), node.id, token)
        pipe.expire(self._k("made"), KEY_TTL_S)
        pipe.hget(self._k("made"), node.id)
        *_, first = pipe.execute()
        if first.decode() == token and not self.closed():
            self._make_ready([n.id for n in self.plan().values() if n.parent == node.id])

    @_retried
    def baseline_measured(self) -> None:
        """The baseline's outputs are shared: candidates can be compared with them."""
        self.r.set(self._k("baseline"), 1, ex=KEY_TTL_S)

    @_retried
    def baseline_ready(self) -> bool:
        return bool(self.r.exists(self._k("baseline")))

    @_retried
    def made(self, node_id: str) -> bool:
        return bool(self.r.hexists(self._k("made"), node_id))

    @_retried
    def finish(self, node: Node, candidate: dict) -> None:
        pipe = self.r.pipeline()
        pipe.hset(self._k("done"), node.id, json.dumps(candidate))
        pipe.hdel(self._k("leases"), node.id)
        pipe.execute()

    @_retried
    def fail(self, node: Node, code: str, message: str) -> None:
        pipe = self.r.pipeline()
        pipe.hset(self._k("failed"), node.id, json.dumps({"code": code, "message": without_paths(message)}))
        pipe.hdel(self._k("leases"), node.id)
        pipe.execute()

    # -- watching (coordinator)
    @_retried
    def done(self) -> dict[str, dict]:
        return {k.decode(): json.loads(v) for k, v in self.r.hgetall(self._k("done")).items()}

    @_retried
    def failed(self) -> dict[str, dict]:
        return {k.decode(): json.loads(v) for k, v in self.r.hgetall(self._k("failed")).items()}

    @_retried
    def running(self) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.r.hgetall(self._k("leases")).items()}

    @_retried
    def requeue_expired(self) -> list[str]:
        """Nodes whose worker stopped renewing its lease (it died): back in the ready list."""
        now, lost = time.time(), []
        for node_id, expires in self.running().items():
            if expires < now and self.r.hdel(self._k("leases"), node_id):
                lost.append(node_id)
        self._make_ready(lost)
        return lost

    @_retried
    def waiting(self) -> int:
        return int(self.r.zcard(self._k("ready")))


def cost(node: Node) -> float:
    """A node's own work, in rough units: one measurement, plus its training epochs."""
    (params,) = node.item.values()
    return 1.0 + float((params or {}).get("epochs") or 0)


def critical_paths(plan: dict[str, Node]) -> dict[str, float]:
    """For every node: the work on the longest chain from it down to a leaf of the plan, its own included."""
    children: dict[str, list[str]] = {}
    for n in plan.values():
        children.setdefault(n.parent, []).append(n.id)
    found: dict[str, float] = {}

    def longest(i: str) -> float:
        if i not in found:
            found[i] = cost(plan[i]) + max((longest(c) for c in children.get(i, [])), default=0.0)
        return found[i]

    for node_id in plan:
        longest(node_id)
    return found

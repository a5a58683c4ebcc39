"""The order a job's ready candidates are taken in: the longest chain of work first."""

from __future__ import annotations

import secrets

import pytest
import redis

from workers.engine.fleet import Fleet, critical_paths
from workers.engine.plan import BASELINE, Node


def node(i: str, parent: str, item: dict) -> Node:
    return Node(id=i, parent=parent, index=1, item=item, steps=[item])


# prune 0.3 -> quantize; prune 0.6 -> distill 10 epochs -> quantize
PLAN = [node("c1", BASELINE, {"prune": {"ratio": 0.3}}), node("c2", "c1", {"quantize": {"mode": "dynamic"}}),
        node("c3", BASELINE, {"prune": {"ratio": 0.6}}), node("c4", "c3", {"distill": {"epochs": 10}}),
        node("c5", "c4", {"quantize": {"mode": "dynamic"}})]


def test_the_critical_path_counts_measurements_and_epochs():
    plan = {n.id: n for n in PLAN}
    lengths = critical_paths(plan)
    assert [lengths[i] for i in ("c1", "c2", "c3", "c4", "c5")] == [2, 1, 13, 12, 1]


def test_ready_nodes_are_taken_longest_chain_first_and_each_once(services):
    r = redis.Redis.from_url(services[0])
    fleet = Fleet(r, f"j_{secrets.token_hex(8)}", 1)
    fleet.publish(PLAN)
    assert fleet.waiting() == 2
    first, second = fleet.take(), fleet.take()
    assert (first.id, second.id) == ("c3", "c1") and fleet.take() is None
    fleet.release(second)  # c1's model is made: its child joins, still below what c3 leads to
    fleet.release(first)
    assert [fleet.take().id for _ in range(2)] == ["c4", "c2"]


def test_children_start_when_the_model_is_made_once_only(services):
    """A node's children are ready before it is measured; a rerun of it (its worker died) adds none again,
    and a child planned after the release is ready at once."""
    r = redis.Redis.from_url(services[0])
    fleet = Fleet(r, f"j_{secrets.token_hex(8)}", 1)
    fleet.publish(PLAN[:2])
    c1 = fleet.take()
    assert fleet.take() is None and not fleet.made("c1")
    fleet.release(c1)
    assert fleet.made("c1") and fleet.take().id == "c2"  # while c1 is still being measured
    fleet.release(c1)
    assert fleet.take() is None
    fleet.publish([node("c6", "c1", {"quantize": {"mode": "static"}})])
    assert fleet.take().id == "c6" and fleet.done() == {}


def test_rescoring_never_brings_back_a_taken_node(services):
    """publish() rescores what it saw waiting; a node another worker took in between must stay taken."""
    r = redis.Redis.from_url(services[0])
    fleet = Fleet(r, f"j_{secrets.token_hex(8)}", 1)
    fleet.publish(PLAN)
    seen_waiting = ["c1", "c3"]
    assert fleet.take().id == "c3"  # taken after publish() read the waiting set, before it rescored
    fleet._make_ready(seen_waiting, only_waiting=True)
    assert fleet.take().id == "c1" and fleet.take() is None


def test_a_helper_compares_with_the_baseline_once_its_outputs_are_shared(services, tmp_path):
    """A helper that made its node while the coordinator still measured the baseline waits for the outputs,
    then fetches them once."""
    from types import SimpleNamespace

    import numpy as np

    from core.objectstore import ObjectStore
    from core.settings import Settings
    from workers.engine.workspace import baseline_outputs

    fleet = Fleet(redis.Redis.from_url(services[0]), f"j_{secrets.token_hex(8)}", 1)
    objects = ObjectStore(Settings(S3_ENDPOINT_URL=services[1], S3_BUCKET="pareto"))
    ws = SimpleNamespace(reference=[], objects=objects, shared=f"t/jobs/{fleet.prefix}/", workdir=tmp_path)
    waits = []

    def coordinator_meanwhile(message: str) -> None:
        waits.append(message)
        if len(waits) == 3:  # the baseline is measured and shared now
            np.savez(tmp_path / "made.npz", np.arange(3.0), np.ones((2, 2)))
            objects.upload_file(ws.shared + "reference.npz", tmp_path / "made.npz")
            fleet.baseline_measured()

    outputs = baseline_outputs(ws, fleet, coordinator_meanwhile)
    assert waits == ["waiting for the baseline's measurement"] * 3 and fleet.baseline_ready()
    assert [o.tolist() for o in outputs] == [[0.0, 1.0, 2.0], [[1.0, 1.0], [1.0, 1.0]]]
    assert baseline_outputs(ws, fleet, lambda m: pytest.fail("waited again")) is outputs


def test_fleet_calls_are_retried_within_the_budget_then_fail_clearly():
    from core.errors import Unavailable
    from tests.stack import free_port

    fleet = Fleet(redis.Redis(port=free_port(), socket_connect_timeout=0.2), "j_gone", 1, retry_s=1)
    with pytest.raises(Unavailable) as e:
        fleet.take()
    assert e.value.code == "jobstore_unavailable" and "Redis fleet take" in e.value.message


def test_a_retried_release_still_releases_a_rerun_does_not(services):
    """A release whose reply was lost (Redis restarting) runs again with its own token and makes the children
    ready; a later run of the same node (its worker died after making it) does not."""
    fleet = Fleet(redis.Redis.from_url(services[0]), f"j_{secrets.token_hex(8)}", 1)
    fleet.publish(PLAN[:2])
    c1 = fleet.take()
    fleet._release(c1, "first run")
    fleet.r.delete(fleet._k("ready"))  # its effect lost with the reply
    fleet._release(c1, "first run")  # the retry
    assert fleet.take().id == "c2"
    fleet.release(c1)  # a rerun
    assert fleet.take() is None

"""The order a job's ready candidates are taken in: the longest chain of work first."""

from __future__ import annotations

import secrets

import redis

from workers.fleet import Fleet, critical_paths
from workers.plan import BASELINE, Node


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

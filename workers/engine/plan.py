"""The tree of candidates a job makes: every node is one step applied to its parent's model. Paths (the
recipe's steps, its comparison branch, each search trial) share their common prefixes, so a prefix is
computed once however many paths start with it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from core.search import json_key
from core.steps import StepParams

Path_ = list[tuple[int, StepParams]]  # (1-based index in the recipe's steps, step)
BASELINE = "baseline"
INPUT = "input"  # the baseline after import normalization (workers/graph/normalize.py): where steps start


@dataclass
class Node:
    id: str
    parent: str  # BASELINE or a node id
    index: int  # the step's 1-based index in the recipe (teachers refer to it)
    item: dict  # the step as a recipe item: {"prune": {...}}
    steps: list[dict]  # every step from the baseline to here
    teachers: dict[str, str] = field(default_factory=dict)  # "baseline" / recipe index -> node id

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Node:
        return cls(**json.loads(raw))


class Plan:
    def __init__(self):
        self.nodes: dict[str, Node] = {}
        self._by_key: dict[str, str] = {}

    def add(self, path: Path_) -> tuple[str, list[Node]]:
        """The node where `path` ends, and the nodes that had to be added for it."""
        parent, teachers, added = BASELINE, {BASELINE: BASELINE}, []
        for depth in range(1, len(path) + 1):
            index, step = path[depth - 1]
            key = json_key(path[:depth])
            if key not in self._by_key:
                node = Node(id=f"c{len(self.nodes) + 1}", parent=parent, index=index, item=step.as_recipe_item(),
                            steps=[s.as_recipe_item() for _, s in path[:depth]], teachers=dict(teachers))
                self.nodes[node.id] = node
                self._by_key[key] = node.id
                added.append(node)
            parent = self._by_key[key]
            teachers[str(index)] = parent
        return parent, added

    def children(self, node_id: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.parent == node_id]

    def descendants(self, node_id: str) -> list[str]:
        found, stack = [], [node_id]
        while stack:
            for child in self.children(stack.pop()):
                found.append(child.id)
                stack.append(child.id)
        return found

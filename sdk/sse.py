"""Server-Sent Events, parsed from a line iterator (the parts of the format the service uses)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class Event:
    event: str
    data: str
    id: str | None = None


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """Yields one Event per blank-line-terminated block that has data; comments and `retry:` are skipped."""
    name, data, event_id = "message", [], None
    for line in lines:
        if not line:
            if data:
                yield Event(name, "\n".join(data), event_id)
            name, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value

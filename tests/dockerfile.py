"""A reader of Dockerfiles for tests/test_deploy.py: stages, their instructions, ARG defaults substituted, the
pip installs of a RUN, the environment a stage inherits. Enough to check the project's own Dockerfile
offline; not a general parser."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field


@dataclass
class Stage:
    name: str
    image: str  # the FROM argument, ARG defaults substituted
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments dropped."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue  # comments, parser directives, blank lines (also inside a continued instruction)
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    return out


def substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def dockerfile_stages(text: str) -> tuple[dict[str, Stage], dict[str, str]]:
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, rest in _instructions(text):
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m, f"unreadable FROM {rest!r}"
            current = Stage(m.group(2) or f"stage{len(stages)}", substitute(m.group(1), global_args))
            stages[current.name] = current
        elif current is None:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            global_args[name] = default.strip("\"'")
        else:
            current.instructions.append((keyword, rest))
    return stages, global_args


def stage_closure(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage, the stages it is built FROM, and every stage it COPYs from, transitively."""
    seen: list[str] = []
    todo = [name]
    while todo:
        n = todo.pop()
        if n in seen or n not in stages:
            continue
        seen.append(n)
        todo.append(stages[n].image)
        todo += [m.group(1) for rest in stages[n].all("COPY") if (m := re.search(r"--from=(\S+)", rest))]
    return [stages[n] for n in seen]


def stage_lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The FROM chain only (what the image's filesystem and environment are built on), base first."""
    chain = []
    while name in stages:
        chain.insert(0, stages[name])
        name = stages[name].image
    return chain


def stage_args(stage: Stage) -> dict[str, str]:
    return {n: d.strip("\"'") for n, _, d in (a.partition("=") for a in stage.all("ARG"))}


_PIP_OPTIONS_WITH_VALUE = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint",
                           "-r", "--requirement"}


def pip_installs(run_text: str) -> list[tuple[list[str], list[str]]]:
    """(options, requirements) of every `pip install` in a RUN instruction."""
    found = []
    for command in re.split(r"&&|;|\|\|", run_text):
        words = shlex.split(command)
        for i in range(len(words) - 1):
            if words[i].endswith("pip") and words[i + 1] == "install":
                options, reqs, rest = [], [], iter(words[i + 2:])
                for w in rest:
                    if w.startswith("-"):
                        options.append(w)
                        if w in _PIP_OPTIONS_WITH_VALUE:
                            options.append(next(rest))
                    else:
                        reqs.append(w)
                found.append((options, reqs))
    return found


def env_of(lineage: list[Stage]) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in lineage:
        for rest in stage.all("ENV"):
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                env[key] = value
    return env

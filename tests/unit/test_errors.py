"""The error codes are one enumeration (core/errors.py ErrorCode), documented in docs/errors.md, and no code is
written as a string anywhere else."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from core import errors
from core.errors import ErrorCode, ParetoError
from core.job import JobStatus

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "service", "workers", "cli", "sdk")
# strings that happen to spell a code and are not one: the counts of a rebuild name its outcomes
NOT_CODES = {("core/jobstore.py", "interrupted"), ("cli/admin.py", "interrupted")}


def sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text()


def test_no_code_is_written_as_a_string_outside_the_enumeration():
    codes = {c.value for c in ErrorCode} - {s.value for s in JobStatus}
    found = []
    for name, text in sources():
        if name == "core/errors.py":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and node.value in codes and (name, node.value) not in NOT_CODES:
                found.append(f"{name}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.keyword) and node.arg == "code" and isinstance(node.value, ast.JoinedStr):
                found.append(f"{name}:{node.value.lineno} an f-string")
    assert not found, "use ErrorCode.<name>: " + ", ".join(found)


def test_every_code_is_used():
    used = set()
    for _, text in sources():
        used |= set(re.findall(r"ErrorCode\.([a-z_0-9]+)", text))
    assert {c.name for c in ErrorCode} - used == set()


def test_an_error_class_answers_with_its_codes_status():
    for cls in vars(errors).values():
        if inspect.isclass(cls) and issubclass(cls, ParetoError) and cls.code.status:
            assert cls.status == cls.code.status, cls.__name__


def test_every_code_says_who_acts_and_what_to_do():
    for code in ErrorCode:
        assert code.who in ("client", "operator") and len(code.action) > 10, code

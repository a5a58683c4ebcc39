"""Runs code that reads an untrusted file in a child process of its own, held to limits.

`run("core.checks.model", [path], limits, scratch)` starts `python -m core.sandbox ...`, which sets the
limits on itself before it imports the module and runs it as `__main__`: an address-space limit
(RLIMIT_AS), a CPU-time limit (RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL a few seconds later), no
core dumps, and a wall-clock limit enforced by the parent. The child works in `scratch`, a folder of its
own, so whatever a library writes into its current directory stays there. Its process group is killed on
every way out, so nothing it started outlives it.

While it runs, the parent calls `stop()` every POLL_S: a job that was cancelled raises there, and the
child is killed at once (a hostile file never pins the worker past the next poll).

The module's answer is the JSON object it prints last on stdout. Standard library only: the gateway uses
this too.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

POLL_S = 0.5
CPU_GRACE_S = 5  # between SIGXCPU (soft limit) and SIGKILL (hard limit)
# How running out of address space shows in a child's last words: Python, C++, the C library, onnxruntime.
OUT_OF_MEMORY = ("MemoryError", "bad_alloc", "Cannot allocate memory", "Failed to allocate memory")
QUIET_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Limits:
    memory_bytes: int  # address space
    cpu_s: int
    wall_s: float


class LimitExceeded(Exception):
    """The child went over one of its limits (`which`: memory, cpu or time) or crashed (`which`: crash)."""

    def __init__(self, which: str, message: str):
        super().__init__(message)
        self.which, self.message = which, message


def run(module: str, args: list[str], limits: Limits, scratch: Path, stop: Callable[[], None] | None = None,
        env: dict[str, str] | None = None) -> dict:
    """The JSON object `python -m module *args` prints last, run within `limits` in `scratch`."""
    scratch.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "core.sandbox", str(limits.memory_bytes), str(limits.cpu_s), module, *args]
    child = subprocess.Popen(argv, cwd=scratch, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, **_importable(), **(env or {})})
    running.add(child.pid)
    try:
        out, err = _wait(child, limits, stop)
    finally:
        _kill(child)
        running.discard(child.pid)
    return _answer(child.returncode, out, err, limits)


running: set[int] = set()  # the children of this process running now (each leads its own process group)


def kill_running() -> None:
    """Kills every child running now, with whatever it started: from another thread, to stop a job at once."""
    for pid in list(running):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _importable() -> dict[str, str]:
    """The child runs in `scratch`, not in the project's folder: it finds the project's packages by path."""
    root = str(Path(__file__).resolve().parent.parent)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def _wait(child: subprocess.Popen, limits: Limits, stop: Callable[[], None] | None) -> tuple[str, str]:
    deadline = time.monotonic() + limits.wall_s
    while True:
        try:
            return child.communicate(timeout=max(0.01, min(POLL_S, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise LimitExceeded("time", f"it did not finish within {limits.wall_s:g} s") from None
            if stop is not None:
                stop()  # raises to cancel: the finally of run() kills the child


def _kill(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        child.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        pass


def _answer(code: int, out: str, err: str, limits: Limits) -> dict:
    last = (err.strip().splitlines() or [""])[-1][:300]
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and not any(sign in err for sign in OUT_OF_MEMORY):
        raise LimitExceeded("cpu", f"it used more than {limits.cpu_s} s of CPU time")
    if any(sign in err for sign in OUT_OF_MEMORY):
        raise LimitExceeded("memory", f"it needed more than {limits.memory_bytes >> 20} MiB of memory")
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        raise LimitExceeded("crash", f"it stopped with exit code {code}: {last or 'no output'}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise LimitExceeded("crash", f"it answered something other than JSON: {lines[-1][:200]!r}") from None


def _limit_self(memory_bytes: int, cpu_s: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + CPU_GRACE_S))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


if __name__ == "__main__":  # python -m core.sandbox MEMORY_BYTES CPU_S MODULE [ARGS...]
    _limit_self(int(sys.argv[1]), int(sys.argv[2]))
    target = sys.argv[3]
    sys.argv = [target, *sys.argv[4:]]
    runpy.run_module(target, run_name="__main__", alter_sys=True)

"""Runs code that reads an untrusted file in a child process of its own, held to limits.

`run("core.checks.model", [path], limits, scratch)` hands the call to a zygote: a process `python -m
core.sandbox MODULE` that imported the module once (onnx, onnxruntime, torch: seconds a cold start would cost
every call) and forks a fresh child for each call. The child leads a process group of its own, sets its
limits before it reads anything the call names, moves into `scratch` and runs the module as `__main__`, its
output going to files in `scratch`. The limits: an address-space limit (RLIMIT_AS), a CPU-time limit
(RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL a few seconds later), no core dumps, and a wall-clock limit
enforced by the parent. Whatever a library writes into its current directory stays in `scratch`, a folder of
its own. The child's process group is killed on every way out, so nothing it started outlives it.

While a call runs, the parent calls `stop()` every POLL_S: a job that was cancelled raises there, and the
child is killed at once (a hostile file never pins the worker past the next poll). `running` names the
children running now and `spent_cpu_s` what the finished ones used, for a job's budget (workers/engine/
budget.py). A zygote holds no thread when it forks (nothing it imports starts one) and exits when its parent
does (its input closes).

The module's answer is the JSON object it prints last on stdout. Standard library only: the gateway uses
this too.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import math
import os
import resource
import runpy
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

POLL_S = 0.5
CPU_GRACE_S = 5  # between SIGXCPU (soft limit) and SIGKILL (hard limit)
IMPORT_TIMEOUT_S = 300
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


running: set[int] = set()  # the children running now (each leads its own process group)
spent_cpu_s = 0.0  # CPU time of the children that have ended, since this process started
_idle: dict[tuple, list[subprocess.Popen]] = {}  # (module, env) -> zygotes waiting for a call
_lock = threading.Lock()


def run(module: str, args: list[str], limits: Limits, scratch: Path, stop: Callable[[], None] | None = None,
        env: dict[str, str] | None = None) -> dict:
    """The JSON object `python -m module *args` prints last, run within `limits` in `scratch`."""
    scratch.mkdir(parents=True, exist_ok=True)
    key = (module, tuple(sorted((env or {}).items())))
    zygote = _take(key)
    call = {"args": args, "cwd": str(scratch), "memory_bytes": limits.memory_bytes, "cpu_s": limits.cpu_s}
    try:
        zygote.stdin.write(json.dumps(call) + "\n")
        zygote.stdin.flush()
        child = _reply(zygote, time.monotonic() + 60, None)["pid"]  # the fork is quick once imports are done
    except (OSError, ValueError, KeyError, LimitExceeded):
        _kill_group(zygote.pid)
        raise LimitExceeded("crash", "the sandbox could not start the check") from None
    running.add(child)
    try:
        ended = _reply(zygote, time.monotonic() + limits.wall_s, stop)
    except BaseException:
        _kill_group(child)
        _recover(key, zygote)
        raise
    finally:
        running.discard(child)
    _give_back(key, zygote)
    _count_cpu(ended["cpu_s"])
    return _answer(ended["code"], _read(scratch / "stdout"), _read(scratch / "stderr"), limits)


def _recover(key: tuple, zygote: subprocess.Popen) -> None:
    """After its child was killed: the zygote's report of it read, and the zygote free again (or ended)."""
    try:
        ended = _reply(zygote, time.monotonic() + 10, None)
    except (LimitExceeded, ValueError, OSError):
        _kill_group(zygote.pid)
        return
    _count_cpu(ended.get("cpu_s", 0.0))
    _give_back(key, zygote)


def prepare(module: str, env: dict[str, str] | None = None) -> None:
    """A zygote for `module` started now (a worker's or the gateway's start), so that the first call finds it
    ready."""
    key = (module, tuple(sorted((env or {}).items())))
    _give_back(key, _start(key))


@atexit.register
def _close_idle() -> None:
    """Idle zygotes end when their input closes; closed here rather than by the interpreter's teardown."""
    with _lock:
        for zygote in (z for idle in _idle.values() for z in idle):
            for stream in (zygote.stdin, zygote.stdout):
                with contextlib.suppress(OSError):
                    stream.close()
        _idle.clear()


def _take(key: tuple) -> subprocess.Popen:
    with _lock:
        idle = _idle.setdefault(key, [])
        while idle:
            zygote = idle.pop()
            if zygote.poll() is None:
                return zygote
    return _start(key)


def _give_back(key: tuple, zygote: subprocess.Popen) -> None:
    with _lock:
        _idle.setdefault(key, []).append(zygote)


def _start(key: tuple) -> subprocess.Popen:
    module, env = key
    return subprocess.Popen([sys.executable, "-m", "core.sandbox", module], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env={**os.environ, **_importable(), **dict(env)})


def _count_cpu(seconds: float) -> None:
    global spent_cpu_s
    with _lock:
        spent_cpu_s += seconds


def _reply(zygote: subprocess.Popen, deadline: float, stop: Callable[[], None] | None) -> dict:
    """The zygote's next line, waiting at most until the deadline and calling stop() every POLL_S."""
    with selectors.DefaultSelector() as sel:
        sel.register(zygote.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LimitExceeded("time", "it did not finish in time")
            if sel.select(min(POLL_S, left)):
                line = zygote.stdout.readline()
                if not line:
                    raise LimitExceeded("crash", "the sandbox ended unexpectedly")
                return json.loads(line)
            if stop is not None:
                stop()  # raises to cancel: run() kills the child


def kill_running() -> None:
    """Kills every child running now, with whatever it started: from another thread, to stop a job at once."""
    for pid in list(running):
        _kill_group(pid)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _importable() -> dict[str, str]:
    """The child runs in `scratch`, not in the project's folder: it finds the project's packages by path."""
    root = str(Path(__file__).resolve().parent.parent)
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _answer(code: int, out: str, err: str, limits: Limits) -> dict:
    last = (err.strip().splitlines() or [""])[-1][:300]
    if any(sign in err for sign in OUT_OF_MEMORY):
        raise LimitExceeded("memory", f"it needed more than {limits.memory_bytes >> 20} MiB of memory")
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        raise LimitExceeded("cpu", f"it used more than {limits.cpu_s} s of CPU time")
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        raise LimitExceeded("crash", f"it stopped with exit code {code}: {last or 'no output'}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise LimitExceeded("crash", f"it answered something other than JSON: {lines[-1][:200]!r}") from None


# ------------------------------------------------------------------------------------------------------
# The zygote and its children
# ------------------------------------------------------------------------------------------------------

def _serve(module: str) -> None:
    """The zygote: the module imported (its dependencies are what takes seconds), then one forked child per
    call. It answers {"pid"} when the child starts and {"code", "cpu_s"} when it has ended."""
    signal.alarm(IMPORT_TIMEOUT_S)  # a zygote that hangs while importing ends (SIGALRM's default), not lingers
    importlib.import_module(module)
    signal.alarm(0)
    for line in sys.stdin:
        call = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(module, call)
        print(json.dumps({"pid": pid}), flush=True)
        _, status, usage = os.wait4(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"code": code, "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)


def _child(module: str, call: dict) -> None:
    """In the forked child: its own process group and limits, then the module as `__main__`; never returns."""
    code = 1
    try:
        os.setsid()
        _limit_self(call["memory_bytes"], call["cpu_s"])
        os.chdir(call["cwd"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, fd)
            os.close(out)
        sys.stdin.close()
        sys.argv = [module, *call["args"]]
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")  # "found in sys.modules"
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _limit_self(memory_bytes: int, cpu_s: int) -> None:
    """The call's limits; the CPU time the zygote spent importing (a forked child inherits none) aside."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = math.ceil(used.ru_utime + used.ru_stime)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (spent + cpu_s, spent + cpu_s + CPU_GRACE_S))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


if __name__ == "__main__":  # python -m core.sandbox MODULE: a zygote, its calls on standard input (see run)
    _serve(sys.argv[1])

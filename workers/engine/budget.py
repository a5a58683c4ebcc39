"""A job's CPU and memory budget, and its cancellation, watched from a thread beside the job.

Steps check for cancellation between steps and inside training loops, and child processes
(core/sandbox.py) are polled; but a step can be stuck where no check runs (a hostile file inside a
library call). So while a job runs on a worker process, a watcher thread, every WATCH_S:
- reads the job's record: a cancel request, or the job no longer running;
- sums the CPU time of the process and of the job's children (since the job started) and their resident
  memory.

When the job is over PARETO_JOB_CPU_S or PARETO_JOB_MEMORY_BYTES, or was cancelled, the watcher:
1. records why (`check()` raises it from then on: sandboxed children are killed at their next poll);
2. kills the job's child processes (probes, conversions: core/sandbox.py's) at once;
3. raises `Abort` in the job's thread, which stops the job at its next Python instruction;
4. if the job still has not ended after PARETO_CANCEL_GRACE_S (stuck inside native code), writes the job's
   terminal state itself and ends the worker process: Celery starts a fresh one, and the redelivered
   message finds the job terminal and does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core import sandbox
from core.errors import BudgetExceeded, ErrorCode, JobCancelled, ParetoError
from core.settings import Settings

log = logging.getLogger("pareto.worker")
WATCH_S = 0.5
CANCEL_POLL_S = 1.0
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
_current: list[Budget] = []  # the job running in this process (one at a time)


class Abort(BaseException):  # noqa: N818 (not an error of the job's own: the watcher stopping it)
    """Raised in the job's thread by the watcher; a BaseException, so that no `except Exception` of a step
    swallows it. The runner turns it into the watcher's reason."""


def check() -> None:
    """Raises why the current job must stop (cancelled, over budget); nothing when it may go on or when no
    job runs. Cheap: reads a field."""
    if _current and _current[-1].reason is not None:
        raise _current[-1].reason


def children() -> list[int]:
    """The job's child processes (core/sandbox.py's, which the job started) and everything they started."""
    found, todo = list(sandbox.running), list(sandbox.running)
    while todo:
        pid = todo.pop()
        for task in _listdir(f"/proc/{pid}/task"):
            try:
                kids = [int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, resident bytes) of a live process; (0, 0) once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / TICKS, int(fields[21]) * PAGE  # utime, stime, rss


def _own_cpu() -> float:
    """This process's CPU time, and that of the sandboxed children that have ended (core/sandbox.py counts
    them: they are its zygotes' children, not this process's)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + sandbox.spent_cpu_s


class Budget:
    """`with Budget(job_id, settings, cancelled, give_up):` around a job's (or a helper's) work on a worker.

    `cancelled()` says whether the job's record asks it to stop (read every CANCEL_POLL_S); `give_up(reason)`
    writes the job's terminal state when the watcher must end the process."""

    def __init__(self, job_id: str, settings: Settings, cancelled: Callable[[], bool],
                 give_up: Callable[[ParetoError], None]):
        self.job_id, self.settings = job_id, settings
        self.cancelled, self.give_up = cancelled, give_up
        self.reason: ParetoError | None = None
        self._done = threading.Event()
        self._thread_id = threading.get_ident()
        self._cpu_at_start = _own_cpu()
        self._watcher = threading.Thread(target=self._watch, name=f"budget-{job_id}", daemon=True)

    def __enter__(self) -> Budget:
        _current.append(self)
        self._watcher.start()
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self._done.set()
        self._watcher.join(timeout=5)
        _current.remove(self)
        if self.reason is not None:
            # an Abort the watcher sent may still be pending in this thread: cancel it, raise why instead
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id), None)
            raise self.reason from None

    def usage(self) -> tuple[float, int]:
        """(CPU seconds since the job started, resident bytes now), children included."""
        cpu, rss = _own_cpu() - self._cpu_at_start, _stat(os.getpid())[1]
        for pid in children():
            c, r = _stat(pid)
            cpu, rss = cpu + c, rss + r
        return cpu, rss

    def _watch(self) -> None:
        polled = 0.0
        while not self._done.wait(WATCH_S):
            try:
                if time.monotonic() - polled >= CANCEL_POLL_S:
                    polled = time.monotonic()
                    if self.cancelled():
                        return self._stop(JobCancelled())
                over = self._over()
                if over is not None:
                    return self._stop(over)
            except Exception:  # the watcher must never take the job down by itself
                log.exception("budget watcher of job %s", self.job_id)

    def _over(self) -> BudgetExceeded | None:
        cpu, rss = self.usage()
        s = self.settings
        if rss > s.job_memory_bytes:
            return BudgetExceeded(f"the job needed more than {s.job_memory_bytes >> 20} MiB of memory "
                                  "(PARETO_JOB_MEMORY_BYTES)", code=ErrorCode.memory_budget_exceeded)
        if cpu > s.job_cpu_s:
            return BudgetExceeded(f"the job used more than {s.job_cpu_s} s of CPU time (PARETO_JOB_CPU_S)",
                                  code=ErrorCode.cpu_budget_exceeded)
        return None

    def _stop(self, reason: ParetoError) -> None:
        self.reason = reason
        log.warning("stopping job %s: %s", self.job_id, reason.message)
        sandbox.kill_running()
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id), ctypes.py_object(Abort))
        if self._done.wait(self.settings.cancel_grace_s):
            return
        log.error("job %s did not stop within %g s; ending this worker process", self.job_id,
                  self.settings.cancel_grace_s)
        try:
            self.give_up(reason)
        finally:
            sandbox.kill_running()
            os._exit(70)

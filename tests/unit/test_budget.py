"""workers/engine/budget.py: a job stopped by its watcher, whether it runs Python, waits on a child, or is stuck
inside native code."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from core.errors import BudgetExceeded, JobCancelled
from core.settings import Settings
from workers.engine import budget
from workers.engine.budget import Budget


def settings(**kw) -> Settings:
    return Settings(PARETO_CANCEL_GRACE_S=2, **kw)


def test_a_cancelled_job_in_a_python_loop_stops_with_cancelled():
    cancel = {"now": False}
    started = time.monotonic()
    with pytest.raises(JobCancelled), Budget("j", settings(), lambda: cancel["now"], lambda reason: None):
        while True:
            if time.monotonic() - started > 0.5:
                cancel["now"] = True
            sum(range(1000))
    assert time.monotonic() - started < 4


def test_a_job_over_its_cpu_budget_stops_with_its_code():
    started = time.monotonic()
    with pytest.raises(BudgetExceeded) as e, Budget("j", settings(PARETO_JOB_CPU_S=1), lambda: False,
                                                    lambda reason: None):
        while True:
            sum(range(1000))
    assert e.value.code == "cpu_budget_exceeded" and time.monotonic() - started < 5


def test_a_job_over_its_memory_budget_stops_with_its_code():
    hold = []
    with pytest.raises(BudgetExceeded) as e, Budget("j", settings(PARETO_JOB_MEMORY_BYTES=(256 << 20)),
                                                    lambda: False, lambda reason: None):
        for _ in range(100):
            hold.append(bytearray(64 << 20))  # touched: resident
            time.sleep(0.1)
    assert e.value.code == "memory_budget_exceeded"


def test_check_raises_once_the_watcher_has_stopped_the_job():
    with pytest.raises(JobCancelled), Budget("j", settings(), lambda: True, lambda reason: None):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            budget.check()  # what sandboxed children poll: raises the reason itself
            time.sleep(0.05)


def test_a_finished_job_leaves_no_pending_abort():
    with Budget("j", settings(), lambda: False, lambda reason: None):
        pass
    time.sleep(1.2)  # nothing arrives later
    budget.check()


def test_a_job_stuck_in_native_code_ends_its_process_after_the_grace(tmp_path):
    """time.sleep in C never sees the Abort: after PARETO_CANCEL_GRACE_S the watcher writes the job's end
    (give_up) and ends the process."""
    marker = tmp_path / "gave-up"
    code = textwrap.dedent(f"""
        import time
        from core.settings import Settings
        from workers.engine.budget import Budget
        def give_up(reason):
            open({str(marker)!r}, "w").write(reason.code)
        with Budget("j", Settings(PARETO_CANCEL_GRACE_S=1), lambda: True, give_up):
            time.sleep(60)
    """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], timeout=30, capture_output=True, text=True)
    assert done.returncode == 70, done.stderr
    assert time.monotonic() - started < 10
    assert marker.read_text() == "cancelled"

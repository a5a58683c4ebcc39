"""core/sandbox.py: a child process held to memory, CPU and wall-time limits, in its own folder, stopped on
request; and core/logs.py's limit on repeated log records."""

from __future__ import annotations

import logging
import time

import pytest

from core import sandbox
from core.logs import RepeatLimit
from core.sandbox import LimitExceeded, Limits

ROOMY = Limits(memory_bytes=2 << 30, cpu_s=30, wall_s=60)


def run_code(code: str, limits: Limits, tmp_path, stop=None) -> dict:
    """`code` run in the sandbox as a module's main, written into the scratch folder's parent (the sandbox
    imports a module before its call arrives: work belongs under `if __name__ == "__main__":`)."""
    module = tmp_path / "sandboxed_snippet.py"
    body = "\n".join("    " + line for line in code.splitlines())
    module.write_text(f"if __name__ == '__main__':\n{body}\n")
    return sandbox.run("sandboxed_snippet", [], limits, tmp_path / "scratch", stop=stop,
                       env={"PYTHONPATH": str(tmp_path)})


def test_the_answer_is_the_last_json_line_and_the_child_works_in_its_scratch_folder(tmp_path):
    found = run_code("import json, os\nprint('noise')\nopen('left.txt', 'w').write('x')\n"
                     "print(json.dumps({'cwd': os.getcwd()}))", ROOMY, tmp_path)
    assert found == {"cwd": str(tmp_path / "scratch")}
    assert (tmp_path / "scratch" / "left.txt").exists() and not (tmp_path / "left.txt").exists()


def test_memory_over_the_limit_is_reported_as_memory(tmp_path):
    with pytest.raises(LimitExceeded) as e:
        run_code("x = bytearray(3 << 30)\nprint('{}')", Limits(1 << 30, 30, 60), tmp_path)
    assert e.value.which == "memory"


def test_cpu_over_the_limit_is_reported_as_cpu(tmp_path):
    started = time.monotonic()
    with pytest.raises(LimitExceeded) as e:
        run_code("while True:\n    pass", Limits(2 << 30, 1, 60), tmp_path)
    assert e.value.which == "cpu" and time.monotonic() - started < 15


def test_wall_time_over_the_limit_is_reported_as_time(tmp_path):
    started = time.monotonic()
    with pytest.raises(LimitExceeded) as e:
        run_code("import time\ntime.sleep(60)", Limits(2 << 30, 30, 1.5), tmp_path)
    assert e.value.which == "time" and time.monotonic() - started < 5


def test_stop_raising_kills_the_child_at_once(tmp_path):
    class Stop(Exception):
        pass

    asked = []

    def stop():
        asked.append(time.monotonic())
        if len(asked) >= 2:
            raise Stop

    started = time.monotonic()
    with pytest.raises(Stop):
        run_code("import time, os\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)", ROOMY, tmp_path,
                 stop=stop)
    assert time.monotonic() - started < 3
    pid = int((tmp_path / "scratch" / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_a_crash_is_reported_with_its_last_words(tmp_path):
    with pytest.raises(LimitExceeded) as e:
        run_code("raise SystemExit('the model is broken')", ROOMY, tmp_path)
    assert e.value.which == "crash" and "the model is broken" in e.value.message


def test_repeated_log_records_are_limited_and_counted():
    limit = RepeatLimit(burst=3, window_s=10)

    def record(msg: str, created: float) -> logging.LogRecord:
        r = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, (), None)
        r.created = created
        return r

    passed = [limit.filter(record("socket.accept() out of system resource", t)) for t in range(5)]
    assert passed == [True, True, True, False, False]
    assert limit.filter(record("another message", 5.0))  # another kind has its own count
    later = record("socket.accept() out of system resource", 11.0)
    assert limit.filter(later) and later.repeats_left_out == 2
    access = logging.LogRecord("pareto.access", logging.INFO, __file__, 1, "%s %s %s", ("GET", "/v1/jobs", 200), None)
    assert all(limit.filter(access) for _ in range(50))  # one line per request, by design

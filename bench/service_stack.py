"""A private Pareto for a service benchmark: its own Valkey and SeaweedFS on free ports, the API and
workers as processes (the test suite's launcher), all under one temporary folder removed at the end;
and RSS sampling of a process from /proc."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from cli import processes as P
from core.settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY
from tests.stack import Stack, free_port, free_port_block


@contextlib.contextmanager
def private_stack(workers: int = 0, **settings) -> Iterator[Stack]:
    root = Path(tempfile.mkdtemp(prefix="pareto-bench-"))
    infra: list[P.Process] = []
    s = None
    try:
        valkey, redis_url = P.start_valkey(root / "infra", free_port())
        infra.append(valkey)
        seaweed, s3_url = P.start_seaweedfs(root / "infra", free_port_block(), DEV_S3_ACCESS_KEY,
                                            DEV_S3_SECRET_KEY, "pareto")
        infra.append(seaweed)
        s = Stack.start(root / "stack", redis_url, s3_url, workers=workers, **{"S3_BUCKET": "pareto", **settings})
        yield s
    finally:
        if s is not None:
            s.stop()
        P.stop_all(infra, timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """Calls `sample()` every `interval_s` in a thread, between `with` and its end."""

    interval_s = 0.02

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class RssSampler(Sampler):
    """A process's RSS, sampled; `growth` is the peak over the start."""

    def __init__(self, pid: int, interval_s: float = 0.02):
        super().__init__()
        self.pid, self.interval_s = pid, interval_s
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline

    def sample(self) -> None:
        with contextlib.suppress(OSError):
            self.peak = max(self.peak, rss_bytes(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

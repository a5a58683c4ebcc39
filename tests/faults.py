"""Fault injection for tests: a TCP proxy that can be paused (a storage outage), process-tree helpers
(the Celery pool child of a worker), and log scanning to find the worker that runs a job."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

from cli import processes as P
from tests.stack import free_port


class TcpProxy:
    """Forwards 127.0.0.1:port to a target. `pause()` refuses new connections and cuts open ones, as an
    unreachable server would; `resume()` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.resume()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def resume(self) -> None:
        if self._listener is not None:
            return
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def pause(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._conns:
                _close(s)
            self._conns.clear()

    close = pause

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _close(s)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def kill_pool_child(worker: P.Process) -> int:
    """SIGKILLs the Celery prefork child of a worker (what the OOM killer does): the main process sees
    WorkerLostError and, with task_reject_on_worker_lost, requeues the message at once."""
    deadline = time.monotonic() + 15
    while not (kids := children(worker.popen.pid)):  # the pool may be forking a new one just now
        assert time.monotonic() < deadline, f"worker {worker.name} has no pool child"
        time.sleep(0.1)
    os.kill(kids[0], signal.SIGKILL)
    return kids[0]


def deliveries(worker: P.Process, job_id: str) -> int:
    return worker.log.read_text(errors="replace").count(f"[{job_id}] received")


def worker_taking(workers: list[P.Process], job_id: str, before: dict[str, int], timeout: float = 60) -> P.Process:
    """The worker that received `job_id` once more than `before` (name -> deliveries) says."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            if w.alive() and deliveries(w, job_id) > before.get(w.name, 0):
                return w
        time.sleep(0.05)
    raise AssertionError(f"no worker received {job_id} again")


def run_soak(stack, client, model_id: str, jobs: int, kills: int, seed: int = 7, target: dict | None = None,
             timeout: float = 600, log=lambda *a: None) -> dict:
    """Submits `jobs` jobs, SIGKILLs a pool child of a worker running one of them `kills` times at random
    moments, and waits until every job is terminal or `timeout` passes. Returns what it saw:
    {submitted, terminal, lost, statuses{status: n}, codes{code: n}, kills}."""
    import random
    from collections import Counter

    from tests.stack import TERMINAL

    rng = random.Random(seed)
    ids = []
    for _ in range(jobs):
        body = {"model_id": model_id, "recipe": "int8", **({"target": target} if target else {})}
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    done_kills = 0
    deadline = time.monotonic() + timeout
    states: dict[str, dict] = {}
    while time.monotonic() < deadline:
        states = {}
        for job_id in ids:
            r = client.get(f"/v1/jobs/{job_id}")
            if r.status_code == 200:
                states[job_id] = r.json()
        running = [j for j in states.values() if j["status"] == "running"]
        if done_kills < kills and running and rng.random() < 0.5:
            job = rng.choice(running)
            victims = [w for w in stack.workers if w.alive() and deliveries(w, job["id"]) and children(w.popen.pid)]
            if victims:
                time.sleep(rng.uniform(0.2, 1.5))  # somewhere inside the job
                kill_pool_child(rng.choice(victims))
                done_kills += 1
                log(f"kill {done_kills}/{kills} while {job['id']} was running")
        if len(states) == len(ids) and all(j["status"] in TERMINAL for j in states.values()):
            break
        time.sleep(0.5)
    terminal = [j for j in states.values() if j["status"] in TERMINAL]
    return {"submitted": len(ids), "terminal": len(terminal), "lost": len(ids) - len(states),
            "stuck": len(states) - len(terminal), "kills": done_kills,
            "statuses": dict(Counter(j["status"] for j in states.values())),
            "codes": dict(Counter(j["error"]["code"] for j in states.values() if j.get("error"))),
            "jobs": states}

"""One tenant must not stall the service: tenant B's int8 job on the digits model, timed alone and then while
tenant A sends every stalling input the security review found, with /readyz probed throughout.

Tenant A, all at once, in threads:
- a search whose one option is listed 10,001 times, as a dry run and as a real job;
- three `.pt2` uploads each of 120 compressible programs, three of pickles that push None for minutes, one
  with a symbolic size of 10^(10^10);
- SLOW_CLIENTS connections without a key, each sending a JSON body a byte a second;
- a job whose callback receiver never answers.
Target: B's job within 2x of its time alone, and every /readyz answer within 1 s.

    python -m bench.abuse [--slow-clients 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.service_stack import Sampler, private_stack
from tests.hostile import endless_pickles, export_small_program, huge_size_expression, many_programs
from tests.stack import wait_job
from tests.webhook_receiver import Receiver


def b_job(client: httpx.Client, model_id: str) -> float:
    """Seconds from submit to succeeded for tenant B's int8 job."""
    started = time.monotonic()
    job = client.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8", "target": {"repeats": 20}}).json()
    done = wait_job(client, job["id"], timeout=900)
    assert done["status"] == "succeeded", done
    return time.monotonic() - started


class Readiness(Sampler):
    """/readyz every 0.2 s, and /healthz after it: how long each took (a failure of /readyz counts as 5 s)."""

    interval_s = 0.2

    def __init__(self, url: str):
        super().__init__()
        self.url, self.times, self.at, self.health = url, [], [], []
        self.begun = time.monotonic()

    def sample(self) -> None:
        started = time.monotonic()
        try:
            ok = httpx.get(self.url + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            ok = False
        self.times.append(time.monotonic() - started if ok else 5.0)
        self.at.append(started - self.begun)
        started = time.monotonic()
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(self.url + "/healthz", timeout=5)
        self.health.append(time.monotonic() - started)


def slow_clients(url: str, count: int, stop: threading.Event, outcome: dict) -> None:
    """Connections without a key, each starting a 100 kB JSON body and sending one more byte a second."""
    parts = urlsplit(url)
    conns = []
    for _ in range(count):
        try:
            s = socket.create_connection((parts.hostname, parts.port), timeout=5)
            s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n{")
            s.setblocking(False)
            conns.append(s)
        except OSError:
            outcome["refused"] = outcome.get("refused", 0) + 1
    answered = 0
    while not stop.wait(1.0):
        for s in list(conns):
            try:
                if s.recv(4096):
                    answered += 1
                s.close()
                conns.remove(s)
            except BlockingIOError:
                try:
                    s.send(b" ")
                except OSError:
                    conns.remove(s)
            except OSError:
                conns.remove(s)
    outcome.update(opened=count, answered_401=answered, still_open=len(conns))
    for s in conns:
        s.close()


def tenant_a(stack, folder: Path, model_id: str, slow: int, stop: threading.Event) -> dict:
    """Every stalling input at once; returns what each got."""
    pt2 = export_small_program(folder / "seq.pt2")
    files = [many_programs(pt2, folder / f"many{i}.pt2") for i in range(3)]
    files += [endless_pickles(pt2, folder / f"nones{i}.pt2") for i in range(3)]
    files += [huge_size_expression(pt2, folder / "pow.pt2")]
    outcome: dict = {"uploads": [], "slow": {}}
    silent = Receiver(mode="hang", for_s=300)
    search = {"steps": [{"quantize": {"mode": "dynamic", "per_channel": [True] * 10_001}}],
              "search": {"sampler": "random", "max_trials": 20}}

    def upload(path: Path):
        with stack.client("tenant-a") as c:
            started = time.monotonic()
            r = c.post("/v1/models", params={"format": "pt2"}, content=path.read_bytes(), timeout=300)
            outcome["uploads"].append((path.stem, r.status_code, r.json().get("code"), time.monotonic() - started))

    def jobs():
        with stack.client("tenant-a") as c:
            started = time.monotonic()
            r = c.post("/v1/jobs", params={"dry_run": "true"}, json={"model_id": model_id, "recipe": search})
            outcome["dry_run"] = (r.status_code, round(time.monotonic() - started, 2))
            for body in ({"recipe": search}, {"recipe": "int8", "callback_url": silent.url}):
                c.post("/v1/jobs", json={"model_id": model_id, "target": {"repeats": 20}, **body})

    threads = [threading.Thread(target=upload, args=(f,)) for f in files]
    threads += [threading.Thread(target=jobs), threading.Thread(target=slow_clients,
                                                                 args=(stack.api_url, slow, stop, outcome["slow"]))]
    for t in threads:
        t.start()
    outcome["threads"], outcome["silent"] = threads, silent
    return outcome


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slow-clients", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2, help="B's job alone, this many times (the median counts)")
    args = p.parse_args(argv)
    from examples.digits import write_example

    with tempfile.TemporaryDirectory() as tmp, private_stack(
            workers=2, PARETO_RATE_LIMIT_PER_S=0, PARETO_WEBHOOK_SECRET="bench",
            PARETO_WEBHOOK_ALLOWLIST="127.0.0.1") as stack:
        folder = Path(tmp)
        model_path, _ = write_example(folder)
        ids = {}
        for tenant in ("tenant-a", "tenant-b"):
            with stack.client(tenant) as c:
                r = c.post("/v1/models", params={"format": "onnx"}, content=model_path.read_bytes())
                ids[tenant] = r.json()["id"]
        with stack.client("tenant-b") as b:
            b_job(b, ids["tenant-b"])  # warm
            alone = statistics.median(b_job(b, ids["tenant-b"]) for _ in range(args.rounds))
            stop = threading.Event()
            with Readiness(stack.api_url) as ready:
                outcome = tenant_a(stack, folder, ids["tenant-a"], args.slow_clients, stop)
                time.sleep(2)  # A's inputs are in flight
                abused = b_job(b, ids["tenant-b"])
                stop.set()
                for t in outcome["threads"]:
                    t.join(timeout=600)
            outcome["silent"].close()
    report(alone, abused, ready.times, ready.at, outcome)
    print(f"/healthz (no backend call): slowest {max(ready.health) * 1000:.0f} ms")
    return 0 if abused <= 2 * alone and max(ready.times) <= 1.0 else 1


def report(alone: float, abused: float, ready: list[float], at: list[float], outcome: dict) -> None:
    print(f"tenant B's int8 job alone {alone:.1f} s, while tenant A abuses {abused:.1f} s: "
          f"ratio {abused / alone:.2f} (target <= 2)")
    print(f"/readyz: {len(ready)} probes, slowest {max(ready) * 1000:.0f} ms, median "
          f"{statistics.median(ready) * 1000:.0f} ms (target <= 1000)")
    print("slow probes (s after A began: ms):", [f"{a:.1f}: {t * 1000:.0f}" for a, t in zip(at, ready, strict=True)
                                                if t > 0.3])
    print(f"dry run of the repeated search: {outcome.get('dry_run')}")
    for name, status, code, seconds in sorted(outcome["uploads"]):
        print(f"upload {name:8s} {status} {code} {seconds:.1f} s")
    print(f"slow clients without a key: {outcome['slow']}")


if __name__ == "__main__":
    sys.exit(main())

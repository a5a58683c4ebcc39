"""`pareto up | api | worker`: run the service. Client commands come with the SDK."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path

from cli import admin, client
from cli import processes as P
from core.settings import Settings


def dev_api_keys(data_dir: Path) -> str:
    """A development key, made once and kept under the data directory so restarts keep it."""
    path = data_dir / "dev-api-key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(f"dev:pareto_{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    return path.read_text().strip()


def up(args: argparse.Namespace) -> int:
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    logs = data_dir / "logs"
    env = {"PARETO_DATA_DIR": str(data_dir)}
    infra: list[P.Process] = []  # Valkey, SeaweedFS: stopped after the API and workers
    started: list[P.Process] = []

    def stop_all():
        P.stop_all(started[len(infra):], timeout=30)  # a worker finishes its current step
        P.stop_all(infra, timeout=5)

    # Before anything starts: a signal while the servers start stops what was started (the process still
    # starting is stopped by P._wait), instead of leaving it running. Both set here, not inherited: a shell
    # that starts `pareto up` in the background (`&` without job control) hands it SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: P.STOPPING.set())
    try:
        if not settings.redis_url:
            proc, url = P.start_valkey(data_dir, args.redis_port)
            infra.append(proc)
            started.append(proc)
            env["REDIS_URL"] = url
            print(f"embedded Valkey      {url}")
        if not settings.s3_endpoint_url:
            proc, url = P.start_seaweedfs(data_dir, args.s3_port, settings.s3_access_key, settings.s3_secret_key,
                                          settings.s3_bucket)
            infra.append(proc)
            started.append(proc)
            env["S3_ENDPOINT_URL"] = url
            print(f"embedded SeaweedFS   {url} (bucket {settings.s3_bucket})")
        keys = settings.api_keys or dev_api_keys(data_dir)
        env["PARETO_API_KEYS"] = keys
        started.append(P.start_api(env, logs, args.host, args.port))
        for i in range(args.workers):
            started.append(P.start_worker(env, logs, settings.worker_queues, f"worker{i + 1}", args.concurrency))
    except P.Interrupted as e:
        stop_all()
        print(f"pareto up: {e}; stopped what was started", file=sys.stderr)
        return 1
    except Exception as e:
        stop_all()
        print(f"pareto up failed: {e}", file=sys.stderr)
        return 1

    tenant, _, key = keys.split(",")[0].partition(":")
    print(f"\nPareto is up: http://{args.host}:{args.port}  (logs in {logs})")
    if not settings.api_keys:
        print(f"development API key (tenant {tenant}): {key}")
        print(f"  export PARETO_URL=http://{args.host}:{args.port} PARETO_API_KEY={key}")
    print("Ctrl-C stops everything started here.", flush=True)

    while not P.STOPPING.is_set():
        dead = [p for p in started if not p.alive()]
        if dead:
            print(f"{dead[0].name} exited unexpectedly:\n{dead[0].tail()}", file=sys.stderr)
            break
        time.sleep(0.5)
    print("\nstopping ...", flush=True)
    stop_all()
    return 0


def api(args: argparse.Namespace) -> int:
    os.execv(sys.executable, P.api_argv(args.host, args.port))


def worker(args: argparse.Namespace) -> int:
    queues = args.queues or Settings().worker_queues
    argv = P.worker_argv(queues, args.name, args.concurrency)
    os.execv(sys.executable, argv)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pareto", description="Pareto model-optimization service")
    sub = p.add_subparsers(dest="command", required=True)

    u = sub.add_parser("up", help="start the service; embedded Valkey and SeaweedFS unless REDIS_URL / "
                                  "S3_ENDPOINT_URL are set")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=8000)
    u.add_argument("--workers", type=int, default=1)
    u.add_argument("--concurrency", type=int, default=1, help="jobs at a time per worker")
    u.add_argument("--redis-port", type=int, default=6380, help="embedded Valkey's port")
    u.add_argument("--s3-port", type=int, default=8333, help="embedded SeaweedFS S3 port (uses the next 3 too)")
    u.set_defaults(run=up)

    a = sub.add_parser("api", help="run the API server only")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8000)
    a.set_defaults(run=api)

    w = sub.add_parser("worker", help="run a Celery worker")
    w.add_argument("--queues", help="comma-separated: cpu, gpu (default PARETO_WORKER_QUEUES)")
    w.add_argument("--concurrency", type=int, default=1)
    w.add_argument("--name", default="worker")
    w.set_defaults(run=worker)

    admin.add_parser(sub)
    client.add_parsers(sub)  # submit, jobs, report, recipes, steps
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())

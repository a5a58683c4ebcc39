"""Soak: N jobs on a private stack with random worker kills; prints how many ended, and how.

Kills are SIGKILLs of a worker's Celery pool child while it runs a job (what an OOM kill does); the
message is requeued and the job reruns, or after PARETO_MAX_ATTEMPTS deliveries ends `worker_lost`.
Target: every job terminal, none lost.

    python -m bench.soak [--jobs 30] [--kills 8] [--workers 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.service_stack import private_stack
from tests.faults import run_soak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=30)
    p.add_argument("--kills", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    from examples.digits import write_example

    with tempfile.TemporaryDirectory() as tmp:
        model_path, _ = write_example(Path(tmp))
        with private_stack(workers=args.workers, PARETO_MAX_ATTEMPTS=3, PARETO_RATE_LIMIT_PER_S=0,
                           PARETO_VISIBILITY_TIMEOUT_S=120, PARETO_TASK_TIME_LIMIT_S=100) as s, s.client() as c:
            r = c.post("/v1/models", params={"format": "onnx"}, content=model_path.read_bytes())
            assert r.status_code == 201, r.text
            started = time.monotonic()
            seen = run_soak(s, c, r.json()["id"], args.jobs, args.kills, args.seed, timeout=3600, log=print)
    print(f"\nsoak: {seen['submitted']} jobs, {seen['kills']} kills, {args.workers} workers, "
          f"{time.monotonic() - started:.0f} s")
    print(f"terminal {seen['terminal']}, lost {seen['lost']}, stuck {seen['stuck']}; "
          f"statuses {seen['statuses']}, error codes {seen['codes']}")
    return 0 if seen["lost"] == 0 and seen["stuck"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

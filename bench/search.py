"""The same 12-candidate search (prune ratio x quantize mode x distill on/off on the digits CNN) with one
worker and with two, in one run, through the real service (embedded Valkey and SeaweedFS, the API, Celery
workers): wall time of each and the ratio (target: two workers take <= 0.6x the time of one).

    .venv/bin/python bench/search.py [--epochs 10 30 60] [--runs 2]

--epochs: the distillation's length, one set of runs for each; it sets how much of the job is training (what
two workers share) rather than its fixed start and finish (the job picked up, the baseline measured, the report
written and stored: about 1 s here, which they cannot share), so the ratio falls as the search grows: at 10
epochs the whole search takes about 10 s on one worker and that second is a tenth of it. It cannot fall below
what the longest chain takes: the 30 %-pruned student's distillation is about 58 % of the training, and two
trainings at once on this 2-core machine each run about 10 % slower than alone.

--runs: each search runs that many times with one worker and with two, alternating; the fastest of each counts
(other work on a shared machine only ever slows a run down: single runs here ranged from 31 to 44 s).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import digits_cnn  # noqa: E402

from cli import processes as P  # noqa: E402
from core.settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY  # noqa: E402
from tests.stack import Stack, free_port, free_port_block, wait_job  # noqa: E402

RECIPE = {"steps": [{"prune": {"method": "structured", "ratio": [0.3, 0.6]}},
                    {"distill": {"epochs": 10, "lr": 0.002}},
                    {"quantize": {"mode": ["dynamic", "static", "float"], "fallback": False}}],
          "search": {"sampler": "grid", "max_trials": 12, "optional": ["distill"]},
          "goals": [{"metric": "quality", "max_degradation": 0.02}, {"metric": "latency_p50_ms", "minimize": True}],
          "target": {"batch_sizes": [1], "repeats": 20}}


def run_search(root: Path, redis_url: str, s3_url: str, workers: int, ref, recipe: dict) -> float:
    stack = Stack.start(root / f"w{workers}", redis_url, s3_url, workers=workers, PARETO_INTRA_OP_THREADS=1)
    try:
        with stack.client() as api:
            model = api.post("/v1/models", content=ref.onnx.read_bytes()).json()
            data = api.post("/v1/datasets", content=ref.data.read_bytes()).json()
            start = time.monotonic()
            job = api.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data["id"],
                                             "recipe": recipe}).json()
            done = wait_job(api, job["id"], timeout=3600)
            elapsed = time.monotonic() - start
            assert done["status"] == "succeeded", done
            report = api.get(f"/v1/jobs/{job['id']}/report").json()
            print(f"  {workers} worker(s): {elapsed:.1f} s, {report['search']['trials']} trials, "
                  f"{len(report['candidates'])} candidates, recommended {report['recommended']}", flush=True)
            if workers == 2:
                print(frontier_table(report))
            return elapsed
    finally:
        stack.stop()


def _lineage(candidate: dict) -> str:
    parts = []
    for item in candidate["steps"]:
        (name, params), = item.items()
        shown = {k: params[k] for k in ("ratio", "epochs", "mode") if k in params}
        parts.append(name + "(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")")
    return " > ".join(parts) or "baseline"


def frontier_table(report: dict) -> str:
    """Every candidate measured, frontier ones starred: accuracy, p50 at batch 1, size."""
    rows = [f"    {'':2}{'id':9}{'accuracy':>9}{'p50 ms':>9}{'KiB':>8}  lineage"]
    for c in [report["baseline"], *report["candidates"]]:
        m = c["metrics"]
        star = "* " if c["id"] in report["frontier"] else "  "
        rows.append(f"    {star}{c['id']:9}{m['quality'].get('accuracy', float('nan')):9.4f}"
                    f"{m['latency_ms']['1']['p50']:9.4f}{m['size_bytes'] / 1024:8.1f}  {_lineage(c)}")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, nargs="+", default=[10, 30, 60])
    ap.add_argument("--runs", type=int, default=2, help="runs of each, alternating; the fastest counts")
    args = ap.parse_args()
    ref = digits_cnn()
    root = Path(tempfile.mkdtemp(prefix="bench-search-"))
    valkey, redis_url = P.start_valkey(root, free_port())
    weed, s3_url = P.start_seaweedfs(root, free_port_block(), DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, "pareto")
    results, db = [], 0
    try:
        for epochs in args.epochs:
            distill = {"distill": {**RECIPE["steps"][1]["distill"], "epochs": epochs}}
            recipe = {**RECIPE, "steps": [RECIPE["steps"][0], distill, RECIPE["steps"][2]]}
            times: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.runs):
                for workers in (1, 2):
                    db += 1
                    times[workers].append(run_search(root, redis_url.replace("/0", f"/{db}"), s3_url, workers,
                                                     ref, recipe))
            results.append((epochs, times))
    finally:
        P.stop_all([valkey, weed], timeout=5)
    print()
    for epochs, times in results:
        one, two = min(times[1]), min(times[2])
        shown = {w: ", ".join(f"{t:.1f}" for t in ts) for w, ts in times.items()}
        print(f"distill {epochs:>3} epochs: 1 worker {one:.1f} s ({shown[1]}), 2 workers {two:.1f} s ({shown[2]}): "
              f"ratio {two / one:.2f} (target <= 0.60)")


if __name__ == "__main__":
    main()

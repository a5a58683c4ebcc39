"""`pareto submit | jobs | report | recipes | steps`: the service from a terminal or a pipeline, on the SDK.

    pareto submit model.onnx --recipe int8 --data d.npz --wait --out ./out
    pareto jobs [--status running]        pareto report JOB [--json]
    pareto recipes                        pareto steps

The service's URL and API key: --url / --api-key, or PARETO_URL / PARETO_API_KEY.
Progress goes to stderr (a bar on a terminal, one line per change in a log); results to stdout.

Exit codes, for pipelines:
    0  the job succeeded and met its quality goals (without --wait: it was queued)
    1  the service refused the request (its problem+json code is printed) or could not be reached
    2  usage: bad arguments, a missing file, no URL or API key
    3  the job failed (its error code and message are printed)
    4  the job was cancelled
    5  the job succeeded but missed its quality goals (report.goals_met is false); also `pareto report`
    6  --wait ran out of time (--timeout)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import httpx

from cli.table import report_table
from core.ids import is_id
from core.job import Job, JobStatus
from sdk import ApiError, Client, WaitTimeout

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED, EXIT_CANCELLED, EXIT_GOALS_MISSED, EXIT_TIMEOUT = range(7)


class UsageError(Exception):
    pass


class ProgressBar:
    """The job's progress on stderr: redrawn in place on a terminal, a line per change otherwise."""

    WIDTH = 30

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = ""

    def __call__(self, job: Job) -> None:
        p = job.progress
        filled = round(p.fraction * self.WIDTH)
        line = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {p.fraction:4.0%}  {job.status}"
        line += f"  {p.message}" if p.message else ""
        if self.tty:
            columns = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + line[:columns].ljust(min(columns, len(self.last))))
        elif line != self.last:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = line

    def close(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")


def columns(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _client(args: argparse.Namespace) -> Client:
    url, key = args.url or os.environ.get("PARETO_URL"), args.api_key or os.environ.get("PARETO_API_KEY")
    if not url or not key:
        raise UsageError("set the service's URL and an API key: --url/--api-key or PARETO_URL/PARETO_API_KEY")
    return Client(url, key)


def _model_id(pareto: Client, value: str, name: str | None) -> str:
    if Path(value).is_file():
        model = pareto.upload_model(value, name=name)
        print(f"uploaded model {model.id} ({model.name}, {model.format}, {model.size_bytes} bytes)", file=sys.stderr)
        return model.id
    if is_id(value, "m"):
        return value
    raise UsageError(f"{value}: no such file, nor a model id")


def _dataset_id(pareto: Client, value: str) -> str:
    if Path(value).is_file():
        dataset = pareto.upload_dataset(value)
        print(f"uploaded dataset {dataset.id} ({dataset.samples} samples)", file=sys.stderr)
        return dataset.id
    if is_id(value, "d"):
        return value
    raise UsageError(f"{value}: no such file, nor a dataset id")


def _json(value: str, what: str):
    try:
        return json.loads(value)
    except ValueError as e:
        raise UsageError(f"{what} is not valid JSON: {e}") from e


def _recipe(value: str) -> str | dict:
    """A recipe .json file is sent inline; anything else is a built-in recipe's name."""
    path = Path(value)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise UsageError(f"{value}: no such recipe file")
        return _json(path.read_text(), value)
    return value


def follow(pareto: Client, job_id: str, out: Path | None, timeout: float) -> int:
    """Waits with a progress bar, then prints the frontier table and downloads the artifacts."""
    bar = ProgressBar()
    try:
        job = pareto.wait(job_id, progress=bar, timeout=timeout)
    finally:
        bar.close()
    if job.status is JobStatus.failed:
        error = job.error
        print(f"job {job.id} failed: {error.code}: {error.message}" if error else f"job {job.id} failed",
              file=sys.stderr)
        return EXIT_FAILED
    if job.status is JobStatus.cancelled:
        print(f"job {job.id} was cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    report = pareto.report(job.id)
    print(report_table(report.model_dump(mode="json")))
    if out is not None:
        for name, path in sorted(pareto.download_artifacts(job.id, out).items()):
            print(f"downloaded {name} -> {path} (sha256 checked)")
    return _goals(report.goals_met)


def _goals(met: bool) -> int:
    if met:
        return EXIT_OK
    print("the quality goals were missed (report.goals_met is false)", file=sys.stderr)
    return EXIT_GOALS_MISSED


def submit(args: argparse.Namespace) -> int:
    target = _json(args.target_json, "--target-json") if args.target_json else None
    recipe = _recipe(args.recipe)
    with _client(args) as pareto:
        model_id = _model_id(pareto, args.model, args.name)
        dataset_id = _dataset_id(pareto, args.data) if args.data else None
        job = pareto.submit(model_id, recipe, dataset_id=dataset_id, target=target,
                            idempotency_key=args.idempotency_key)
        print(f"submitted job {job.id} (recipe {job.recipe.name})", file=sys.stderr)
        if not (args.wait or args.out):
            print(job.id)
            return EXIT_OK
        return follow(pareto, job.id, args.out, args.timeout)


def jobs(args: argparse.Namespace) -> int:
    with _client(args) as pareto:
        page = pareto.jobs(status=args.status, limit=args.limit)
    rows = [["job", "status", "progress", "recipe", "created", "error"]]
    for j in page.items:
        rows.append([j.id, str(j.status), f"{j.progress.fraction:.0%}", j.recipe.name,
                     j.created_at.strftime("%Y-%m-%d %H:%M:%S"), j.error.code if j.error else ""])
    print(columns(rows))
    if page.next_cursor:
        print(f"(more: the API's ?cursor={page.next_cursor})", file=sys.stderr)
    return EXIT_OK


def report(args: argparse.Namespace) -> int:
    with _client(args) as pareto:
        result = pareto.report(args.job)
    print(result.model_dump_json(indent=2) if args.json else report_table(result.model_dump(mode="json")))
    return _goals(result.goals_met)


def recipes(args: argparse.Namespace) -> int:
    with _client(args) as pareto:
        found = pareto.recipes()
    for r in found:
        steps = " > ".join(s.name for s in r.steps)
        print(f"{r.name}  ({steps})\n{textwrap.indent(textwrap.fill(r.description, 96), '    ')}\n")
    return EXIT_OK


def steps(args: argparse.Namespace) -> int:
    with _client(args) as pareto:
        found = pareto.steps()
    for s in found:
        print(f"{s['name']}  ({', '.join(s['formats'])}; needs a dataset: {s['needs_dataset']})")
        print(textwrap.indent(textwrap.fill(s["summary"], 96), "    ") + "\n")
    return EXIT_OK


def _guarded(command):
    """Turns the SDK's errors into a message on stderr and the documented exit code."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UsageError as e:
            print(f"pareto {args.command}: {e}", file=sys.stderr)
            return EXIT_USAGE
        except WaitTimeout as e:
            print(f"pareto {args.command}: {e.detail}", file=sys.stderr)
            return EXIT_TIMEOUT
        except ApiError as e:
            print(f"pareto {args.command}: {e.code} ({e.status}): {e.detail}", file=sys.stderr)
            return EXIT_ERROR
        except httpx.TransportError as e:
            print(f"pareto {args.command}: could not reach the service: {e}", file=sys.stderr)
            return EXIT_ERROR

    return run


def add_parsers(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the service (default: PARETO_URL)")
    common.add_argument("--api-key", help="an API key (default: PARETO_API_KEY)")

    s = sub.add_parser("submit", parents=[common], help="upload a model (and data), submit a recipe, follow it")
    s.add_argument("model", help="a model file (.onnx, .pt2) or the id of an uploaded model")
    s.add_argument("--recipe", required=True, help="a built-in recipe's name, or a recipe .json file")
    s.add_argument("--data", help="a dataset .npz, or the id of an uploaded dataset")
    s.add_argument("--target-json", help='overrides the recipe\'s target, e.g. \'{"batch_sizes": [1, 8]}\'')
    s.add_argument("--name", help="the model's name (default: the file's)")
    s.add_argument("--idempotency-key", help="submitting again with the same key returns the same job")
    s.add_argument("--wait", action="store_true", help="follow the job, print the report table")
    s.add_argument("--out", type=Path, help="download the artifacts into this folder (implies --wait)")
    s.add_argument("--timeout", type=float, default=3600, help="seconds --wait waits (default 3600)")
    s.set_defaults(run=_guarded(submit))

    j = sub.add_parser("jobs", parents=[common], help="your jobs, newest first")
    j.add_argument("--status", choices=[str(s) for s in JobStatus])
    j.add_argument("--limit", type=int, default=20)
    j.set_defaults(run=_guarded(jobs))

    r = sub.add_parser("report", parents=[common], help="a finished job's report: the frontier table")
    r.add_argument("job", help="the job's id")
    r.add_argument("--json", action="store_true", help="the whole report as JSON")
    r.set_defaults(run=_guarded(report))

    sub.add_parser("recipes", parents=[common], help="the built-in recipes").set_defaults(run=_guarded(recipes))
    sub.add_parser("steps", parents=[common], help="every step and what it takes").set_defaults(run=_guarded(steps))

"""`make demo`: Pareto's main job on the embedded default, end to end.

Starts `pareto up` (embedded Valkey and SeaweedFS, the API, a worker) unless PARETO_URL and
PARETO_API_KEY point at a running service; trains the example model (an MLP on scikit-learn's digits);
uploads it and its held-out data over HTTP; runs the built-in `int8` recipe; prints the report table;
downloads the optimized model through its presigned URL into ./demo-out/; stops what it started.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli.table import report_table  # noqa: E402
from examples.digits import write_example  # noqa: E402

OUT = Path("demo-out")


def start_service() -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        print("  | " + line.rstrip())
        if "Ctrl-C" in line:
            break
    text = "".join(lines)
    url, key = re.search(r"Pareto is up: (\S+)", text), re.search(r"development API key \(tenant \w+\): (\S+)", text)
    if not url or not key:
        proc.wait(30)
        sys.exit("pareto up did not start; see the lines above")
    return proc, url.group(1), key.group(1)


def main() -> None:
    proc = None
    url, key = os.environ.get("PARETO_URL"), os.environ.get("PARETO_API_KEY")
    if not (url and key):
        print("starting pareto up ...")
        proc, url, key = start_service()
    try:
        run(url, key)
    finally:
        if proc:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=90)


def run(url: str, key: str) -> None:
    print("training the example model (MLP on scikit-learn digits) ...")
    model_path, data_path = write_example(OUT / "example")
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    model = api.post("/v1/models", params={"name": "digits-mlp"}, content=model_path.read_bytes()).json()
    dataset = api.post("/v1/datasets", params={"name": "digits-test"}, content=data_path.read_bytes()).json()
    print(f"uploaded model {model['id']} ({model['size_bytes']} bytes) and dataset {dataset['id']}")
    job = api.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": dataset["id"], "recipe": "int8",
                                     "target": {"batch_sizes": [1, 32]}}).json()
    print(f"job {job['id']} queued")
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.5)
        job = api.get(f"/v1/jobs/{job['id']}").json()
        p = job["progress"]
        print(f"  {job['status']:9} {p['fraction'] * 100:5.1f}%  {p['message']}")
    if job["status"] != "succeeded":
        sys.exit(f"job {job['status']}: {job.get('error')}")
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    print("\n" + report_table(report) + "\n")
    for artifact in api.get(f"/v1/jobs/{job['id']}/artifacts").json():
        target = OUT / artifact["name"]
        target.write_bytes(httpx.get(artifact["url"], timeout=120).content)
        print(f"downloaded {artifact['name']} -> {target}")
    print(f"\nthe optimized model: {OUT / 'model.onnx'}")


if __name__ == "__main__":
    main()

"""Is a reported speed-up a measurement or the machine's mood? A job whose candidate computes exactly what its
input computes (`optimize_graph` at the basic level: the rewrites onnxruntime makes at every session start
anyway) must report a speed-up of 1.00 within 5 %, while another job loads the machine; and the same job run
twice under that load must report speed-ups within 15 % of each other.

The model: a convolutional network of some 10 ms at batch 1 on one thread (built here with onnx.helper), or
--model PATH. The load: an int8 job on the same model with many timed runs, on a second worker.

    python -m bench.stability [--model PATH] [--runs 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.service_stack import private_stack
from tests.stack import wait_job

TARGET = {"batch_sizes": [1, 8], "repeats": 40, "warmup": 5, "threads": 1}
LOAD_TARGET = {"batch_sizes": [8], "repeats": 3000, "warmup": 5, "threads": 1}
SAME = [{"optimize_graph": {"level": "basic"}}]


def conv_net(path: Path, width: int = 48, layers: int = 6, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        cin = 3 if i == 0 else width
        inits.append(numpy_helper.from_array((rng.standard_normal((width, cin, 3, 3)) * 0.1).astype(np.float32),
                                             f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"]), helper.make_node("Flatten", ["g"], ["y"])]
    info = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "conv", [info("x", TensorProto.FLOAT, ["N", 3, size, size])],
                              [info("y", TensorProto.FLOAT, ["N", width])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def speedups(client: httpx.Client, model_id: str) -> dict:
    job = client.post("/v1/jobs", json={"model_id": model_id, "recipe": {"steps": SAME}, "target": TARGET}).json()
    done = wait_job(client, job["id"], timeout=1800)
    assert done["status"] == "succeeded", done
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    base, (cand,) = report["baseline"]["metrics"]["latency_ms"], report["candidates"]
    lat = cand["metrics"]["latency_ms"]
    noisy = [n for n in cand["notes"] if " is noisy" in n]
    return {b: {"speedup": base[b]["p50"] / lat[b]["p50"], "baseline_ms": base[b]["p50"],
                "spread": lat[b]["spread"] or 0, "noisy": any(f"batch {b} is noisy" in n for n in noisy)} for b in base}


def load(client: httpx.Client, model_id: str, stop: threading.Event) -> None:
    while not stop.is_set():
        job = client.post("/v1/jobs", json={"model_id": model_id, "recipe": "int8", "target": LOAD_TARGET}).json()
        wait_job(client, job["id"], timeout=1800)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, private_stack(workers=2, PARETO_RATE_LIMIT_PER_S=0) as stack:
        path = args.model or conv_net(Path(tmp) / "conv.onnx")
        with stack.client() as c:
            model_id = c.post("/v1/models", params={"format": "onnx"}, content=path.read_bytes()).json()["id"]
            stop = threading.Event()
            loader = threading.Thread(target=load, args=(c, model_id, stop), daemon=True)
            loader.start()
            results = [speedups(c, model_id) for _ in range(args.runs)]
            stop.set()
    ok = True
    for i, run in enumerate(results, 1):
        for batch, r in run.items():
            within = abs(r["speedup"] - 1) <= 0.05
            ok &= within
            said = ", said to be noisy" if r["noisy"] else ""
            print(f"run {i} batch {batch}: baseline p50 {r['baseline_ms']:.2f} ms, same-computation speed-up "
                  f"{r['speedup']:.3f} (per-round ratios spread {r['spread']:.0%}{said}) "
                  f"{'ok' if within else 'OUTSIDE 1.00 +- 0.05'}")
    for batch in results[0]:
        values = [run[batch]["speedup"] for run in results]
        apart = max(values) / min(values) - 1
        ok &= apart <= 0.15
        print(f"batch {batch}: speed-ups of the {len(values)} runs {apart:.1%} apart (target <= 15 %)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

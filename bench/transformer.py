"""all-MiniLM-L6-v2 at the int8 frontier, side by side in one run: fp32; Pareto's `int8` recipe (quantize auto,
which tries SmoothQuant where activations have outliers); Pareto's dynamic int8 with SmoothQuant asked for
(alpha chosen by fidelity); onnxruntime's quantize_dynamic with its defaults; NNCF with model_type=TRANSFORMER
(bench/peers.py installs it into a virtual environment of its own); and Pareto's `shrink-and-improve` (text).

Each with its size, p50 at batch 1 and 32 (sequence 128; the median of side-by-side rounds, bench/harness.py),
and the mean and the lowest cosine of its sentence embeddings to fp32's on the held-out sentences.

    .venv/bin/python bench/transformer.py [--rounds N] [--repeats N] [--no-shrink] [--peers ort-dynamic,...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from harness import REPEATS, ROUNDS, job_setup, measure_chain, minilm, remeasure
from peers import OUT, PEERS, Outcome, peer_int8, prepared, write_calibration

from core.recipes import builtin_recipe

BATCHES = [1, 32]
CONFIGS = [
    ("Pareto int8 (recipe int8)", [{"quantize": {"mode": "auto"}}]),
    ("Pareto dynamic int8 + SmoothQuant", [{"quantize": {"mode": "dynamic", "smooth": {}}}]),
]


def shrink_steps() -> list[dict]:
    return [s.model_dump() for s in builtin_recipe("shrink-and-improve").steps]


def cosines(ref, path: Path, baseline: Path) -> tuple[float, float]:
    """Mean and lowest cosine of the file's sentence embeddings to the baseline's, on the held-out sentences."""
    import onnxruntime as ort

    _, data, _, _ = job_setup(ref, [], BATCHES, REPEATS["minilm"])
    out = []
    for model in (baseline, path):
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        out.append(np.concatenate([sess.run(None, data.eval.feed(slice(i, i + 16)))[0]
                                   for i in range(0, len(data.eval), 16)]).reshape(len(data.eval), -1))
    a, b = (x.astype(np.float64) for x in out)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean()), float(cos.min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=ROUNDS["minilm"])
    ap.add_argument("--repeats", type=int, default=REPEATS["minilm"])
    ap.add_argument("--no-shrink", action="store_true", help="leave shrink-and-improve out (its training is slow)")
    ap.add_argument("--peers", default="ort-dynamic,nncf-transformer")
    args = ap.parse_args()
    ref, folder = minilm(), OUT / "transformer"
    folder.mkdir(parents=True, exist_ok=True)
    baseline, outputs = measure_chain(ref, "fp32", [], BATCHES, args.repeats)
    outcomes = [Outcome("fp32", baseline, "float", path=ref.onnx)]
    configs = CONFIGS + ([] if args.no_shrink else [("Pareto shrink-and-improve", shrink_steps())])
    for label, steps in configs:
        row, _ = measure_chain(ref, label, steps, BATCHES, args.repeats, outputs)
        outcomes.append(Outcome(label, row, "", path=row.path))
        print(f"  {label}: built in {row.seconds:.0f} s", flush=True)
    calibration = write_calibration(ref, folder)
    for peer in (p for p in PEERS if p.key in args.peers.split(",")):
        outcomes.append(peer_int8(peer, prepared(peer), ref, calibration, args.repeats, outputs))
        print(f"  {peer.label}: {'measured' if outcomes[-1].row else outcomes[-1].error}", flush=True)
    rows = [o.row for o in outcomes if o.row is not None]
    for o in outcomes:
        if o.row is not None:
            o.row.path = o.path
    remeasure(ref, rows, args.rounds, args.repeats, BATCHES)
    found = [{"label": o.label, "error": o.error} if o.row is None else
             {"label": o.label, "path": str(o.path), "size_bytes": o.row.size_bytes, "p50_ms": o.row.latency,
              "cosine": cosines(ref, o.path, ref.onnx)} for o in outcomes]
    (folder / "results.json").write_text(json.dumps({"rounds": args.rounds, "repeats": args.repeats,
                                                     "rows": found}, indent=1))
    print(table(found, args.rounds, args.repeats))


def table(rows: list[dict], rounds: int, repeats: int) -> str:
    base = rows[0]
    lines = [f"{'candidate':36} {'x smaller':>9} {'p50 b1 ms':>9} {'speedup b1':>10} {'p50 b32 ms':>10} "
             f"{'speedup b32':>11} {'mean cos':>8} {'min cos':>8}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['label']:36} FAILED: {r['error']}")
            continue
        (mean, low), p50 = r["cosine"], r["p50_ms"]
        lines.append(f"{r['label']:36} {base['size_bytes'] / r['size_bytes']:9.2f} {p50['1']:9.2f} "
                     f"{base['p50_ms']['1'] / p50['1']:10.2f} {p50['32']:10.1f} "
                     f"{base['p50_ms']['32'] / p50['32']:11.2f} {mean:8.4f} {low:8.4f}")
    lines.append(f"(p50: the median of {rounds} side-by-side rounds of {repeats} runs, 1 thread as a job's "
                 "default; cosine on the held-out sentences)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

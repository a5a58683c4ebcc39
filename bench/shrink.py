"""Every shrinking step on both reference models, measured side by side in one run (onnxruntime CPU,
batch 1 and 32; MiniLM at sequence 128): size ratio, p50 speedup and quality (digits accuracy; MiniLM
mean sentence-embedding cosine to fp32 on real English sentences).

    .venv/bin/python bench/shrink.py [--repeats N] [--rounds N] [--only cnn|minilm]
"""

from __future__ import annotations

import argparse

from harness import REPEATS, ROUNDS, digits_cnn, minilm, run_configs

CNN = [
    ("baseline (fp32)", []),
    ("int8 (recipe: auto)", [{"quantize": {"mode": "auto"}}]),
    ("int8 dynamic", [{"quantize": {"mode": "dynamic"}}]),
    ("int8 static minmax", [{"quantize": {"mode": "static"}}]),
    ("int8 static entropy", [{"quantize": {"mode": "static", "method": "entropy"}}]),
    ("int4 weight-only", [{"quantize": {"mode": "weight_only", "dtype": "int4"}}]),
    ("fp16", [{"quantize": {"mode": "float", "dtype": "fp16"}}]),
    ("bf16 storage", [{"quantize": {"mode": "float", "dtype": "bf16"}}]),
    ("prune magnitude 50%", [{"prune": {"method": "magnitude", "ratio": 0.5}}]),
    ("prune 2:4", [{"prune": {"method": "semi_structured"}}]),
    ("prune structured 50%", [{"prune": {"method": "structured", "ratio": 0.5}}]),
    ("factorize rank 50%", [{"factorize": {"rank_ratio": 0.5}}]),
    ("cluster 16", [{"cluster": {"clusters": 16}}]),
    ("optimize_graph all", [{"optimize_graph": {"level": "all"}}]),
    ("prune structured 30% + int8",
     [{"prune": {"method": "structured", "ratio": 0.3}}, {"quantize": {"mode": "auto"}}]),
]
MINILM = [
    ("baseline (fp32)", []),
    ("int8 (recipe: auto)", [{"quantize": {"mode": "auto"}}]),
    ("int8 dynamic per-tensor (ort default)", [{"quantize": {"mode": "dynamic", "per_channel": False}}]),
    ("int8 static minmax", [{"quantize": {"mode": "static"}}]),
    ("int4 weight-only", [{"quantize": {"mode": "weight_only", "dtype": "int4"}}]),
    ("fp16", [{"quantize": {"mode": "float", "dtype": "fp16"}}]),
    ("prune structured 30%", [{"prune": {"method": "structured", "ratio": 0.3}}]),
    ("prune structured 30% + int8",
     [{"prune": {"method": "structured", "ratio": 0.3}}, {"quantize": {"mode": "auto"}}]),
    ("prune magnitude 50%", [{"prune": {"method": "magnitude", "ratio": 0.5}}]),
    ("drop_layers keep every 2nd", [{"drop_layers": {"keep_every": 2}}]),
    ("factorize rank 50%", [{"factorize": {"rank_ratio": 0.5}}]),
    ("cluster 32", [{"cluster": {"clusters": 32}}]),
    ("optimize_graph extended (fusion)", [{"optimize_graph": {"level": "extended"}}]),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, help=f"timed runs per batch size in a round (default {REPEATS})")
    ap.add_argument("--rounds", type=int, help="side-by-side rounds; p50 = the median round's "
                    f"(default {ROUNDS})")
    ap.add_argument("--only", choices=["cnn", "minilm"])
    args = ap.parse_args()
    run_configs([("cnn", digits_cnn, CNN), ("minilm", minilm, MINILM)], args.repeats, args.only, args.rounds)


if __name__ == "__main__":
    main()

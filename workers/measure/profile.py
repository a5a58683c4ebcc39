"""Where a model's time goes, per operator, from onnxruntime's own profiler, and why a candidate is slower or
faster than its baseline, in words: the causes users otherwise dig out of profiler dumps by hand (activations
quantized and dequantized around every integer kernel, Transposes inserted, integer kernels without a fast
CPU path, layers left in float, nodes an accelerator's provider handed back to the CPU).

`profile` runs in the probe's child process (workers/measure/probe.py); `causes` compares two profiles.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from core.report import NodeTime, OpTime, Profile

RUNS = 5  # profiled runs after a warm-up, at the target's first batch size
TOP_NODES = 10
CONVERSIONS = {"QuantizeLinear", "DequantizeLinear"}
DYNAMIC = "DynamicQuantizeLinear"
SLOW_INTEGER = {"ConvInteger": "dynamic int8 convolution, which has no fast CPU kernel"}
FLOAT_WEIGHT_OPS = {"MatMul", "Gemm", "Conv", "FusedConv", "FusedMatMul", "FusedGemm"}
INTEGER_OPS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QGemm",
               "QAttention", "MatMulNBits", "DynamicQuantizeLSTM", "MatMulIntegerToFloat"}
SHARE = 0.05  # a cause is named when it costs at least this share of the run


WARMUP = 2


def profile(session_factory, feed: dict, batch: int, scratch: Path) -> Profile:
    """Profiles RUNS runs of `feed` after WARMUP runs: `session_factory(options)` makes the session, here with
    onnxruntime's profiler on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(scratch / "profile")
    session = session_factory(opts)
    for _ in range(WARMUP + RUNS):
        session.run(None, feed)
    path = Path(session.end_profiling())
    events = json.loads(path.read_text())
    path.unlink(missing_ok=True)
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    after = starts[WARMUP] if len(starts) > WARMUP else 0
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
               and e["ts"] >= after]
    return summarize(kernels, RUNS if after else WARMUP + RUNS, batch)


def summarize(events: list[dict], runs: int, batch: int) -> Profile:
    """Per node and per operator type, the mean milliseconds of one run."""
    nodes: dict[str, list] = {}
    providers: dict[str, int] = defaultdict(int)
    for e in events:
        name = e["name"][: -len("_kernel_time")]
        entry = nodes.setdefault(name, [e["args"].get("op_name", "?"), 0.0, e["args"].get("provider", "")])
        entry[1] += e["dur"] / 1000 / runs
    ops: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for op, ms, provider in nodes.values():
        ops[op][0] += 1
        ops[op][1] += ms
        providers[provider or "?"] += 1
    ranked = sorted(nodes.items(), key=lambda kv: -kv[1][1])[:TOP_NODES]
    return Profile(
        batch=batch, runs=runs, total_ms=round(sum(ms for _, ms, _ in nodes.values()), 4),
        ops=sorted((OpTime(op=op, nodes=n, ms=round(ms, 4)) for op, (n, ms) in ops.items()), key=lambda o: -o.ms),
        slowest_nodes=[NodeTime(name=name, op=op, ms=round(ms, 4)) for name, (op, ms, _) in ranked],
        providers=dict(providers))


def _op(p: Profile, names: set[str] | str) -> tuple[int, float]:
    wanted = {names} if isinstance(names, str) else names
    found = [o for o in p.ops if o.op in wanted]
    return sum(o.nodes for o in found), sum(o.ms for o in found)


def causes(candidate: Profile, baseline: Profile, target_provider: str = "CPUExecutionProvider") -> list[str]:
    """What makes the candidate's run differ from the baseline's, in words, the costliest first."""
    found: list[tuple[float, str]] = []
    total = max(candidate.total_ms, 1e-9)
    n, ms = _op(candidate, CONVERSIONS)
    if ms >= SHARE * total:
        found.append((ms, f"{n} QuantizeLinear / DequantizeLinear nodes convert activations between float and int8 "
                          f"around the integer kernels: {ms:.2f} ms ({ms / total:.0%} of the run)"))
    n, ms = _op(candidate, DYNAMIC)
    if ms >= SHARE * total:
        found.append((ms, f"DynamicQuantizeLinear on {n} activations (int8 scales computed at run time): "
                          f"{ms:.2f} ms ({ms / total:.0%} of the run)"))
    for op, why in SLOW_INTEGER.items():
        n, ms = _op(candidate, op)
        if n:
            _, before = _op(baseline, {"Conv", "FusedConv"})
            found.append((ms, f"{op} on {n} layers ({why}): {ms:.2f} ms, where the baseline's convolutions took "
                              f"{before:.2f} ms"))
    (n_after, t_after), (n_before, t_before) = _op(candidate, "Transpose"), _op(baseline, "Transpose")
    if n_after > n_before and t_after - t_before >= SHARE * total:
        found.append((t_after - t_before, f"{n_after - n_before} more Transpose nodes than the baseline: "
                                          f"{t_after - t_before:.2f} ms"))
    if _op(candidate, INTEGER_OPS)[0]:
        n, ms = _op(candidate, FLOAT_WEIGHT_OPS)
        if n and ms >= SHARE * total:
            found.append((ms, f"layers left in float beside the integer ones: {n} nodes, {ms:.2f} ms"))
    elsewhere = sum(count for provider, count in candidate.providers.items() if provider != target_provider)
    if target_provider != "CPUExecutionProvider" and elsewhere:
        found.append((float("inf"), f"the execution provider placed {elsewhere} nodes on the CPU instead of "
                                    f"{target_provider}"))
    for said, grew in _growth(candidate, baseline):
        if grew >= SHARE * total:
            found.append((grew, f"{said} ({grew:.2f} ms more)"))
    return [c for _, c in sorted(found, key=lambda x: -x[0])]


# what an operator computes, whatever the precision or fusion onnxruntime ran it in
FAMILY = {"QLinearConv": "Conv", "ConvInteger": "Conv", "FusedConv": "Conv", "NchwcConv": "Conv",
          "QLinearMatMul": "MatMul", "MatMulInteger": "MatMul", "DynamicQuantizeMatMul": "MatMul",
          "MatMulIntegerToFloat": "MatMul", "MatMulNBits": "MatMul", "FusedMatMul": "MatMul", "QGemm": "Gemm",
          "FusedGemm": "Gemm", "QLinearMul": "Mul", "QLinearAdd": "Add", "QLinearSigmoid": "Sigmoid",
          "QLinearGlobalAveragePool": "GlobalAveragePool", "QLinearAveragePool": "AveragePool",
          "QLinearConcat": "Concat", "QLinearSoftmax": "Softmax", "QAttention": "Attention",
          "DynamicQuantizeLSTM": "LSTM"}


def _families(p: Profile) -> dict[str, tuple[float, list[str]]]:
    found: dict[str, tuple[float, list[str]]] = {}
    for o in p.ops:
        family = FAMILY.get(o.op, o.op)
        ms, ops = found.get(family, (0.0, []))
        found[family] = (ms + o.ms, [*ops, f"{o.nodes} {o.op}"])
    return found


def _growth(candidate: Profile, baseline: Profile) -> list[tuple[str, float]]:
    """The operator families (Conv however it runs: Conv, QLinearConv, ConvInteger) that take most longer."""
    before, after = _families(baseline), _families(candidate)
    named = CONVERSIONS | {DYNAMIC, "Transpose"}  # said on their own above
    grown = [(f"{family} (as {', '.join(ops)}): {ms:.2f} ms, the baseline's {before.get(family, (0.0,))[0]:.2f} ms",
              ms - before.get(family, (0.0,))[0]) for family, (ms, ops) in after.items() if family not in named]
    return sorted(grown, key=lambda x: -x[1])[:3]


def speedups(candidate: Profile, baseline: Profile) -> list[str]:
    """Where a faster candidate saves its time: the operator families whose time fell most."""
    before, after = _families(baseline), _families(candidate)
    saved = sorted(((family, ms - after.get(family, (0.0, []))[0], after.get(family, (0.0, []))[1])
                    for family, (ms, _) in before.items()), key=lambda x: -x[1])[:2]
    return [f"{family}{' (as ' + ', '.join(ops) + ')' if ops else ''}: {ms:.2f} ms less than the baseline"
            for family, ms, ops in saved if ms >= SHARE * baseline.total_ms]

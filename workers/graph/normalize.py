"""Import normalization: one pass over every uploaded ONNX model before any step runs, so that the steps see
the same kind of graph whatever exported it (`python -m workers.graph.normalize SPEC.json`, in a child process
held to the job's budget: it parses the tenant's file).

Exporters other than torch's leave graphs that quantizers and surgery do not expect: Paddle2ONNX stores every
weight in a `Constant` node and leaves BatchNormalization unfolded; others repeat one weight tensor under
several names, or stop at an opset below what per-channel QDQ needs (13). onnxruntime's basic graph
optimizations (its level 1: constant folding, Constant nodes made initializers, BatchNormalization folded into
Conv, Identity and Dropout removed) are written back as a standard ONNX graph; shared weights are
deduplicated; the opset is raised to 13 where it is lower. Then the normalized graph is run beside the original
on the job's samples, and kept only if it computes the same (cosine 0.99999 and close in absolute terms);
otherwise the original goes on, and the report says why.

A graph that is already quantized (QLinear*, MatMulInteger, DynamicQuantizeLinear, MatMulNBits, QDQ pairs on
weights) is left as it is and reported, so that a recipe does not quantize it twice.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx

from core.errors import ErrorCode, without_paths
from core.steps.quantize import QUANTIZED_OPS
from workers.engine.data import Split, run_samples

MIN_OPSET = 13  # per-channel QuantizeLinear / DequantizeLinear
CHECK_SAMPLES = 8
SAME_COSINE = 0.99999
NORMALIZE_TIMEOUT_S = 600


def quantized_form(model: onnx.ModelProto) -> str | None:
    """How the graph is already quantized, in words; None when it is a float graph."""
    ops = {n.op_type for n in model.graph.node}
    found = sorted(ops & QUANTIZED_OPS)
    weights = {t.name for t in model.graph.initializer if t.data_type in (onnx.TensorProto.INT8,
                                                                         onnx.TensorProto.UINT8, onnx.TensorProto.INT4)}
    qdq = sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights)
    if qdq:
        found.append(f"DequantizeLinear on {qdq} integer weights (QDQ)")
    return ", ".join(found) or None


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


WEIGHT_ELEMENTS = 16  # a Constant node holding more than this is a weight, not a shape or a scalar
# level-1 rewrites left out: a MatMul + Add made Gemm is no longer quantized by the dynamic int8 path
DISABLED = ["MatMulAddFusion"]


def reasons(model: onnx.ModelProto) -> list[str]:
    """What in the graph calls for normalization; a graph exported the way the steps expect needs none, and is
    left byte for byte as it was."""
    found = []
    weights = sum(1 for n in model.graph.node if n.op_type == "Constant" and any(
        a.name == "value" and np.prod(a.t.dims) > WEIGHT_ELEMENTS for a in n.attribute))
    if weights:
        found.append(f"{weights} weights in Constant nodes")
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    unfolded = sum(1 for n in model.graph.node if n.op_type == "BatchNormalization"
                   and producers.get(n.input[0]) in ("Conv", "Gemm", "ConvTranspose"))
    if unfolded:
        found.append(f"{unfolded} BatchNormalization not folded")
    if _duplicates(model):
        found.append("weights stored more than once")
    if 0 < default_opset(model) < MIN_OPSET:
        found.append(f"opset {default_opset(model)}")
    return found


def _duplicates(model: onnx.ModelProto) -> bool:
    return deduplicate(onnx.ModelProto.FromString(model.SerializeToString())) > 0 if model.graph.initializer else False


def _optimized(src: Path, out: Path) -> None:
    """onnxruntime's level-1 rewrites (standard ONNX operators only), written back as a file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(out)
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED)


def deduplicate(model: onnx.ModelProto) -> int:
    """Initializers holding the same values under several names become one; how many were dropped."""
    first: dict[tuple, str] = {}
    renamed: dict[str, str] = {}
    kept = []
    for t in model.graph.initializer:
        key = (t.data_type, tuple(t.dims), hashlib.sha256(onnx.numpy_helper.to_array(t).tobytes()).digest())
        if key in first and t.ByteSize() > 64:
            renamed[t.name] = first[key]
        else:
            first.setdefault(key, t.name)
            kept.append(t)
    if not renamed:
        return 0
    graph_outputs = {o.name for o in model.graph.output}
    if graph_outputs & set(renamed):
        return 0
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    return len(renamed)


def _counts(model: onnx.ModelProto) -> dict[str, int]:
    ops = [n.op_type for n in model.graph.node]
    return {"nodes": len(ops), "Constant": ops.count("Constant"), "BatchNormalization": ops.count("BatchNormalization"),
            "Identity": ops.count("Identity") + ops.count("Dropout"), "initializers": len(model.graph.initializer)}


def _same_outputs(original: Path, normalized: Path, samples: Split) -> tuple[bool, float]:
    """Whether both graphs compute the same on the first samples, and the lowest output cosine."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    a, b = (run_samples(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]), samples,
                        CHECK_SAMPLES) for path in (original, normalized))
    worst, same = 1.0, True
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False, 0.0
        if x.dtype.kind not in "fc":
            same &= bool(np.array_equal(x, y))
            continue
        x64, y64 = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
        norms = np.linalg.norm(x64) * np.linalg.norm(y64)
        cosine = float(x64 @ y64 / norms) if norms > 0 else float(np.array_equal(x64, y64))
        worst = min(worst, cosine)
        same &= cosine >= SAME_COSINE and bool(np.allclose(x64, y64, rtol=1e-3, atol=1e-4 * (np.abs(x64).max() + 1)))
    return same, worst


def _normalize(src: Path, out: Path, samples: Split) -> dict:
    """Writes the normalized graph to `out` (or the original, unchanged) and says what was done."""
    original = onnx.load(str(src))
    quantized = quantized_form(original)
    if quantized:
        out.write_bytes(src.read_bytes())
        return {"changed": False, "quantized": quantized,
                "notes": [f"the model is already quantized ({quantized}): it is left as it is"]}
    why = reasons(original)
    if not why:
        out.write_bytes(src.read_bytes())
        return {"changed": False, "quantized": None, "notes": []}
    before, opset = _counts(original), default_opset(original)
    work = out.with_suffix(".level1.onnx")
    _optimized(src, work)
    model = onnx.load(str(work))
    work.unlink()
    notes = [f"normalized ({'; '.join(why)})"]
    if opset and opset < MIN_OPSET:
        try:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
            notes.append(f"opset {opset} raised to {MIN_OPSET} (per-channel quantization needs it)")
        except Exception as e:
            notes.append(f"opset {opset} kept: the converter refused ({type(e).__name__})")
    merged = deduplicate(model)
    after = _counts(model)
    notes += _described(before, after, merged)
    onnx.save(model, str(out))
    same, cosine = _same_outputs(src, out, samples)
    if not same:
        out.write_bytes(src.read_bytes())
        return {"changed": False, "quantized": None, "notes": [
            f"import normalization skipped: the normalized graph did not compute the same (cosine {cosine:.6f})"]}
    return {"changed": True, "quantized": None, "notes": notes}


def _described(before: dict[str, int], after: dict[str, int], merged: int) -> list[str]:
    said = []
    if before["Constant"] > after["Constant"]:
        said.append(f"{before['Constant'] - after['Constant']} Constant nodes made initializers or folded")
    if before["BatchNormalization"] > after["BatchNormalization"]:
        said.append(f"{before['BatchNormalization'] - after['BatchNormalization']} BatchNormalization folded into "
                    "the layer before")
    if before["Identity"] > after["Identity"]:
        said.append(f"{before['Identity'] - after['Identity']} Identity / Dropout nodes removed")
    if merged:
        said.append(f"{merged} duplicate weight tensors merged")
    if before["nodes"] != after["nodes"]:
        said.append(f"{before['nodes']} nodes became {after['nodes']}")
    return said


def normalize(src: Path, out: Path, samples: Split) -> dict:
    """In the worker: the normalization run in a child process within the job's budget (it parses the
    tenant's file); {changed, quantized, notes}."""
    from workers.measure.bench import in_sandbox

    spec = out.parent / f"{out.stem}.normalize.json"
    feed = out.parent / f"{out.stem}.normalize.npz"
    np.savez(feed, **samples.head(CHECK_SAMPLES).feed(slice(None)))
    spec.write_text(json.dumps({"src": str(src), "out": str(out), "samples": str(feed),
                                "unbatched": list(samples.fixed)}))
    return in_sandbox("workers.graph.normalize", [str(spec)], out.parent / f"{out.stem}.scratch",
                      "the model could not be read", ErrorCode.model_run_failed, NORMALIZE_TIMEOUT_S)


def _main(spec: dict) -> dict:
    with np.load(spec["samples"], allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    fixed = {k: arrays.pop(k) for k in spec["unbatched"]}
    src, out = Path(spec["src"]), Path(spec["out"])
    try:
        return _normalize(src, out, Split(arrays, fixed=fixed))
    except Exception as e:  # a graph onnxruntime cannot optimize still goes on as it was uploaded
        out.write_bytes(src.read_bytes())
        reason = without_paths(str(e).strip().splitlines()[0][:200]) if str(e).strip() else ""
        return {"changed": False, "quantized": None,
                "notes": [f"import normalization skipped: {type(e).__name__}: {reason}"]}


if __name__ == "__main__":  # python -m core.sandbox ... workers.graph.normalize SPEC.json (normalize)
    print(json.dumps(_main(json.loads(Path(sys.argv[1]).read_text()))))

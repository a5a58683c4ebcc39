"""quantize: onnxruntime's quantization tools (dynamic and static int8, int4 weight-only), fp16 / bf16
storage, and `auto`, which measures the int8 modes that apply and keeps the best one."""

from __future__ import annotations

import functools
import platform
import shutil
from pathlib import Path

import numpy as np
import onnx

from core.errors import ErrorCode, InvalidRecipe, without_paths
from core.report import Decision
from core.steps.quantize import QUANTIZED_OPS, Quantize, Smooth
from workers.engine.data import Split
from workers.graph import smooth as smoothing
from workers.graph.fusion import described, fuse_transformer
from workers.graph.normalize import default_opset, quantized_form
from workers.graph.onnx_graph import FLOAT_TYPES, Graph, gemm_as_matmul, matches, tidy_quantized
from workers.measure.loadcheck import loads
from workers.measure.sensitivity import fallback_layers, quality_goals
from workers.measure.variants import Trial, fidelities, latencies, latency_text, session, slowness
from workers.steps import implements
from workers.steps.context import ModelHandle, StepContext


def _excluded(path: Path, p: Quantize, extra_ops: tuple[str, ...] = ()) -> list[str]:
    model = onnx.load(str(path), load_external_data=False)
    return [n.name for n in model.graph.node
            if n.name and (matches(n.name, p.exclude) or n.op_type in extra_ops)]


def dynamic(src: Path, out: Path, p: Quantize, only: list[str] | None = None) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Conv is left out unless asked for: dynamic ConvInteger is several times slower than float on CPU.
    skip_conv = () if p.op_types and "Conv" in p.op_types else ("Conv",)
    excluded = _excluded(src, p, skip_conv)
    # DefaultTensorType: shape inference types no tensor after a fused onnxruntime operator; they are float
    options = {"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT}

    def run(model: Path, result: Path, per_channel: bool, nodes: list[str] | None, skip: list[str]) -> None:
        quantize_dynamic(model, result, op_types_to_quantize=p.op_types, per_channel=per_channel,
                         weight_type=QuantType.QInt8, nodes_to_exclude=skip, nodes_to_quantize=nodes,
                         extra_options=options)

    if p.channel_spread is None:
        run(src, out, p.per_channel, only, excluded)
        return out
    wide = [n for n, spread in channel_spreads(src).items()
            if spread > p.channel_spread and n not in excluded and (only is None or n in only)]
    rest = only is None or bool(set(only) - set(wide))
    if wide:  # those per channel first, then the others per tensor
        first = out.with_suffix(".wide.onnx") if rest else out
        run(src, first, True, wide, excluded)
        src = first
    if rest:
        run(src, out, False, only, excluded + wide)
    return out


def channel_spreads(path: Path) -> dict[str, float]:
    """For each MatMul layer with constant weights: how widely its output channels' ranges (the largest |w| of
    each) spread, largest / median. Where it is wide, one scale for the whole tensor flattens the small
    channels: in all-MiniLM-L6-v2 the feed-forward output layers spread 5-43x, the 30 other layers under 3.1x."""
    model = onnx.load(str(path))
    weights = {t.name: t for t in model.graph.initializer if len(t.dims) == 2 and t.data_type in FLOAT_TYPES}
    spreads = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name and node.input[1] in weights:
            ranges = np.abs(onnx.numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)).max(axis=0)
            median = float(np.median(ranges))
            spreads[node.name] = float(ranges.max()) / median if median > 0 else float("inf")
    return spreads


class _Calibration:
    """Feeds calibration samples to onnxruntime's calibrator, one at a time."""

    def __init__(self, samples: Split, count: int):
        self.rows = iter(range(min(count, len(samples))))
        self.samples = samples

    def get_next(self):
        i = next(self.rows, None)
        return None if i is None else self.samples.feed(slice(i, i + 1))

    def rewind(self):  # onnxruntime >= 1.17 may call this
        pass


@functools.cache
def saturating_int8() -> bool:
    """Whether this x86 CPU lacks VNNI (AVX-512 VNNI, AVX-VNNI, AMX): onnxruntime's 8-bit kernels then add
    uint8 x int8 products in pairs into int16 (vpmaddubsw), which saturates for large weights. Weights in 7
    bits (`reduce_range`) cannot saturate. On the digits CNN on such a CPU (AMD EPYC, AVX2), static int8
    agreed with fp32 on 99.78 % of the top-1 answers in 8 bits and on 100 % in 7 bits."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return not any(f in flags for f in (" avx512_vnni", " avx_vnni", " amx_int8"))


SEVEN_BITS = ("static int8 weights in 7 bits (reduce_range): this CPU has no VNNI, and onnxruntime's 8-bit "
              "kernels saturate on it")


def _seven_bits(ctx: StepContext) -> bool:
    if ctx.device != "cpu" or not saturating_int8():
        return False
    if SEVEN_BITS not in ctx.notes:
        ctx.notes.append(SEVEN_BITS)
    return True


def static(src: Path, out: Path, p: Quantize, ctx: StepContext, only: list[str] | None = None) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = ctx.path("static-prepared.onnx")
    try:  # shape inference and folding first, as onnxruntime advises for static quantization
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    except Exception:
        prepared = src
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[p.method]
    # QOperator with int8 activations has no fast CPU kernels: the digits CNN ran 7-19x slower than with uint8
    qoperator = p.quant_format == "qoperator"
    quantize_static(
        prepared, out, _Calibration(ctx.calibration, p.calibration_samples),
        quant_format=QuantFormat.QOperator if qoperator else QuantFormat.QDQ, op_types_to_quantize=p.op_types,
        per_channel=p.per_channel, activation_type=QuantType.QUInt8 if qoperator else QuantType.QInt8,
        weight_type=QuantType.QInt8, nodes_to_exclude=_excluded(prepared, p), nodes_to_quantize=only,
        calibrate_method=method, reduce_range=_seven_bits(ctx),
        extra_options={"CalibPercentile": p.percentile, "ActivationSymmetric": False,
                       "WeightSymmetric": True, "CalibTensorRangeSymmetric": False},
    )
    recurrent = _recurrent(out, p, only)
    if recurrent:
        _recurrent_int8(out, recurrent, p, ctx)
    return out


RECURRENT = ("LSTM",)  # recurrent layers onnxruntime quantizes; only dynamically (DynamicQuantizeLSTM)
RECURRENT_NOTE = ("static int8: LSTM layers take int8 weights with their activations quantized at run time "
                  "(onnxruntime has no static int8 LSTM)")


def _recurrent(path: Path, p: Quantize, only: list[str] | None) -> list[str]:
    """The LSTM layers static quantization left in float that the settings allow quantizing."""
    if p.op_types is not None and not set(RECURRENT) & set(p.op_types):
        return []
    model = onnx.load(str(path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in RECURRENT and n.name and not matches(n.name, p.exclude)
            and (only is None or n.name in only)]


def _recurrent_int8(path: Path, layers: list[str], p: Quantize, ctx: StepContext) -> None:
    """Static int8 leaves LSTMs in float, and in a CNN + LSTM recognizer they hold most of the weights: they
    take int8 weights here, in place (ddddocr's recognizer: 3.9x smaller, not 2.1x, and 3.5x faster, not 1.5x,
    with QOperator convolutions, at the same fidelity)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staged = path.with_suffix(".recurrent.onnx")
    quantize_dynamic(path, staged, op_types_to_quantize=list(RECURRENT), nodes_to_quantize=layers,
                     per_channel=p.per_channel, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    staged.replace(path)
    if RECURRENT_NOTE not in ctx.notes:
        ctx.notes.append(RECURRENT_NOTE)


def weight_only(src: Path, out: Path, p: Quantize, ctx: StepContext) -> Path:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    graph = Graph.load(src)
    gemm_as_matmul(graph)  # the int4 kernel is a MatMul: Linear layers exported as Gemm take it too
    model, ops, axes = graph.model, ("MatMul",), (("MatMul", 0),)
    tables = embedding_tables(graph) if p.embeddings else []
    if tables:
        try:  # onnxruntime's 4-bit Gather needs opset 21 and raises the opset without converting the graph
            model = onnx.version_converter.convert_version(model, INT4_GATHER_OPSET) \
                if 0 < default_opset(model) < INT4_GATHER_OPSET else model
            ops, axes = (*ops, "Gather"), (*axes, ("Gather", 1))
            ctx.notes.append(f"int4: {len(tables)} embedding tables in 4-bit blocks too (GatherBlockQuantized), "
                             f"{sum(tables.values()) / 1e6:.1f} M weights")
        except Exception as e:
            ctx.notes.append(f"int4: embedding tables kept in float: opset {default_opset(model)} could not be "
                             f"raised to {INT4_GATHER_OPSET} ({_reason(e)})")
    config = DefaultWeightOnlyQuantConfig(block_size=p.block_size, is_symmetric=p.symmetric,
                                          op_types_to_quantize=ops, quant_axes=axes)
    quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=_excluded(src, p), algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return out


INT4_GATHER_OPSET = 21
EMBEDDING_ROWS = 64  # a Gather from a constant float table of at least this many rows is an embedding


def embedding_tables(graph: Graph) -> dict[str, int]:
    """Gather node -> weights, for each lookup in a constant 2-D float table (token, position embeddings)."""
    found = {}
    for n in graph.g.node:
        table = graph.inits.get(n.input[0]) if n.op_type == "Gather" else None
        attrs = {a.name: a.i for a in n.attribute}
        if (table is not None and len(table.dims) == 2 and table.dims[0] >= EMBEDDING_ROWS
                and table.data_type == onnx.TensorProto.FLOAT and attrs.get("axis", 0) == 0):
            found[n.name or n.output[0]] = int(table.dims[0] * table.dims[1])
    return found



QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def float_storage(src: Path, out: Path, p: Quantize, ctx: StepContext) -> Path:
    if p.precision == "bf16":
        return half_weights(src, out, onnx.TensorProto.BFLOAT16)
    computed = fp16(src, out, p)
    if ctx.providers != ["CPUExecutionProvider"]:
        return computed
    stored = half_weights(src, ctx.path("fp16-stored.onnx"), onnx.TensorProto.FLOAT16)
    crash = loads(computed, ctx.providers)
    if crash:
        ctx.notes.append(f"fp16: weights stored in fp16 and computed in fp32: onnxruntime could not run the graph "
                         f"in fp16 on this target ({crash})")
        return Path(shutil.copyfile(stored, out))
    # a CPU without fp16 arithmetic runs many fp16 kernels slower than fp32 (EfficientNet-B0 here: 0.22x at
    # batch 1); weights stored in fp16 and cast back at load are as small and compute in fp32
    ctx.checkpoint("quantize float: timing fp16 compute against fp16 storage")
    times = latencies({"compute": computed, "storage": stored}, ctx)
    trials = {k: Trial(1.0, v) for k, v in times.items()}
    slow = slowness(trials)
    chosen = "compute" if slow["compute"] < slow["storage"] / TIE else "storage"
    ctx.decisions += [Decision(step="quantize", option=f"fp16 {k}", size_bytes=f.stat().st_size,
                               latency_ms={str(b): t for b, t in times[k].items()}, chosen=k == chosen,
                               why=("computed in fp16" if k == "compute" else "stored in fp16, computed in fp32")
                               + ("" if k == chosen else f": {slow[k] / slow[chosen]:.2f}x the other's time"))
                      for k, f in (("compute", computed), ("storage", stored))]
    if chosen == "storage":
        ctx.notes.append(f"fp16: weights stored in fp16 and computed in fp32 (onnxruntime folds the casts at load): "
                         f"fp16 arithmetic ran {slow['compute']:.2f}x slower on this target")
        return Path(shutil.copyfile(stored, out))
    return computed


def fp16(src: Path, out: Path, p: Quantize) -> Path:
    """fp16 weights and arithmetic where onnxruntime has fp16 kernels; recurrent layers, the default block list,
    and the integer parts of a graph already quantized stay in float32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    blocked = {n.op_type for n in model.graph.node if matches(n.name, p.exclude)}
    # recurrent layers stay in float32: onnxruntime's CPU provider has no float16 LSTM, GRU or RNN (a CRNN
    # text recognizer's probe crashed on them); so do the integer parts of a graph already quantized
    blocked |= set(DEFAULT_OP_BLOCK_LIST) | {"LSTM", "GRU", "RNN"} | QUANTIZED_OPS | QDQ_OPS
    onnx.save(convert_float_to_float16(model, keep_io_types=True, node_block_list=_excluded(src, p),
                                       op_block_list=sorted(blocked)), str(out))
    return out


FP16_MAX = 65504.0


def half_weights(src: Path, out: Path, dtype: int) -> Path:
    """Every float32 weight stored in 16 bits (bf16 or fp16) and cast back at load: half the file; onnxruntime
    folds the casts, so it computes in float32 on every execution provider."""
    graph = Graph.load(src)
    suffix = "_bf16" if dtype == onnx.TensorProto.BFLOAT16 else "_fp16"
    for t in list(graph.g.initializer):
        if t.data_type != onnx.TensorProto.FLOAT or int(np.prod(t.dims)) < 16:
            continue
        values = onnx.numpy_helper.to_array(t)
        if dtype == onnx.TensorProto.FLOAT16 and np.abs(values).max() > FP16_MAX:
            continue  # beyond fp16's range: left in float32
        stored = graph.add_initializer(t.name + suffix, values)
        bits = ((values.view(np.uint32) >> 16).astype(np.uint16) if dtype == onnx.TensorProto.BFLOAT16
                else values.astype(np.float16).view(np.uint16))
        graph.inits[stored].CopyFrom(onnx.helper.make_tensor(stored, dtype, values.shape, bits.tobytes(), raw=True))
        graph.g.node.insert(0, onnx.helper.make_node("Cast", [stored], [t.name], to=onnx.TensorProto.FLOAT,
                                                     name=f"{t.name}/from{suffix}"))
        graph.g.initializer.remove(t)
    graph.reindex()
    return graph.save(out)


@implements(Quantize)
def quantize(handle: ModelHandle, p: Quantize, ctx: StepContext) -> ModelHandle:
    src, out = handle.onnx_path, ctx.path("quantized.onnx")
    already = quantized_form(onnx.load(str(src), load_external_data=False))
    if already and p.mode != "float":
        ctx.notes.append(f"not quantized again: the model is already quantized ({already})")
        return ModelHandle(Path(shutil.copyfile(src, out)))
    if p.mode == "weight_only":
        return ModelHandle(weight_only(src, out, p, ctx))
    if p.mode == "float":
        return ModelHandle(float_storage(src, out, p, ctx))
    if p.mode == "static" and not ctx.from_dataset:
        raise InvalidRecipe("quantize mode static calibrates on the job's dataset: pass dataset_id",
                            code=ErrorCode.dataset_required)
    if p.smooth is not None and p.mode != "auto":
        src = smoothed(src, p, ctx) or src
    if p.mode == "auto":
        chosen = auto(src, p, ctx)
        if chosen is None:  # the float input was faster on the target than any int8 variant
            return ModelHandle(Path(shutil.copyfile(src, out)))
        out, p, src = chosen
    else:
        int8(src, out, p, ctx)
    if p.fallback and quality_goals(ctx):
        out = fallback(src, out, p, ctx)
    return ModelHandle(out)


def int8(src: Path, out: Path, p: Quantize, ctx: StepContext, only: list[str] | None = None) -> Path:
    """dynamic or static int8; `only`: quantize just these nodes (to measure one layer's sensitivity)."""
    if p.mode == "dynamic":
        dynamic(src, out, p, only)
    else:
        static(src, out, p, ctx, only)
    tidy_quantized(src, out)
    return out


TIE = 1.05  # within 5 % of the fastest at every batch size counts as equal (run-to-run noise): the smaller file wins
MIXED_SPREAD = 4.0  # auto's per-layer variant: per channel where channel ranges spread wider than this
FLOAT = "float (not quantized)"  # auto's label for the input model, timed with the variants (keep_float_if_faster)


def auto(src: Path, p: Quantize, ctx: StepContext) -> tuple[Path, Quantize, Path] | None:
    """Each int8 variant that applies (see _variants), its fidelity measured, then the latency on the target of
    those that hold min_fidelity (the others cannot be chosen): the fastest of them, the smaller file among
    equally fast ones; if none holds, the most faithful. With keep_float_if_faster, the input model is timed
    with them and None returned when it beats the chosen variant the same way. The figures go into the notes.
    Returns the chosen file, its settings and its source."""
    variants = _variants(src, p, ctx)
    built = {}
    for label, (variant, source) in variants.items():
        ctx.checkpoint(f"quantize auto: building {label}")
        try:
            built[label] = int8(source, ctx.path(f"auto-{label.replace(' ', '-')}.onnx"), variant, ctx)
        except Exception as e:  # onnxruntime's quantizer refusing one variant leaves the others
            ctx.notes.append(f"quantize auto: {label} could not be built ({_reason(e)})")
    if not built:
        raise InvalidRecipe("quantize auto: no int8 variant could be built: " + "; ".join(ctx.notes[-len(variants):]),
                            code=ErrorCode.step_not_applicable)
    ctx.checkpoint("quantize auto: measuring the int8 variants")
    built = runnable(built, ctx)
    fidelity = {**fidelities(src, built, ctx), FLOAT: 1.0}
    contenders = [v for v in built if fidelity[v] >= p.min_fidelity] or [max(built, key=fidelity.__getitem__)]
    files = {**built, FLOAT: src}
    timed = [*contenders, *([FLOAT] if p.keep_float_if_faster else [])]
    times = latencies({v: files[v] for v in timed}, ctx)
    results = {v: Trial(fidelity[v], times.get(v, {})) for v in [*built, *timed]}
    chosen = quickest(contenders, results, files)
    if p.keep_float_if_faster:
        chosen = quickest([chosen, FLOAT], results, files)
    figures = "; ".join(f"{v} fidelity {r.fidelity:.4f}, {latency_text(r)}, {files[v].stat().st_size} bytes"
                        for v, r in results.items())
    ctx.notes.append(f"quantize auto {'kept the float model' if chosen == FLOAT else 'chose ' + chosen}: {figures}")
    ctx.decisions += decisions(variants, results, files, chosen, p)
    return None if chosen == FLOAT else (built[chosen], *variants[chosen])


def decisions(variants: dict[str, tuple[Quantize, Path]], results: dict[str, Trial], files: dict[str, Path],
              chosen: str, p: Quantize) -> list[Decision]:
    """auto's comparison as data: every variant measured, its figures, and why it was or was not taken."""
    slow = slowness({v: r for v, r in results.items() if r.latency_ms}) if any(
        r.latency_ms for r in results.values()) else {}
    size = {v: files[v].stat().st_size for v in results}
    found = []
    for v, r in results.items():
        if v == chosen and v == FLOAT:
            why = "the float input ran faster than every int8 variant (keep_float_if_faster)"
        elif v == chosen and slow and slow[v] > min(slow.values()) * TIE:
            why = f"{slow[v]:.2f}x the fastest's time at its worst batch size, in at most half its file size"
        elif v == chosen:
            why = "the fastest that holds min_fidelity (the smallest and most faithful among equally fast ones)"
        elif r.fidelity < p.min_fidelity:
            why = f"fidelity {r.fidelity:.4f} below min_fidelity {p.min_fidelity}: not timed"
        elif not r.latency_ms:
            why = "not timed"
        elif chosen in slow and slow[v] > slow[chosen] * TIE:
            why = f"{slow[v] / slow[chosen]:.2f}x slower than {chosen} at its worst batch size"
        else:
            why = f"as fast as {chosen} (within {TIE - 1:.0%}), its file {size[v] / size[chosen]:.2f}x the size"
        settings = {} if v == FLOAT else variants[v][0].model_dump(
            include={"mode", "per_channel", "quant_format", "channel_spread", "smooth"})
        if v != FLOAT and v.startswith(("fused ", "smoothed ")):
            settings["graph"] = v.split(" ", 1)[0]
        found.append(Decision(step="quantize", option=v, settings=settings, size_bytes=size[v],
                              latency_ms={str(b): t for b, t in r.latency_ms.items()}, fidelity=r.fidelity,
                              chosen=v == chosen, why=why))
    return found


def runnable(built: dict[str, Path], ctx: StepContext) -> dict[str, Path]:
    """The variants onnxruntime can load on the target; the others are dropped with the reason in the notes
    (a per-channel QDQ graph at an opset below 13 is refused, for one)."""
    kept = {}
    for label, path in built.items():
        try:
            session(path, ctx)
            kept[label] = path
        except Exception as e:
            ctx.notes.append(f"quantize auto: {label} does not load ({_reason(e)})")
    if not kept:
        raise InvalidRecipe("quantize auto: no int8 variant loads on the target", code=ErrorCode.step_not_applicable)
    return kept


def _reason(e: Exception) -> str:
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return without_paths(f"{type(e).__name__}: {first}")


SAME_SIZE = 1.01  # files within 1 % of the smallest of the equally fast ones: the most faithful wins
WORTH = 1.10  # a file at most HALF the size is worth being this much slower than the fastest at any batch size
HALF = 0.5


def quickest(labels: list[str], results: dict[str, Trial], files: dict[str, Path]) -> str:
    """The fastest of `labels` at its worst batch size, the smallest file among those within TIE of it (the most
    faithful among files within SAME_SIZE of that one: SmoothQuant's scales cost some KB); but a
    file at most half that one's size within WORTH of the fastest wins (on a MobileNet, static int8 in 28 % of
    the bytes ran 1-6 % behind a dynamic variant that had quantized almost nothing)."""
    slow = slowness({v: results[v] for v in labels})
    size = {v: files[v].stat().st_size for v in labels}
    tied = [v for v in labels if slow[v] <= min(slow.values()) * TIE]
    smallest = min(size[v] for v in tied)
    near = [v for v in tied if size[v] <= smallest * SAME_SIZE]  # a few KB of scales buy no footprint
    best = max(near, key=lambda v: (results[v].fidelity, -size[v]))
    worth = [v for v in labels if slow[v] <= WORTH and size[v] <= size[best] * HALF]  # WORTH of the best everywhere
    return min(worth, key=lambda v: (size[v], -results[v].fidelity)) if worth else best


def _variants(src: Path, p: Quantize, ctx: StepContext) -> dict[str, tuple[Quantize, Path]]:
    """label -> (settings, source): dynamic int8, and static where there is a dataset (QDQ, and QOperator where
    the target is onnxruntime's CPU: as fast there, in a file 1 % smaller on the digits CNN); per channel, per
    tensor, and per channel only for the layers that need it. Where the model is a transformer encoder that
    onnxruntime can fuse, the dynamic ones also start from the fused graph (its layers quantize whole; which
    is faster depends on the target and its threads: on a 2-core CPU the two came out within a few % of each
    other at 2 threads, either way round, and the unfused one clearly ahead at 1)."""
    sources, fused = {"": src}, ctx.path("auto-fused.onnx")
    counts = fuse_transformer(src, fused)
    if counts:
        sources["fused "] = fused
        ctx.notes.append(f"quantize auto: transformer layers fused for the fused variants ({described(counts)})")
    smooth = smoothed(src, p, ctx, only_if_outliers=p.smooth is None)
    if smooth is not None:
        sources["smoothed "] = smooth
    static = (ctx.from_dataset or conv_heavy(src)) and _has_float_weights(src)
    if static and not ctx.from_dataset:
        ctx.notes.append(SYNTHETIC)
    scales = [True, False] if p.per_channel else [False]
    formats = ["qdq", "qoperator"] if ctx.providers == ["CPUExecutionProvider"] else ["qdq"]
    variants = {}
    for prefix, source in sources.items():
        for mode, form in [("dynamic", "qdq"), *([("static", f) for f in formats] if static and not prefix else [])]:
            for c in scales:
                label = f"{prefix}{mode} per-{'channel' if c else 'tensor'}{' qoperator' if form != 'qdq' else ''}"
                variants[label] = (p.model_copy(update={"mode": mode, "per_channel": c, "quant_format": form}), source)
        spreads = channel_spreads(source).values() if p.per_channel else []
        if 0 < sum(s > MIXED_SPREAD for s in spreads) < len(spreads):  # some layers need per channel, not all
            variants[f"{prefix}dynamic per-layer"] = (p.model_copy(update={
                "mode": "dynamic", "per_channel": True, "channel_spread": MIXED_SPREAD}), source)
    return variants


ALPHAS = (0.5, 0.65, 0.8)  # SmoothQuant strengths tried when none is given
OUTLIERS = 8.0  # auto smooths unasked where a MatMul input's widest channel spans this many median channels
SAME = 0.99999  # the smoothed float graph must agree with its source this closely (worst sample's cosine)


def smoothed(src: Path, p: Quantize, ctx: StepContext, only_if_outliers: bool = False) -> Path | None:
    """The graph with SmoothQuant applied (workers/graph/smooth.py), its alpha given or chosen by the fidelity of
    dynamic int8 on it; None where there is nothing to smooth, no outlier worth it (only_if_outliers), or the
    smoothed graph does not compute the same. The notes say which and why."""
    graph = Graph.load(src)
    found = smoothing.groups(graph)
    if not found:
        if not only_if_outliers:
            ctx.notes.append("SmoothQuant: no MatMul with a constant weight to smooth")
        return None
    settings = p.smooth or Smooth()
    samples = ctx.calibration.head(settings.calibration_samples)
    ranges = smoothing.channel_ranges(src, [g.tensor for g in found], samples, ctx.providers)
    worst = max(smoothing.outlier_ratio(r) for r in ranges.values())
    if only_if_outliers and worst < OUTLIERS:
        return None
    alphas = [settings.alpha] if settings.alpha else list(ALPHAS)
    tried: dict[float, tuple[smoothing.Smoothed, float | None]] = {}
    for alpha in alphas:
        ctx.checkpoint(f"quantize: SmoothQuant alpha {alpha}")
        result = smoothing.smooth(src, ctx.path(f"smoothed-{alpha}.onnx"), ranges, alpha)
        agreement = smoothing.outputs_agree(src, result.path, ctx.samples.head(16), ctx.providers)
        if agreement < SAME:
            ctx.notes.append(f"SmoothQuant alpha {alpha} dropped: the float graph changed (cosine {agreement:.6f})")
            continue
        fidelity = None
        if len(alphas) > 1:
            trial = p.model_copy(update={"mode": "dynamic", "channel_spread": None, "smooth": None})
            quantized = dynamic(result.path, ctx.path(f"smoothed-{alpha}-int8.onnx"), trial)
            fidelity = fidelities(src, {"q": quantized}, ctx)["q"]
        tried[alpha] = (result, fidelity)
    if not tried:
        return None
    alpha = max(tried, key=lambda a: tried[a][1] or 0)
    result = tried[alpha][0]
    chosen = "" if len(alphas) == 1 else " (chosen by dynamic int8 fidelity: " + ", ".join(
        f"{a} {f:.4f}" for a, (_, f) in tried.items()) + ")"
    where = "" if ctx.from_dataset else "; activation ranges from generated inputs (upload a dataset for real ones)"
    ctx.notes.append(f"{result.summary()}{chosen}{where}")
    return result.path


SYNTHETIC = ("static int8 calibrated on synthetic inputs (data.generated); upload a dataset for faithful "
             "activation ranges")
CONV_SHARE = 0.5  # a graph whose weights lie mostly in Conv layers: only static int8 makes it faster on a CPU


def conv_heavy(path: Path) -> bool:
    """Whether the graph is mostly convolutions: more Conv layers than MatMul and Gemm ones, or most of its
    weights in Conv layers."""
    model = onnx.load(str(path), load_external_data=False)
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type in FLOAT_TYPES}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1]
    dense = sum(1 for n in model.graph.node if n.op_type in ("MatMul", "Gemm"))
    weights = sum(sizes.get(n.input[1], 0) for n in convs)
    return len(convs) > dense or weights > CONV_SHARE * max(1, sum(sizes.values()))


def _has_float_weights(path: Path) -> bool:
    model = onnx.load(str(path), load_external_data=False)
    return any(t.data_type in FLOAT_TYPES and len(t.dims) >= 2 for t in model.graph.initializer)


def fallback(src: Path, quantized: Path, p: Quantize, ctx: StepContext) -> Path:
    """Accuracy-aware fallback: when the int8 model misses the recipe's quality goals, the layers whose
    quantization hurts most stay in float, as few as it takes."""
    int8_ops = ("MatMul", "Gemm", "Attention", "Gather") if p.mode == "dynamic" else ("MatMul", "Gemm", "Conv")
    if p.mode == "dynamic" and p.op_types and "Conv" in p.op_types:
        int8_ops += ("Conv",)
    model = onnx.load(str(src), load_external_data=False)
    layers = [n.name for n in model.graph.node if n.name and n.op_type in int8_ops and not matches(n.name, p.exclude)]

    def build(keep_float: list[str], tag: str) -> Path:
        return int8(src, ctx.path(f"fallback-{tag}.onnx"), p.model_copy(update={"exclude": [*p.exclude, *keep_float]}),
                    ctx)

    def alone(layer: str) -> Path:
        return int8(src, ctx.path("fallback-alone.onnx"), p, ctx, only=[layer])

    return fallback_layers(src, quantized, layers, build, alone, ctx)

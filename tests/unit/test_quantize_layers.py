"""Per-layer scale granularity for dynamic int8 (per channel only where the channels' ranges spread), and how
`auto` chooses between its variants and the float model."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from core.steps.quantize import Quantize
from workers.steps.quantize import channel_spreads, dynamic


def _two_layers(path):
    """x -> `uneven` (one output channel 40x the others) -> Relu -> `even` -> y."""
    rng = np.random.default_rng(0)
    uneven = rng.normal(size=(32, 32)).astype(np.float32)
    uneven[:, 0] *= 40
    even = rng.normal(size=(32, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="uneven"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="even")],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8])],
        [numpy_helper.from_array(uneven, "w1"), numpy_helper.from_array(even, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _scale_shapes(path) -> dict[str, list[int]]:
    """Each weight's scale tensor's shape: [] for one scale per tensor, [channels] for one per channel."""
    model = onnx.load(str(path))
    return {t.name.split("_scale")[0]: list(t.dims) for t in model.graph.initializer
            if t.name.startswith("w") and t.name.endswith("_scale")}


def test_spreads_find_the_uneven_layer(tmp_path):
    _two_layers(tmp_path / "m.onnx")
    spreads = channel_spreads(tmp_path / "m.onnx")
    assert spreads["uneven"] > 10 > 4 > spreads["even"]


def test_per_layer_scales_where_the_spread_asks_for_them(tmp_path):
    src = tmp_path / "m.onnx"
    _two_layers(src)
    outputs = {}
    for label, p in {"per-channel": Quantize(mode="dynamic"), "per-tensor": Quantize(mode="dynamic", per_channel=False),
                     "per-layer": Quantize(mode="dynamic", channel_spread=4)}.items():
        dynamic(src, tmp_path / f"{label}.onnx", p)
        outputs[label] = tmp_path / f"{label}.onnx"
    assert _scale_shapes(outputs["per-layer"]) == {"w1": [32], "w2": []}
    assert _scale_shapes(outputs["per-channel"]) == {"w1": [32], "w2": [8]}
    assert _scale_shapes(outputs["per-tensor"]) == {"w1": [], "w2": []}

    x = {"x": np.random.default_rng(1).normal(size=(64, 32)).astype(np.float32)}
    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0]

    y = {k: run(v) for k, v in outputs.items()}
    y["float"] = run(src)
    error = {k: float(np.abs(v - y["float"]).mean()) for k, v in y.items() if k != "float"}
    assert error["per-layer"] < 0.7 * error["per-tensor"]  # the uneven layer's small channels kept their detail


def test_a_layer_asked_for_alone_keeps_its_granularity(tmp_path):
    src = tmp_path / "m.onnx"
    _two_layers(src)
    p = Quantize(mode="dynamic", channel_spread=4)
    assert _scale_shapes(dynamic(src, tmp_path / "a.onnx", p, only=["uneven"])) == {"w1": [32]}
    assert _scale_shapes(dynamic(src, tmp_path / "b.onnx", p, only=["even"])) == {"w2": []}
    assert src.exists()


def test_channel_spread_is_for_dynamic_per_channel_only():
    with pytest.raises(ValidationError, match="channel_spread"):
        Quantize(mode="static", channel_spread=4)
    with pytest.raises(ValidationError, match="channel_spread"):
        Quantize(mode="dynamic", per_channel=False, channel_spread=4)


def test_a_variant_is_as_slow_as_it_is_at_its_worst_batch_size():
    from workers.measure.variants import Trial, slowness

    trials = {"fast at 1": Trial(1.0, {1: 10.0, 32: 130.0}), "fast at 32": Trial(1.0, {1: 11.0, 32: 100.0}),
              "even": Trial(1.0, {1: 10.2, 32: 102.0})}
    slow = slowness(trials)
    assert slow == pytest.approx({"fast at 1": 1.3, "fast at 32": 1.1, "even": 1.02})
    assert min(slow, key=slow.get) == "even"


def test_the_float_model_is_kept_only_when_int8_is_clearly_slower(tmp_path):
    from workers.measure.variants import Trial
    from workers.steps.quantize import FLOAT, quickest

    files = {FLOAT: tmp_path / "float.onnx", "int8": tmp_path / "int8.onnx"}
    files[FLOAT].write_bytes(b"f" * 4000)
    files["int8"].write_bytes(b"i" * 1000)

    def kept(float_ms: dict, int8_ms: dict) -> str:
        return quickest(["int8", FLOAT], {FLOAT: Trial(1.0, float_ms), "int8": Trial(0.995, int8_ms)}, files)

    assert kept({1: 10.0, 32: 100.0}, {1: 12.0, 32: 90.0}) == FLOAT  # 20 % behind at batch 1
    assert kept({1: 10.0, 32: 100.0}, {1: 10.3, 32: 101.0}) == "int8"  # a tie: the smaller file
    assert kept({1: 10.0, 32: 100.0}, {1: 11.0, 32: 60.0}) == "int8"  # float is 1.67x behind at batch 32
    with pytest.raises(ValidationError, match="keep_float_if_faster"):
        Quantize(mode="dynamic", keep_float_if_faster=True)


def test_a_file_half_the_size_is_worth_a_few_percent_of_speed(tmp_path):
    """Static int8 in 28 % of the bytes, 6 % behind a dynamic variant that quantized almost nothing: the small
    file wins; 15 % behind, the fast one does."""
    from workers.measure.variants import Trial
    from workers.steps.quantize import quickest

    files = {"dynamic": tmp_path / "d.onnx", "static": tmp_path / "s.onnx"}
    files["dynamic"].write_bytes(b"d" * 1000)
    files["static"].write_bytes(b"s" * 280)

    def chosen(static_ms: float) -> str:
        trials = {"dynamic": Trial(1.0, {1: 10.0}), "static": Trial(0.997, {1: static_ms})}
        return quickest(["dynamic", "static"], trials, files)

    assert chosen(10.6) == "static" and chosen(11.5) == "dynamic"


def _auto(tmp_path, **params):
    """The two-layer model quantized by `auto` with `params`: (input, output, notes)."""
    src, out, ctx = _auto_context(tmp_path, **params)
    return src, out, ctx.notes


def _auto_context(tmp_path, **params):
    """The two-layer model quantized by `auto` with `params`: (input, output, the step's context)."""
    from core.assets import TensorSpec
    from core.recipe import Recipe
    from core.settings import Settings
    from workers.engine.data import job_data
    from workers.steps import apply_step
    from workers.steps.context import ModelHandle, StepContext

    src = tmp_path / "m.onnx"
    _two_layers(src)
    specs = [TensorSpec(name="x", dtype="float32", shape=["batch", 32])]
    data = job_data(None, specs, Recipe.model_validate({"steps": [{"quantize": {}}]}))
    data.train.inputs["x"] = data.eval.inputs["x"] = np.random.default_rng(1).normal(size=(64, 32)).astype(np.float32)
    ctx = StepContext(workdir=tmp_path / "work", settings=Settings(), inputs=specs, data=data, batch_sizes=[1, 8])
    return src, apply_step(ModelHandle(src), Quantize(mode="auto", **params), ctx).onnx_path, ctx


def test_auto_times_only_the_variants_that_hold_min_fidelity(tmp_path):
    _, _, notes = _auto(tmp_path, min_fidelity=1.0)  # no int8 variant is exactly faithful: the most faithful is timed
    variants = next(n for n in notes if n.startswith("quantize auto chose")).split(": ", 1)[1].split("; ")
    timed = [v for v in variants if "ms at batch 1" in v]
    assert len(variants) >= 3 and len(timed) == 1
    assert all("not timed" in v for v in variants if v not in timed)
    fidelity = {v: float(v.split("fidelity ")[1].split(",")[0]) for v in variants}
    assert fidelity[timed[0]] == max(fidelity.values())


def test_quant_format_is_for_static_only():
    assert Quantize(mode="static", quant_format="qoperator").quant_format == "qoperator"
    for mode in ("dynamic", "auto"):
        with pytest.raises(ValidationError, match="quant_format"):
            Quantize(mode=mode, quant_format="qoperator")


def test_auto_times_the_float_model_with_the_variants_and_says_which_it_kept(tmp_path):
    src, out, notes = _auto(tmp_path, keep_float_if_faster=True)
    note = next(n for n in notes if n.startswith("quantize auto"))
    assert "float (not quantized) fidelity 1.0000" in note and "dynamic per-tensor fidelity" in note
    assert "at batch 8" in note
    kept_float = note.startswith("quantize auto kept the float model")
    assert (out.read_bytes() == src.read_bytes()) == kept_float
    assert kept_float or any(n.op_type == "MatMulInteger" for n in onnx.load(str(out)).graph.node)


def test_a_variant_onnxruntime_refuses_is_dropped_with_its_reason(tmp_path):
    """One int8 variant that does not load (a per-channel QDQ graph at an opset below 13 did not) leaves the
    others to choose from, and the notes say why it went; none loading is the step's error, not the job's crash."""
    from core.errors import InvalidRecipe
    from core.settings import Settings
    from workers.engine.data import JobData, Split
    from workers.steps.context import StepContext
    from workers.steps.quantize import runnable

    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    _two_layers(good)
    bad.write_bytes(b"not a graph")
    split = Split({"x": np.zeros((4, 32), np.float32)})
    ctx = StepContext(workdir=tmp_path, settings=Settings(), inputs=[], data=JobData(split, split, False))
    assert runnable({"good": good, "bad": bad}, ctx) == {"good": good}
    assert any(n.startswith("quantize auto: bad does not load") for n in ctx.notes)
    with pytest.raises(InvalidRecipe, match="no int8 variant loads"):
        runnable({"bad": bad}, ctx)


def test_static_int8_quantizes_lstm_weights_too(tmp_path):
    """onnxruntime's static quantization leaves LSTMs in float; in a CNN + LSTM recognizer they hold most of the
    weights, so static int8 gives them int8 weights (dynamically quantized activations) and says so, in both
    formats, and the result still computes nearly the same."""
    from core.settings import Settings
    from tests import graphs
    from workers.engine.data import JobData, Split
    from workers.steps.context import StepContext
    from workers.steps.quantize import RECURRENT_NOTE, static

    src = graphs.conv_lstm(tmp_path / "crnn.onnx")
    x = np.random.default_rng(0).normal(size=(16, 1, 8, 12)).astype(np.float32)
    split = Split({"x": x})
    ctx = StepContext(workdir=tmp_path / "work", settings=Settings(), inputs=[], data=JobData(split, split, True))
    reference = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0].ravel()
    for form in ("qdq", "qoperator"):
        out = static(src, tmp_path / f"{form}.onnx", Quantize(mode="static", quant_format=form), ctx)
        ops = {n.op_type for n in onnx.load(str(out)).graph.node}
        assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
        assert ops & {"QLinearConv", "QuantizeLinear"}
        assert out.stat().st_size < 0.5 * src.stat().st_size  # LSTM in float: over 0.9
        y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0].ravel()
        assert y @ reference / np.linalg.norm(y) / np.linalg.norm(reference) > 0.98
    assert RECURRENT_NOTE in ctx.notes
    kept = static(src, tmp_path / "kept.onnx", Quantize(mode="static", exclude=["lstm"]), ctx)
    assert "LSTM" in {n.op_type for n in onnx.load(str(kept)).graph.node}


def test_int4_stores_embedding_tables_in_four_bits_too(tmp_path):
    """A token embedding (Gather from a 1000 x 64 table) into a MatMul: weight-only int4 quantizes both, raising
    the opset to 21 as onnxruntime's 4-bit Gather needs; with embeddings off the table stays float."""
    from onnx import TensorProto, helper, numpy_helper

    from core.settings import Settings
    from workers.engine.data import JobData, Split
    from workers.steps.context import StepContext
    from workers.steps.quantize import weight_only

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
         helper.make_node("ReduceL2", ["e"], ["n"], axes=[2], keepdims=1, name="norm"),  # axes: an attribute at 17
         helper.make_node("Div", ["e", "n"], ["u"], name="unit"),
         helper.make_node("MatMul", ["u", "w"], ["y"], name="head")],
        "emb", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8, 64])],
        [numpy_helper.from_array(rng.normal(size=(1000, 64)).astype(np.float32), "table"),
         numpy_helper.from_array(rng.normal(size=(64, 64)).astype(np.float32), "w")])
    src = tmp_path / "emb.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    split = Split({"ids": rng.integers(0, 1000, (4, 8))})
    ctx = StepContext(workdir=tmp_path / "w", settings=Settings(), inputs=[], data=JobData(split, split, False))
    both = weight_only(src, tmp_path / "both.onnx", Quantize(mode="weight_only"), ctx)
    only = weight_only(src, tmp_path / "only.onnx", Quantize(mode="weight_only", embeddings=False), ctx)
    ops = {n.op_type for n in onnx.load(str(both)).graph.node}
    assert {"GatherBlockQuantized", "MatMulNBits"} <= ops
    assert "GatherBlockQuantized" not in {n.op_type for n in onnx.load(str(only)).graph.node}
    assert both.stat().st_size < 0.3 * only.stat().st_size
    assert any(n.startswith("int4: 1 embedding tables in 4-bit blocks") for n in ctx.notes)
    feed = {"ids": split.inputs["ids"]}
    y, ref = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0] for p in (both, src))
    assert float((y * ref).sum() / np.linalg.norm(y) / np.linalg.norm(ref)) > 0.95
    with pytest.raises(ValidationError, match="embeddings"):
        Quantize(mode="dynamic", embeddings=False)



def test_auto_records_every_variant_it_weighed_as_data(tmp_path):
    """quantize auto's comparison is structured: one decision per variant (and the float input when it was timed),
    with its figures, exactly one chosen, and a reason on each."""
    ctx = _auto_context(tmp_path, keep_float_if_faster=True)[2]
    found = {d.option: d for d in ctx.decisions}
    assert {"dynamic per-channel", "dynamic per-tensor", "float (not quantized)"} <= set(found)
    assert sum(d.chosen for d in found.values()) == 1
    assert all(d.why and d.step == "quantize" and d.size_bytes for d in found.values())
    timed = [d for d in found.values() if d.latency_ms]
    assert timed and all(set(d.latency_ms) == {"1", "8"} for d in timed)
    assert found["dynamic per-tensor"].settings["per_channel"] is False


def test_fp16_on_a_cpu_weighs_fp16_arithmetic_against_fp16_storage(tmp_path):
    """fp16 on a CPU target: the fp16-compute graph (after a load check in a child process) is timed against
    weights stored in fp16 and computed in fp32; either way the file is about half and computes the same."""
    from core.settings import Settings
    from workers.engine.data import JobData, Split
    from workers.steps import apply_step
    from workers.steps.context import ModelHandle, StepContext

    src = tmp_path / "m.onnx"
    _two_layers(src)
    x = np.random.default_rng(1).normal(size=(16, 32)).astype(np.float32)
    split = Split({"x": x})
    ctx = StepContext(workdir=tmp_path / "w", settings=Settings(), inputs=[], data=JobData(split, split, False),
                      batch_sizes=[1, 8])
    out = apply_step(ModelHandle(src), Quantize(mode="float", dtype="fp16"), ctx).onnx_path
    weighed = {d.option: d for d in ctx.decisions}
    assert set(weighed) == {"fp16 compute", "fp16 storage"} and sum(d.chosen for d in weighed.values()) == 1
    assert all(set(d.latency_ms) == {"1", "8"} for d in weighed.values())
    assert out.stat().st_size < 0.6 * src.stat().st_size
    y, ref = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
              for p in (out, src))
    np.testing.assert_allclose(y, ref, rtol=2e-2, atol=2e-2 * np.abs(ref).max())
    if weighed["fp16 storage"].chosen:
        assert any("computed in fp32" in n for n in ctx.notes)

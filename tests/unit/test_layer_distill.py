"""Where a transformer's layers are, read from its graph, and how a shallower student's layers pair with the
teacher's (workers/training/layers.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from workers.training.layers import LayerMatch, match, transformer_layers


def _encoder(layers: int, pre_norm: bool = False) -> onnx.ModelProto:
    """A chain shaped like an encoder: embeddings' LayerNorm, then per layer Softmax (attention), LayerNorm,
    LayerNorm (post-norm); pre-norm puts a LayerNorm before each Softmax and one at the end instead."""
    nodes, x, k = [], "x", 0

    def norm():
        nonlocal x, k
        nodes.append(helper.make_node("LayerNormalization", [x, "g", "b"], [f"n{k}"], axis=-1))
        x, k = f"n{k}", k + 1

    def softmax(i):
        nonlocal x
        nodes.append(helper.make_node("Softmax", [x], [f"a{i}"], axis=-1))
        x = f"a{i}"

    if not pre_norm:
        norm()
    for i in range(layers):
        if pre_norm:
            norm()
            softmax(i)
            norm()
        else:
            softmax(i)
            norm()
            norm()
    if pre_norm:
        norm()
    inits = [numpy_helper.from_array(np.ones(4, np.float32), "g"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    graph = helper.make_graph(nodes, "enc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [2, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_post_norm_layers_are_the_blocks_last_layernorm():
    found = transformer_layers(_encoder(3))
    assert found.attention == ["a0", "a1", "a2"]
    assert found.hidden == ["n0", "n2", "n4", "n6"]  # embeddings, then each layer's second LayerNorm


def test_pre_norm_layers_are_the_next_blocks_input_and_the_final_norm():
    found = transformer_layers(_encoder(2, pre_norm=True))
    assert found.hidden == ["n0", "n2", "n4"]


def test_a_half_depth_student_stands_for_every_second_teacher_layer():
    pairs = match(_encoder(3), _encoder(6), attention=True, weight=1.0)
    assert isinstance(pairs, LayerMatch)
    teacher = transformer_layers(_encoder(6))
    assert [t for _, t in pairs.hidden] == [teacher.hidden[m] for m in (0, 2, 4, 6)]
    assert [t for _, t in pairs.attention] == ["a1", "a3", "a5"]
    assert isinstance(match(_encoder(6), _encoder(3), True, 1.0), str)  # a deeper student is refused, said why


def test_the_layer_loss_is_zero_on_equal_tensors_and_grows_apart():
    pairs = LayerMatch([("s", "t")], [("sa", "ta")], weight=2.0)
    h, p = torch.randn(2, 5, 8), torch.softmax(torch.randn(2, 3, 5, 5), -1)
    assert float(pairs.loss({"s": h, "sa": p}, {"t": h, "ta": p})) < 1e-6
    apart = pairs.loss({"s": h + 1, "sa": torch.softmax(torch.randn(2, 3, 5, 5), -1)}, {"t": h, "ta": p})
    assert float(apart) > 0.1


def test_distill_matches_a_shallower_students_layers_and_says_so(tmp_path):
    """distill with layers=hidden+attention on a 3-layer student of a 6-layer teacher trains with the layer
    losses and says which it matched; a student the graph cannot read is refused with the step's error."""
    from core.errors import InvalidRecipe
    from core.settings import Settings
    from core.steps.distill import Distill
    from workers.engine.data import JobData, Split
    from workers.steps import apply_step
    from workers.steps.context import ModelHandle, StepContext

    student, teacher = tmp_path / "s.onnx", tmp_path / "t.onnx"
    for path, depth in ((student, 3), (teacher, 6)):
        model = _encoder(depth)
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
        model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
        onnx.save(model, str(path))
    split = Split({"x": np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)})
    ctx = StepContext(workdir=tmp_path / "w", settings=Settings(), inputs=[], data=JobData(split, split, True),
                      teachers={"baseline": teacher})
    step = Distill(epochs=1, batch_size=8, layers="hidden+attention")
    out = apply_step(ModelHandle(student), step, ctx).onnx_path
    assert out.exists()
    assert "distill: 4 hidden states and 3 attention maps matched layer by layer (weight 1.0)" in ctx.notes
    plain = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "plain",
        [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])]),
        opset_imports=[onnx.helper.make_opsetid("", 17)]), str(plain))
    with pytest.raises(InvalidRecipe, match="not a transformer"):
        apply_step(ModelHandle(plain), step, ctx)

"""Transformer fusion on a small BERT encoder exported as torch exports one, heads pruned unevenly."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from workers.graph.fusion import fuse_transformer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _bert(path, attention: str, keep_heads: list[list[int]] | None = None):
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64,
                                     attn_implementation=attention)
    torch.manual_seed(0)
    encoder = transformers.BertModel(config).eval()
    with torch.no_grad():  # trained-like weights: no all-zero biases for the exporter to merge
        for param in encoder.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    for layer, keep in zip(encoder.encoder.layer, keep_heads or [], strict=False):
        _keep_heads(layer.attention, keep)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        torch.onnx.export(Encoder(), (ids, torch.ones_like(ids)), str(path), dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"],
                          dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}})
    return path


def _keep_heads(attention, keep: list[int]) -> None:
    """Removes the other heads of a BertAttention, as head pruning leaves it."""
    self_att, d = attention.self, attention.self.attention_head_size
    index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep])
    for name in ("query", "key", "value"):
        old = getattr(self_att, name)
        new = torch.nn.Linear(old.in_features, len(index))
        new.weight.data, new.bias.data = old.weight.data[index], old.bias.data[index]
        setattr(self_att, name, new)
    old = attention.output.dense
    new = torch.nn.Linear(len(index), old.out_features)
    new.weight.data, new.bias.data = old.weight.data[:, index], old.bias.data
    attention.output.dense = new
    self_att.num_attention_heads, self_att.all_head_size = len(keep), len(index)


def _run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["hidden"], feed)[0]


def test_layers_with_different_head_counts_fuse_into_attention_that_computes_the_same(tmp_path):
    src = _bert(tmp_path / "bert.onnx", "eager", keep_heads=[[0, 2, 3], [1, 3]])  # 3 heads, then 2
    counts = fuse_transformer(src, tmp_path / "fused.onnx")
    assert counts == {"Attention": 2, "SkipLayerNormalization": 4, "BiasGelu": 2, "EmbedLayerNormalization": 1}
    heads = [a.i for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node if n.op_type == "Attention"
             for a in n.attribute if a.name == "num_heads"]
    assert heads == [3, 2]
    rng = np.random.default_rng(0)
    mask = np.ones((3, 24), np.int64)
    mask[1, 20:] = 0  # padding in one sequence
    feed = {"input_ids": rng.integers(0, 100, (3, 24)), "attention_mask": mask}
    np.testing.assert_allclose(_run(tmp_path / "fused.onnx", feed), _run(src, feed), atol=2e-4)


def test_graphs_without_a_recognised_encoder_are_left_alone(tmp_path):
    src = _bert(tmp_path / "sdpa.onnx", "sdpa")  # its masking pattern is not the one the optimizer knows
    assert fuse_transformer(src, tmp_path / "fused.onnx") is None
    assert not (tmp_path / "fused.onnx").exists()

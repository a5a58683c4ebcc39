"""Microsoft Olive's documented int8 flow for an ONNX model on CPU: a workflow with the `OnnxQuantization` pass
at its defaults (quant_mode static, QDQ, int8 weights and activations, per-tensor, MinMax, quantization
pre-processing on), calibrated on the given samples through a registered dataset, run on the local CPU system.

    python olive_int8.py MODEL CALIBRATION OUTPUT

This file is also the workflow's user_script: importing it registers the calibration dataset.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from calibration import command_line, count, load, save_single_file
from olive.data.registry import Registry


@Registry.register_dataset()
def pareto_calibration(path: str):
    """The calibration samples as a torch-style dataset of (inputs, label); Olive's loader adds the batch axis."""
    samples = load(path)

    class Samples:
        def __len__(self):
            return count(samples)

        def __getitem__(self, i):
            return {name: values[i] for name, values in samples.items()}, 0

    return Samples()


def workflow(model: str, calibration: str, out_dir: str) -> dict:
    cpu = {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}
    return {
        "input_model": {"type": "ONNXModel", "model_path": str(Path(model).resolve())},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [cpu]}},
        "data_configs": [{
            "name": "calibration", "user_script": str(Path(__file__).resolve()),
            "script_dir": str(Path(__file__).resolve().parent),
            "load_dataset_config": {"type": "pareto_calibration", "params": {"path": str(Path(calibration).resolve())}},
        }],
        "passes": {"quantization": {"type": "OnnxQuantization", "data_config": "calibration"}},
        "host": "local_system", "target": "local_system", "output_dir": out_dir,
    }


def main() -> None:
    import olive

    args = command_line(__doc__)
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    with tempfile.TemporaryDirectory(prefix="olive-") as work:
        config = Path(work) / "workflow.json"
        config.write_text(json.dumps(workflow(args.model, args.calibration, str(Path(work) / "out"))))
        result = olive.run(str(config))
        best = result.get_best_candidate() if result else None
        if best is None or not best.model_path:
            raise SystemExit("olive produced no output model")
        path = Path(best.model_path)
        save_single_file(path if path.suffix == ".onnx" else next(path.glob("*.onnx")), args.output)
    print(f"olive-ai {olive.__version__}: OnnxQuantization pass with defaults")


if __name__ == "__main__":
    main()

"""OpenVINO NNCF's documented default post-training int8 flow for an ONNX model:
`nncf.quantize(onnx_model, nncf.Dataset(samples))` with every option at its default (preset performance,
subset_size 300, fast bias correction, no model_type), saved as ONNX (QDQ) for onnxruntime.

    python nncf_int8.py MODEL CALIBRATION OUTPUT
"""

from __future__ import annotations

import nncf
import onnx
from calibration import command_line, load, one_at_a_time, save_single_file


def main() -> None:
    args = command_line(__doc__)
    model = onnx.load(args.model)
    dataset = nncf.Dataset(list(one_at_a_time(load(args.calibration))))
    quantized = nncf.quantize(model, dataset)
    save_single_file(quantized, args.output)
    print(f"nncf {nncf.__version__}: nncf.quantize(model, nncf.Dataset(...)) with defaults")


if __name__ == "__main__":
    main()

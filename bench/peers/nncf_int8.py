"""OpenVINO NNCF's documented default post-training int8 flow for an ONNX model:
`nncf.quantize(onnx_model, nncf.Dataset(samples))` with every option at its default (preset performance,
subset_size 300, fast bias correction, no model_type), saved as ONNX (QDQ) for onnxruntime.
`--model-type transformer` adds the one option NNCF documents for transformer models
(`model_type=nncf.ModelType.TRANSFORMER`, which also makes the preset mixed).

    python nncf_int8.py MODEL CALIBRATION OUTPUT [--model-type default|transformer]
"""

from __future__ import annotations

import nncf
import onnx
from calibration import command_line, load, one_at_a_time, save_single_file


def main() -> None:
    args = command_line(__doc__, {"--model-type": ("default", "transformer")})
    model = onnx.load(args.model)
    dataset = nncf.Dataset(list(one_at_a_time(load(args.calibration))))
    if args.model_type == "transformer":
        quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER)
    else:
        quantized = nncf.quantize(model, dataset)
    save_single_file(quantized, args.output)
    print(f"nncf {nncf.__version__}: nncf.quantize(model, nncf.Dataset(...)), model_type {args.model_type}")


if __name__ == "__main__":
    main()

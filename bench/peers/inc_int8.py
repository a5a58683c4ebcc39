"""Intel Neural Compressor's documented default post-training int8 quantization for an ONNX model
(onnxruntime backend, the 2.x API that its last ONNX-capable release, 3.7.1, still ships):
`quantization.fit(model, PostTrainingQuantConfig(), calib_dataloader=...)` — static, its default quant_format
(QOperator) and calibration sampling size (100), no evaluation function, hence no accuracy tuning.

    python inc_int8.py MODEL CALIBRATION OUTPUT
"""

from __future__ import annotations

from calibration import command_line, load, one_at_a_time, save_single_file
from neural_compressor import PostTrainingQuantConfig, quantization
from neural_compressor.version import __version__


class CalibrationLoader:
    """What INC iterates over: (inputs, label) batches, with a batch_size attribute."""

    batch_size = 1

    def __init__(self, path: str):
        self.samples = load(path)

    def __iter__(self):
        for feed in one_at_a_time(self.samples):
            yield feed, 0


def main() -> None:
    args = command_line(__doc__)
    quantized = quantization.fit(model=args.model, conf=PostTrainingQuantConfig(),
                                 calib_dataloader=CalibrationLoader(args.calibration))
    if quantized is None:
        raise SystemExit("neural-compressor returned no quantized model")
    save_single_file(quantized.model, args.output)
    print(f"neural-compressor {__version__}: quantization.fit(model, PostTrainingQuantConfig(), calib_dataloader)")


if __name__ == "__main__":
    main()

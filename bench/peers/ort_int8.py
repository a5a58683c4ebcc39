"""Plain onnxruntime quantization with its defaults: `quantize_dynamic(model, output)`, or
`quantize_static(model, output, reader)` (QDQ, int8 activations and weights, per-tensor, MinMax), calibrated on
the given samples. No pre-processing, no options: what a user gets from the documented one-liners.

    python ort_int8.py MODEL CALIBRATION OUTPUT --mode dynamic|static
"""

from __future__ import annotations

from calibration import command_line, load, one_at_a_time
from onnxruntime.quantization import CalibrationDataReader, quantize_dynamic, quantize_static


class Samples(CalibrationDataReader):
    def __init__(self, path: str):
        self.path = path
        self.rewind()

    def get_next(self):
        return next(self.feeds, None)

    def rewind(self):
        self.feeds = one_at_a_time(load(self.path))


def main() -> None:
    args = command_line(__doc__, {"--mode": ("dynamic", "static")})
    if args.mode == "dynamic":
        quantize_dynamic(args.model, args.output)
    else:
        quantize_static(args.model, args.output, Samples(args.calibration))
    print(f"onnxruntime quantize_{args.mode} with default arguments")


if __name__ == "__main__":
    main()

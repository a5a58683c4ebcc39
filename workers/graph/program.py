"""PyTorch `torch.export` programs (.pt2): loaded only after the archive passed the safety check, turned
into ONNX for the steps and the measurements, and made again from a candidate's ONNX for the user."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxscript  # noqa: F401  (torch.onnx's exporter: imported here, so a child started ahead has it loaded)
import torch

from core.assets import TensorSpec
from core.checks.pt2_safety import checked_program
from core.errors import ErrorCode, InvalidModel
from workers.engine.data import Split

CONVERT_TIMEOUT_S = 1800


def load_program(path: Path, max_bytes: int):
    """torch.export.load, but only for an archive whose every pickle the weights-only loader accepts:
    torch.export.load retries unsafely when its safe load fails (docs/architecture.md, security rules)."""
    checked_program(path, max_bytes)
    return torch.export.load(str(path))


def _scoped_names(model: onnx.ModelProto) -> None:
    """Names nodes after the module that made them (e.g. /encoder/layer.0/attention/MatMul_7), as the
    TorchScript exporter does, so that globs and layer detection read the same for both exporters."""
    for i, node in enumerate(model.graph.node):
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if not scopes:
            continue
        # the module path from the root, then the FX node's own name last
        modules = [s for s in re.findall(r"'([^']*)'", scopes)][:-1]
        parts = modules[-1].split(".") if modules else []
        joined: list[str] = []
        for part in parts:  # ModuleList indexes stay attached: layer.0
            if part.isdigit() and joined:
                joined[-1] += "." + part
            else:
                joined.append(part)
        node.name = "/" + "/".join(p for p in joined if p) + f"/{node.op_type}_{i}"


def program_to_onnx(src: Path, out: Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                    samples: Split, max_bytes: int) -> Path:
    """The uploaded program as ONNX. torch.export.load reads an untrusted file: it runs in a child process
    within the job's budget (workers/measure/bench.py `in_sandbox`), stopped at once if the job is cancelled."""
    from workers.measure.bench import in_sandbox

    spec = out.parent / f"{out.stem}.convert.json"
    example = out.parent / f"{out.stem}.example.npz"
    example_feed = samples.feed(slice(0, 2))
    np.savez(example, *[np.ascontiguousarray(example_feed[s.name]) for s in inputs])
    spec.write_text(json.dumps({"src": str(src), "out": str(out), "example": str(example), "max_bytes": max_bytes,
                                "inputs": [s.name for s in inputs], "outputs": [s.name for s in outputs]}))
    found = in_sandbox("workers.graph.program", [str(spec)], out.parent / f"{out.stem}.scratch",
                       "the program could not be converted to ONNX", ErrorCode.conversion_failed, CONVERT_TIMEOUT_S)
    if "refused" in found:
        raise InvalidModel(found["refused"], code=found["code"])
    return out


def _convert(spec: dict) -> dict:
    """In the child: the archive checked again, loaded, exported to ONNX; {} or {"refused", "code"}."""
    try:
        program = load_program(Path(spec["src"]), spec["max_bytes"])
        with np.load(spec["example"]) as example:
            args = tuple(torch.from_numpy(example[f"arr_{i}"]) for i in range(len(spec["inputs"])))
        torch.onnx.export(program, args, spec["out"], dynamo=True, external_data=False, verbose=False,
                          input_names=spec["inputs"], output_names=spec["outputs"])
    except InvalidModel as e:
        return {"refused": e.message, "code": e.code}
    except Exception as e:
        return {"refused": f"the program could not be converted to ONNX: {type(e).__name__}: {str(e)[:300]}",
                "code": ErrorCode.conversion_failed}
    model = onnx.load(spec["out"])
    _scoped_names(model)
    onnx.save(model, spec["out"])
    return {}


def onnx_to_program(src: Path, out: Path, inputs: list[TensorSpec], samples: Split) -> Path:
    """A .pt2 that computes what the ONNX model computes; dynamic dimensions of the original inputs stay
    dynamic. Raises UnsupportedOp for graphs with onnxruntime-only (e.g. quantized) operators."""
    from workers.graph.torch_module import OnnxModule, named

    module = named(OnnxModule(onnx.load(str(src))).eval())
    feed = samples.feed(slice(0, 2))
    args = tuple(torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in inputs)
    # AUTO: dynamic where the graph allows it (a sequence may be capped by a position table)
    shapes = tuple({axis: torch.export.Dim.AUTO for axis, d in enumerate(s.shape) if not isinstance(d, int)} or None
                   for s in inputs)
    with torch.no_grad():
        program = torch.export.export(module, args, dynamic_shapes=shapes)
    torch.export.save(program, str(out))
    return out


if __name__ == "__main__":  # python -m core.sandbox ... workers.graph.program SPEC.json (program_to_onnx)
    print(json.dumps(_convert(json.loads(Path(sys.argv[1]).read_text()))))

"""Whether onnxruntime can make a session of a graph on the target, tried in a child process: a graph can crash
onnxruntime outright (its NCHWc layout pass did, on one fp16 text recognizer), and a crash in a step's own
process would take the worker down with it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

LOAD_TIMEOUT_S = 300


def loads(path: Path, providers: list[str]) -> str | None:
    """None when the session is made, else why not."""
    from core.errors import ErrorCode, ParetoError
    from workers.measure.bench import in_sandbox

    spec = path.with_suffix(".loads.json")
    spec.write_text(json.dumps({"model": str(path), "providers": providers}))
    try:
        in_sandbox("workers.measure.loadcheck", [str(spec)], path.parent / f"{path.stem}.loads",
                   "onnxruntime could not load it", ErrorCode.model_run_failed, LOAD_TIMEOUT_S)
    except ParetoError as e:
        return e.message
    return None


if __name__ == "__main__":  # python -m core.sandbox ... workers.measure.loadcheck SPEC.json
    import onnxruntime as ort

    spec = json.loads(Path(sys.argv[1]).read_text())
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    ort.InferenceSession(spec["model"], opts, providers=spec["providers"])
    print(json.dumps({"loads": True}))

"""Lean imports: the gateway never loads torch or onnxruntime; the worker module touches no CUDA before
the pool forks (CUDA state does not survive fork)."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(','.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PARETO_API_KEYS": "t:k", "PATH": ""}).stdout
    return {m.split(".")[0] for m in out.strip().split(",")}


def test_service_imports_neither_torch_nor_onnxruntime():
    mods = loaded_after("import service.app")
    assert "torch" not in mods and "onnxruntime" not in mods


def test_worker_module_does_not_touch_cuda_before_the_pool_forks():
    code = ("import sys, workers.app, workers.tasks; torch = sys.modules.get('torch'); "
            "print(torch is None or not torch.cuda.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PARETO_API_KEYS": "t:k", "PATH": ""}).stdout
    assert out.strip().splitlines()[-1] == "True"


def test_core_is_free_of_service_workers_and_torch():
    mods = loaded_after("import core.jobstore, core.objectstore, core.recipes, core.queue, core.report")
    assert not mods & {"service", "workers", "torch", "onnxruntime", "cli"}

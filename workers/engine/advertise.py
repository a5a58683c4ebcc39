"""A worker tells the fleet what it serves (its queues, device and execution providers), every few
seconds while it lives, from its main process (no CUDA initialised there: nvidia-smi names the GPU)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading

from core.jobstore import redis_client
from core.registry import TTL_S, advertise
from core.settings import get_settings

log = logging.getLogger("pareto.worker")


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0] if out else None


def capabilities(queues: list[str]) -> dict:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    gpu = gpu_name()
    return {"queues": queues, "device": "cuda" if gpu and "CUDAExecutionProvider" in providers else "cpu",
            "providers": providers, "gpu": gpu}


def start(name: str, queues: list[str]) -> threading.Thread:
    info, r, stop = capabilities(queues), redis_client(get_settings()), threading.Event()

    def beat() -> None:
        while True:
            try:
                advertise(r, name, info)
            except Exception as e:  # Redis away: the next beat tries again
                log.warning("could not advertise worker %s: %s", name, e)
            if stop.wait(TTL_S / 3):
                return

    thread = threading.Thread(target=beat, name="pareto-advertise", daemon=True)
    thread.start()
    return thread

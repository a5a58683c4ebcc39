# syntax=docker/dockerfile:1
#
# Pareto images, one Dockerfile, three targets (docs/deployment.md):
#
#   docker build --target api        -t pareto-api:0.1.0 .         # the gateway: no torch, no onnxruntime
#   docker build --target worker     -t pareto-worker:0.1.0 .      # CPU worker: CPU build of torch
#   docker build --target worker-gpu -t pareto-worker-gpu:0.1.0 .  # GPU worker: CUDA 13 torch + onnxruntime-gpu
#
# Every image runs as the unprivileged user 10001 and writes only under /tmp (Kubernetes mounts /tmp
# and PARETO_DATA_DIR as emptyDir volumes over a read-only root filesystem).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# PyPI's torch==2.13.0 Linux wheel is the CUDA 13.0 build (it requires cuda-toolkit 13.0.3 and
# nvidia-cudnn-cu13 9.x), and onnxruntime-gpu on PyPI is built for CUDA 13 and cuDNN 9: the base
# image matches both. Nodes need an NVIDIA driver that supports CUDA 13 (>= 580).
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu22.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

# ---------------------------------------------------------------------------------------------------
# Only what `pip install .` needs: the project metadata and the four packages (see .dockerignore).
FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY service ./service
COPY workers ./workers
COPY cli ./cli

# A Python 3.11 for the CUDA image, installed by uv (a relocatable CPython build), so that the GPU
# image has the same interpreter version as the slim images without a third-party apt repository.
FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------------------------------------------
# Build stages: each fills the virtual environment /opt/venv that its runtime stage copies.
FROM ${PYTHON_IMAGE} AS build-api
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY --from=source /src /src
WORKDIR /src
# The gateway only: the package without extras (no torch, no onnxruntime; see DESIGN.md).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE} AS build-worker
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
COPY --from=source /src /src
WORKDIR /src
# The worker extra, with torch==2.13.0 from the CPU wheel index (2.13.0+cpu sorts above PyPI's CUDA
# build of 2.13.0, so pip takes it: no CUDA libraries in the CPU image).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir \
        --extra-index-url https://download.pytorch.org/whl/cpu ".[worker]"

FROM ${CUDA_IMAGE} AS build-worker-gpu
ARG PYTHON_VERSION=3.11.14
# onnxruntime-gpu 1.32.0 is not published on PyPI (its newest release there is 1.31.1, the CPU package
# is at 1.32.0): build with --build-arg ORT_GPU_VERSION=1.32.0 once it is.
ARG ORT_GPU_VERSION=1.31.1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python
COPY --from=uv /uv /usr/local/bin/uv
COPY --from=source /src /src
WORKDIR /src
# torch==2.13.0 from PyPI is the CUDA build; the worker extra's CPU onnxruntime is swapped for
# onnxruntime-gpu (both install the `onnxruntime` package, so only one may be present).
RUN uv python install "${PYTHON_VERSION}" \
 && "$(uv python find "${PYTHON_VERSION}")" -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir ".[worker]" \
 && /opt/venv/bin/pip uninstall --yes onnxruntime \
 && /opt/venv/bin/pip install --no-cache-dir "onnxruntime-gpu==${ORT_GPU_VERSION}" \
 && /opt/venv/bin/pip check

# ---------------------------------------------------------------------------------------------------
# Runtime stages.
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PARETO_DATA_DIR=/tmp/pareto \
    PARETO_WORK_DIR=/tmp/pareto/work
RUN groupadd --system --gid 10001 pareto \
 && useradd --system --uid 10001 --gid pareto --home-dir /tmp --no-create-home --shell /usr/sbin/nologin pareto
WORKDIR /app

FROM runtime AS api
COPY --from=build-api /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["pareto", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime AS worker
COPY --from=build-worker /opt/venv /opt/venv
USER 10001:10001
# The worker's node name is worker@<hostname> (`pareto worker --name worker`, Celery's %h).
HEALTHCHECK --interval=60s --timeout=30s --start-period=120s --retries=3 \
    CMD ["sh", "-c", "exec celery -A workers.app inspect ping -d \"worker@$HOSTNAME\" --timeout 10 > /dev/null"]
# SIGTERM starts Celery's warm shutdown: the running job finishes (at most PARETO_TASK_TIME_LIMIT_S),
# no new one starts. Give `docker stop` a matching --time.
STOPSIGNAL SIGTERM
CMD ["pareto", "worker", "--queues", "cpu", "--name", "worker"]

FROM ${CUDA_IMAGE} AS worker-gpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PARETO_DATA_DIR=/tmp/pareto \
    PARETO_WORK_DIR=/tmp/pareto/work
RUN groupadd --system --gid 10001 pareto \
 && useradd --system --uid 10001 --gid pareto --home-dir /tmp --no-create-home --shell /usr/sbin/nologin pareto
COPY --from=build-worker-gpu /opt/python /opt/python
COPY --from=build-worker-gpu /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
HEALTHCHECK --interval=60s --timeout=30s --start-period=180s --retries=3 \
    CMD ["sh", "-c", "exec celery -A workers.app inspect ping -d \"worker@$HOSTNAME\" --timeout 10 > /dev/null"]
STOPSIGNAL SIGTERM
CMD ["pareto", "worker", "--queues", "gpu", "--name", "worker"]

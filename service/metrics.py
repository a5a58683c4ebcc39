"""What `GET /metrics` exposes, in the Prometheus text format.

Read from Redis at each scrape (totals over every tenant, whichever replica answers): jobs by state,
queue depths, step durations and workers' GPU memory. Counted in this API process: upload bytes.
"""

from __future__ import annotations

import logging

import redis
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from core import metrics

log = logging.getLogger("pareto.api")

PROCESS = CollectorRegistry()
UPLOAD_BYTES = Counter("pareto_upload_bytes", "Bytes received on upload routes, by kind and outcome "
                       "(accepted: the upload was stored; refused: it was not).",
                       ["kind", "outcome"], registry=PROCESS)
GPU_FIELDS = {
    "used_bytes": "Memory in use on the worker's GPU (every process on it).",
    "total_bytes": "Memory of the worker's GPU.",
    "torch_allocated_bytes": "Memory held by tensors of the worker process.",
    "torch_peak_bytes": "Peak memory held by tensors of the worker process.",
}


class RedisCollector:
    """Reads the shared numbers at collect time; `pareto_redis_up` 0 when Redis did not answer."""

    def __init__(self, r: redis.Redis):
        self.r = r

    def collect(self):
        try:
            families = [self._jobs(), self._queues(), self._steps(), *self._gpu()]
        except redis.RedisError as e:
            log.warning("metrics: Redis did not answer: %s", e)
            yield GaugeMetricFamily("pareto_redis_up", "1 when Redis answered this scrape.", value=0)
            return
        yield GaugeMetricFamily("pareto_redis_up", "1 when Redis answered this scrape.", value=1)
        yield from families

    def _jobs(self) -> GaugeMetricFamily:
        g = GaugeMetricFamily("pareto_jobs", "Jobs in each state, over every tenant.", labels=["state"])
        for state, n in metrics.jobs_by_state(self.r).items():
            g.add_metric([state], n)
        return g

    def _queues(self) -> GaugeMetricFamily:
        g = GaugeMetricFamily("pareto_queue_depth", "Jobs waiting in each Celery queue.", labels=["queue"])
        for queue, n in metrics.queue_depths(self.r).items():
            g.add_metric([queue], n)
        return g

    def _steps(self) -> HistogramMetricFamily:
        h = HistogramMetricFamily("pareto_step_duration_seconds", "Time workers spent in each step.",
                                  labels=["step"])
        for step, s in metrics.step_seconds(self.r).items():
            h.add_metric([step], s["buckets"], s["sum"])
        return h

    def _gpu(self) -> list[GaugeMetricFamily]:
        families = {f: GaugeMetricFamily(f"pareto_worker_gpu_{f}", help_, labels=["worker", "device"])
                    for f, help_ in GPU_FIELDS.items()}
        for worker, memory in metrics.gpu_memory(self.r).items():
            for f, family in families.items():
                if f in memory:
                    family.add_metric([worker, str(memory.get("device", 0))], memory[f])
        return list(families.values())


def exposition(r: redis.Redis) -> bytes:
    shared = CollectorRegistry()
    shared.register(RedisCollector(r))
    return generate_latest(PROCESS) + generate_latest(shared)

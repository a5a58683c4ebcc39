"""The Celery configuration both sides share, and the gateway's way to enqueue by task name.

The gateway never imports workers/: it sends tasks by name through a client app built from the same
configuration the workers use.
"""

from __future__ import annotations

from celery import Celery

from core.settings import Settings

OPTIMIZE_TASK = "pareto.optimize"
TRIALS_TASK = "pareto.trials"  # helpers that run a job's candidates on other workers
QUEUES = ("cpu", "gpu")
WARMED = "pool process warmed up"
"""Logged by each worker pool process once warm: `pareto up` and the tests wait for it, so that a started
worker is ready for a job, not one whose first job waits behind the warm-up."""


def celery_config(settings: Settings) -> dict:
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": settings.restore_interval_s,
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
    }
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout_s},
        "visibility_timeout": settings.visibility_timeout_s,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_proc_alive_timeout": 60,  # a pool process starts by warming torch up (workers/app.py)
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": settings.soft_time_limit_s,
        "task_default_queue": "cpu",
        "task_create_missing_queues": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "enable_utc": True,
    }


def celery_client(settings: Settings) -> Celery:
    app = Celery("pareto-client")
    app.conf.update(celery_config(settings))
    return app


def queue_for(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


def enqueue(celery: Celery, job) -> None:
    """Sends a job (core.job.Job) to its queue by task name, its id as the task id, retrying briefly while
    the broker does not answer."""
    celery.send_task(OPTIMIZE_TASK, args=[job.tenant, job.id], task_id=job.id,
                     queue=queue_for(job.recipe.target.device),
                     retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5})

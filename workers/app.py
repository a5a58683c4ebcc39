"""The Celery app of the workers: `celery -A workers.app worker -Q cpu` (or `pareto worker`)."""

from __future__ import annotations

import logging
import signal

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

from core import sandbox
from core.queue import WARMED, celery_config
from core.settings import get_settings

app = Celery("pareto")
app.conf.update(celery_config(get_settings()))
app.conf.imports = ("workers.tasks",)


@worker_process_init.connect
def _pool_children_ignore_sigterm(**_) -> None:
    """SIGTERM means warm shutdown: the main process stops taking jobs and waits for the running one.
    A pool child that got the same SIGTERM (sent to the whole process group, as `pareto up` and some
    container runtimes do) would otherwise abort the running step halfway. Billiard keeps an ignored
    signal ignored; SIGQUIT (cold shutdown), time limits and SIGKILL still end a child."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@worker_process_init.connect
def _warm_up(**_) -> None:
    """What every job would otherwise pay on a fresh worker: torch's first training step, matplotlib, and
the child processes that measure models and convert programs (core/sandbox.py)."""
    from workers.report import html
    from workers.training import loop

    loop.warm_up()
    html.pyplot()
    # their children, started ahead
    for module in ("workers.measure.probe", "workers.graph.program", "workers.graph.normalize"):
        sandbox.prepare(module)
    logging.getLogger(__name__).info(WARMED)


@worker_process_shutdown.connect
def _send_pending_callbacks(**_) -> None:
    """Callbacks go out from daemon threads of the pool process (workers/engine/webhooks.py), which its exit would
    cut off: a process that exits cleanly (warm shutdown, max tasks per child) first lets them finish."""
    from workers.engine import webhooks

    webhooks.drain(get_settings().webhook_budget_s)


@worker_ready.connect
def _advertise(sender=None, **_) -> None:
    """Tells the gateway which queues, device and execution providers this worker serves."""
    from workers.engine import advertise

    queues = [q.name for q in sender.task_consumer.queues] if sender is not None else []
    advertise.start(sender.hostname if sender is not None else "worker", queues)

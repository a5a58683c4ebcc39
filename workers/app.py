"""The Celery app of the workers: `celery -A workers.app worker -Q cpu` (or `pareto worker`)."""

from __future__ import annotations

from celery import Celery

from core.queue import celery_config
from core.settings import get_settings

app = Celery("pareto")
app.conf.update(celery_config(get_settings()))
app.conf.imports = ("workers.tasks",)

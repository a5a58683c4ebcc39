"""Celery workers and the optimization engine. torch is imported lazily, inside the steps that need it,
so importing the worker module touches no GPU before the pool forks."""

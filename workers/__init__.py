"""Celery workers and the optimization engine, room by room: engine/ (a job's life and its candidate tree),
steps/ (one module per technique), measure/, graph/ (model surgery), training/, report/. torch is imported
by the modules that need it; importing the Celery app (workers.app, workers.tasks) initialises no GPU before
the pool forks (tests/test_imports.py)."""

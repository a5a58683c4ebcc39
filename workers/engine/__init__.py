"""Orchestration: a job's life on a worker, its candidate tree shared by the fleet, its data, budget,
callbacks and telemetry."""

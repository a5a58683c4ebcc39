"""The `pareto` command: run the service (`up`, `api`, `worker`) and talk to it."""

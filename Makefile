# Two commands on a fresh machine: `make demo` (install, start the embedded service, run int8 on the
# example model, print the report) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint up clean

$(STAMP): pyproject.toml requirements-reference.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[worker,embedded,dev]"
	$(PY) -m pip install -q --no-deps -r requirements-reference.txt
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) examples/demo.py

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

up: install
	$(VENV)/bin/pareto up

clean:
	rm -rf $(VENV) .pareto demo-out .pytest_cache

# Two commands do all set-up on a fresh machine:  make run   |   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck unit integration services tools browser bench-fashion clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The client (client/) is its own distribution; installed beside the service, `fopro` mounts its CLI.
$(RUN_STAMP): pyproject.toml client/pyproject.toml | $(PY)
	$(PIP) install -e '.[api,worker]' -e './client[cli]'
	touch $@

$(DEV_STAMP): pyproject.toml client/pyproject.toml | $(PY)
	$(PIP) install -e '.[api,worker,dev]' -e './client[cli]'
	touch $@ $(RUN_STAMP)

## run: create .venv, install, migrate, start the API and a worker (SQLite, local objects, no servers)
run: $(RUN_STAMP)
	$(VENV)/bin/fopro up

## test: install test tools and Chromium, make sure Postgres and Redis answer, lint, type-check,
## run every test
# Two xdist processes: the job tests wait on workers and leases much of the time (see README).
PYTEST_WORKERS ?= 2
test: $(DEV_STAMP) services tools browser lint typecheck
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist load

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(DEV_STAMP)
	$(VENV)/bin/mypy

unit: $(DEV_STAMP) tools
	$(VENV)/bin/pytest tests/unit

integration: $(DEV_STAMP) services
	$(VENV)/bin/pytest tests/integration tests/e2e

services:
	scripts/ensure-services.sh

# tools: the archive writers (zip, 7-Zip, bsdtar) the dataset tests pack uploads with
tools:
	scripts/ensure-tools.sh

## browser: Debian's Chromium for the dashboard's browser tests (tests/browser)
browser:
	scripts/ensure-browser.sh

## bench-fashion: every method on Fashion-MNIST-LT, 3 seeds (needs dataset-fashion-mnist)
bench-fashion: $(DEV_STAMP)
	$(PY) -m bench.fashion_lt --seeds 0 1 2

clean:
	rm -rf $(VENV) .fopro .mypy_cache .ruff_cache .pytest_cache

# Targets used by humans, the README and CI alike. Every target that runs the project
# creates the virtual environment first when it is missing, and reinstalls the project
# when pyproject.toml changed since (the stamp file), so any of them can be the first
# command on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_EXTRAS ?= dev,kafka
# More pytest arguments, e.g. make test PYTEST_ARGS="tests/detector -x".
PYTEST_ARGS ?=
# Test processes (pytest-xdist): most tests wait on real servers and processes, so two
# workers finish the suite in about two thirds of the time even on two cores; 0 runs it in
# this process (a debugger, -s).
PYTEST_WORKERS ?= 2
# The interpreter the virtual environment is made from: Python 3.11 or newer.
PYTHON ?= python3

.PHONY: help install lint test test-fast bench up demo ci clean

help:
	@echo "make install   create $(VENV) and install the project with extras [$(PIP_EXTRAS)]"
	@echo "make up        run Redis + the three services locally (page on :8080)"
	@echo "make demo      the same against the built-in fake exchange (no internet needed)"
	@echo "make test      the whole test suite (real servers, started by the tests)"
	@echo "make lint      ruff + mypy --strict + import-linter (the layers)"
	@echo "make bench     throughput and latency benchmarks (prints figures)"
	@echo "(each creates $(VENV) first if needed; PYTHON=python3.12 picks the interpreter)"

$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	    echo "binance-alerter needs Python 3.11 or newer and '$(PYTHON)' is not one:" >&2; \
	    echo "install one (sudo apt-get install python3) or name it: make PYTHON=python3.12 ..." >&2; \
	    exit 1; }; \
	  echo "creating $(VENV) with $$($(PYTHON) --version)"; \
	  $(PYTHON) -m venv $(VENV) || { \
	    echo "could not create $(VENV): on Debian/Ubuntu, sudo apt-get install python3-venv" >&2; \
	    exit 1; }; \
	fi
	@echo "installing the project and its extras [$(PIP_EXTRAS)] into $(VENV)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(PIP_EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

# Missing system packages (Chromium, Prometheus, docker-compose) are named, with the
# command that installs them, before the tests start; the tests that need them then skip
# (or fail under CI=true) with the same message.
test: $(STAMP)
	@$(PY) -m tests.support.prerequisites
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: $(STAMP)
	@$(PY) -m tests.support.prerequisites
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal -m "not e2e" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench

up: $(STAMP)
	$(VENV)/bin/binance-alerter up

demo: $(STAMP)
	$(VENV)/bin/binance-alerter up --demo

ci: install lint test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache tests/artifacts

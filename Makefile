# Targets used by humans, the README and CI alike.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_EXTRAS ?= dev,kafka

.PHONY: help install lint typecheck test test-fast bench up demo ci clean

help:
	@echo "make install   create $(VENV) and install the project with extras [$(PIP_EXTRAS)]"
	@echo "make up        run Redis + the three services locally (page on :8080)"
	@echo "make demo      the same against the built-in fake exchange (no internet needed)"
	@echo "make test      the whole test suite (real servers, started by the tests)"
	@echo "make lint      ruff + mypy --strict + import-linter (the layers)"
	@echo "make bench     throughput and latency benchmarks (prints figures)"

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e ".[$(PIP_EXTRAS)]"

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

test:
	$(PY) -m pytest

test-fast:
	$(PY) -m pytest -m "not e2e"

bench:
	$(PY) -m bench

up:
	$(VENV)/bin/binance-alerter up

demo:
	$(VENV)/bin/binance-alerter up --demo

ci: install lint test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache tests/artifacts

# The README's two first commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch goes in first and alone: the CPU wheel where one is provided locally, else the registry's; its version is
# requirements.lock's.
TORCH ?= $(shell grep -m1 '^torch==' requirements.lock)

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c requirements.lock "$(TORCH)"
	$(PIP) install -q -c requirements.lock -e ".[dev]"
	touch $@

demo: setup
	$(PY) -m jobs.demo

test: setup
	$(PY) -m ruff check pipeline jobs tests
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check pipeline jobs tests
	$(PY) -m ruff format --check pipeline jobs tests

bench: setup
	$(PY) -m jobs.bench

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache

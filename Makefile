# The README's two first commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch goes in first and alone: the CPU wheel where one is provided locally, else the registry's; its version is
# requirements.lock's.
TORCH ?= $(shell grep -m1 '^torch==' requirements.lock)

.PHONY: setup demo demo-model test test-bench lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c requirements.lock "$(TORCH)"
	$(PIP) install -q -c requirements.lock -e ".[dev]"
	touch $@

demo: setup
	$(PY) -m jobs.demo

# The packaged demo model (model.source=demo), trained from nothing on this machine: procedural pairs, the VAE as an
# autoencoder, the DTC by the training job, then the latest checkpoint re-saved in fp16 into the package, and its
# quality measured on held-out pairs (README, "The demo model").
DEMO_BUILD := build/demo-model
DEMO_WEIGHTS := pipeline/model/weights/demo
demo-model: setup
	rm -rf $(DEMO_BUILD)
	$(PY) -m pipeline.synthetic.procedural $(DEMO_BUILD)/data --pairs 1500
	$(PY) -m pipeline.train.autoencoder --config configs/train-demo-autoencoder.yaml
	$(PY) -m jobs.train --config configs/train-demo.yaml
	rm -rf $(DEMO_WEIGHTS)
	$(PY) -m pipeline.model convert --dtype fp16 --steps 20 --guidance 2.0 --out $(DEMO_WEIGHTS) \
		--from-checkpoint $$(ls -d $(DEMO_BUILD)/runs/demo/checkpoint_[0-9]* | tail -n 1)/model
	$(PY) -m benchmarks --parts demo_quality --out $(DEMO_BUILD)/quality.json

test: setup
	$(PY) -m ruff check pipeline jobs tests benchmarks
	$(PY) -m pytest

# The benchmark parts end to end (a 50,000-pair memory run stopped after 45 s, a simulated cluster): long runs that
# check the benchmarks themselves, not the product, so `make test` leaves them out.
test-bench: setup
	$(PY) -m pytest --run-bench -m bench

lint: setup
	$(PY) -m ruff check pipeline jobs tests benchmarks
	$(PY) -m ruff format --check pipeline jobs tests benchmarks

bench: setup
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache

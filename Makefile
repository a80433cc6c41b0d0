# landscape: loss-landscape geometry of small networks on MNIST.
# `make help` lists the targets. Every target writes files, so finished work is skipped.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARCHS := mlp cnn rescnn
# Where MNIST lives (the folder holding MNIST/raw/); empty: $$LANDSCAPE_DATA or ./data,
# downloaded by torchvision when missing.
DATA ?=
export LANDSCAPE_DATA := $(if $(DATA),$(abspath $(DATA)),$(LANDSCAPE_DATA))

.DEFAULT_GOAL := help
.PHONY: help env train test bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: DATA=<folder holding MNIST/raw/>  PYTHON=$(PYTHON)"

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

env: $(VENV)/.stamp ## create the virtual environment from pyproject.toml (once)

outputs/train/%.txt: $(VENV)/.stamp landscape_utils/training.py landscape_utils/config.py landscape_utils/models.py
	@mkdir -p $(@D)
	$(PY) -m landscape_utils train --arch $* > $@.tmp && mv $@.tmp $@

train: $(foreach a,$(ARCHS),outputs/train/$(a).txt) ## train the study's three models (3 epochs each; cached)
	@for a in $(ARCHS); do printf '%-7s %s\n' $$a "$$(cat outputs/train/$$a.txt)"; done

test: $(VENV)/.stamp ## run the test suite (creates the environment if missing)
	$(PY) -m pytest -q

outputs/bench/results.json: $(VENV)/.stamp $(wildcard benchmarks/*.py landscape_utils/*.py)
	$(PY) benchmarks/run_all.py

bench: outputs/bench/results.json ## benchmark against baselines in one run -> outputs/bench/results.json

clean: ## remove generated outputs (keeps the environment and cached runs)
	rm -rf outputs/bench outputs/train

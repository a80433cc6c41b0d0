# landscape: loss-landscape geometry of small networks on MNIST.
# `make help` lists the targets. Every target writes files, so finished work is skipped.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARCHS := mlp cnn rescnn
# Notebooks run side by side by the study runner.
JOBS ?= 2
# Where MNIST lives (the folder holding MNIST/raw/); empty: $$LANDSCAPE_DATA or ./data,
# downloaded by torchvision when missing.
DATA ?=
export LANDSCAPE_DATA := $(if $(DATA),$(abspath $(DATA)),$(LANDSCAPE_DATA))

.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
.PHONY: help env report smoke lab train test bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: DATA=<folder holding MNIST/raw/>  PYTHON=$(PYTHON)"

$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

env: $(VENV)/.stamp ## create the virtual environment from pyproject.toml (once)

# The study: papermill runs each notebook per architecture (skipping those whose inputs did
# not change), then the report is built. One process per profile, so `make -j` is safe.
STUDY_SOURCES := $(wildcard landscape_utils/*.py notebooks/*.ipynb)

outputs/%/report.html: $(VENV)/.stamp $(STUDY_SOURCES) profiles/%.toml
	$(PY) -m landscape_utils.pipeline --profile $* --jobs $(JOBS)

report: outputs/full/report.html ## the main job: the full study (3 seeds x 3 models) -> outputs/full/report.html
	@echo "report: $(abspath $<)"

smoke: outputs/smoke/report.html ## the same study, tiny (minutes) -> outputs/smoke/report.html
	@echo "report: $(abspath $<)"

lab: $(VENV)/.stamp ## open JupyterLab on the notebooks with the project's kernel
	$(VENV)/bin/jupyter lab notebooks/

outputs/train/%.txt: $(VENV)/.stamp landscape_utils/training.py landscape_utils/config.py landscape_utils/models.py
	@mkdir -p $(@D)
	$(PY) -m landscape_utils train --arch $* > $@.tmp && mv $@.tmp $@

train: $(foreach a,$(ARCHS),outputs/train/$(a).txt) ## only train the three models (seed 0, 3 epochs; cached)
	@for a in $(ARCHS); do printf '%-7s %s\n' $$a "$$(cat outputs/train/$$a.txt)"; done

test: $(VENV)/.stamp ## run the test suite (creates the environment if missing)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

outputs/bench/results.json: $(VENV)/.stamp $(wildcard benchmarks/*.py landscape_utils/*.py)
	OMP_NUM_THREADS=1 $(PY) benchmarks/run_all.py $(BENCH_ARGS)

bench: outputs/bench/results.json ## benchmarks against baselines, one run -> outputs/bench/results.json (BENCH_ARGS=--quick)

clean: ## remove generated outputs (keeps the environment and cached training runs)
	rm -rf outputs/bench outputs/train outputs/smoke outputs/full

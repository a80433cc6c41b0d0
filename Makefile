# landscape: loss-landscape geometry of small networks on MNIST.
# `make help` lists the targets. Snakemake (workflow/Snakefile) schedules the study and skips
# finished work; make only names the entry points.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
# Cores for local runs (one job per core, one math thread per job).
JOBS ?= all
# Study settings that differ from the profile, e.g. SET='lr=0.02 seeds=[0,1]': the study then lives
# in its own folder outputs/<profile>-<hash>/ and never overwrites outputs/<profile>/.
SET ?=
# local (default) or slurm; with slurm also SLURM_ACCOUNT, SLURM_PARTITION (and SLURM_EXTRA).
EXECUTOR ?= local
SLURM_ACCOUNT ?=
SLURM_PARTITION ?=
SLURM_EXTRA ?=
# The exact environment (pip freeze) the project was tested with; LOCK= resolves freely.
LOCK ?= requirements.lock
# Where MNIST lives (the folder holding MNIST/raw/); empty: $$LANDSCAPE_DATA or ./data,
# downloaded by torchvision when missing.
DATA ?=
export LANDSCAPE_DATA := $(if $(DATA),$(abspath $(DATA)),$(LANDSCAPE_DATA))

# Units (seeds or seed pairs) per probe job: 0 = all of a section and architecture in one job (a
# 2-core machine spares the per-job start-up), 1 = one job per seed (a cluster fans out).
ifeq ($(EXECUTOR),slurm)
  BLOCK ?= 1
  SLURM_RESOURCES := $(if $(SLURM_ACCOUNT),slurm_account=$(SLURM_ACCOUNT)) $(if $(SLURM_PARTITION),slurm_partition=$(SLURM_PARTITION))
  RUN_ARGS := --profile workflow/profiles/slurm $(if $(SLURM_ACCOUNT),,--slurm-no-account) \
    $(if $(strip $(SLURM_RESOURCES)),--default-resources $(SLURM_RESOURCES)) $(SLURM_EXTRA)
else ifeq ($(EXECUTOR),local)
  BLOCK ?= 0
  RUN_ARGS := --profile workflow/profiles/default --cores $(JOBS)
else
  $(error EXECUTOR must be local or slurm, got '$(EXECUTOR)')
endif
study = $(SNAKEMAKE) $(RUN_ARGS) --config profile=$(1) set="$(SET)" block=$(BLOCK) $(2) 2>&1 | $(PY) -m landscape_utils.study.progress

.DEFAULT_GOAL := help
.PHONY: help env lock report large smoke plan variants clean-variants lab train test bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: SET='key=value ...'  JOBS=<cores>  EXECUTOR=local|slurm  SLURM_ACCOUNT=  SLURM_PARTITION="
	@echo "             BLOCK=<units per probe job; 0 = all>  SLURM_EXTRA='<more snakemake options>'"
	@echo "             DATA=<folder holding MNIST/raw/>  PROFILE=<name> (make plan)  PYTHON=$(PYTHON)"

$(VENV)/.stamp: pyproject.toml $(wildcard $(LOCK))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(wildcard $(LOCK)),-c $(LOCK)) -e '.[dev,bench]'
	touch $@

env: $(VENV)/.stamp ## create the virtual environment from pyproject.toml and requirements.lock (once)

lock: $(VENV)/.stamp ## rewrite requirements.lock from the current environment
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > $(LOCK)

report: $(VENV)/.stamp ## the main job: the full study -> outputs/full/report.html (SET=... for a variant)
	$(call study,full)
	@echo "report: $$($(PY) -m landscape_utils settings --profile full --set $(SET))/report.html"

large: $(VENV)/.stamp ## the wider study (20 seeds, every sweep on every model) for a cluster or GPU -> outputs/large/report.html
	$(call study,large)
	@echo "report: $$($(PY) -m landscape_utils settings --profile large --set $(SET))/report.html"

smoke: $(VENV)/.stamp ## the same study, tiny (minutes) -> outputs/smoke/report.html
	$(call study,smoke)
	@echo "report: $$($(PY) -m landscape_utils settings --profile smoke --set $(SET))/report.html"

PROFILE ?= full
plan: $(VENV)/.stamp ## what `make report` would run and why (PROFILE=smoke, SET=... as for the study)
	$(SNAKEMAKE) $(RUN_ARGS) --config profile=$(PROFILE) set="$(SET)" block=$(BLOCK) --dry-run --quiet rules

variants: $(VENV)/.stamp ## list the study folders made by SET=... overrides, with their settings
	@$(PY) -m landscape_utils variants

clean-variants: $(VENV)/.stamp ## remove those variant folders (outputs/full and outputs/smoke stay)
	@$(PY) -m landscape_utils variants --clean

lab: $(VENV)/.stamp ## JupyterLab on the notebooks (runs by hand write under outputs/lab/)
	$(VENV)/bin/jupyter lab notebooks/

train: $(VENV)/.stamp ## only the study's training runs (all seeds and architectures; cached)
	$(call study,$(PROFILE),--until train)

test: $(VENV)/.stamp ## run the test suite (creates the environment if missing)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q

outputs/bench/results.json: $(VENV)/.stamp $(wildcard benchmarks/*.py landscape_utils/*/*.py)
	OMP_NUM_THREADS=1 $(PY) benchmarks/run_all.py $(BENCH_ARGS)

bench: outputs/bench/results.json ## benchmarks against baselines, one run -> outputs/bench/results.json (BENCH_ARGS=--quick)

clean: ## remove the studies' outputs (keeps the environment, the run cache and the unit cache)
	rm -rf outputs/bench outputs/smoke outputs/full outputs/lab

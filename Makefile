# grain_pl: every target sets up .venv by itself first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --constraint constraints.txt
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test lint bench clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): setup.cfg constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e '.[dev]'
	$(BIN)/python -m grain_pl.weights.lpips_alexnet  # LPIPS's AlexNet offline (no-op once cached)
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install grain_pl with its pins (torch 2.14.1, torchvision 0.29.1)

test: $(STAMP)  ## run the test suite (CPU, no downloads)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff over src/, tests/ and benchmarks/
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)  ## forward/training-step time and peak memory at the paper preset (1024 px, fp32, CPU)
	$(BIN)/python benchmarks/bench_network.py $(BENCH_ARGS)

clean:  ## remove the virtual env and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info

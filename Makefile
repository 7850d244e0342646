# grain_pl: every target sets up .venv by itself first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --constraint constraints.txt
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast lint bench bench-codec bench-demo bench-stages clean train train-prior train-stage1 train-stage2 train-stage3 train-final

# Training settings (override on the command line: make train-stage1 DATA=conf/data/cat_256.yaml DEVICES=2).
# A stage whose runs/<stage>/checkpoints holds an earlier run is refused: RESUME=.../last.ckpt goes on with it,
# START_OVER=1 moves the folder aside (runs/<stage>/checkpoints.previous-<time>) and starts a new run.
DATA      ?= conf/data/celebahq_1024.yaml
OVERLAY   ?=
PRESET    ?=
PRIOR     ?=
DEVICES   ?= auto
NODES     ?= 1
STRATEGY  ?= auto
PRECISION ?= 32-true
RESUME    ?=
START_OVER ?=
FIT_ARGS  ?=
# $(1): the stage's config file in conf/; later configs override earlier ones.
grain_fit = $(BIN)/grain fit --config conf/trainer.yaml --config conf/stages/$(1).yaml --config $(DATA) \
	$(if $(2),$(if $(OVERLAY),--config $(OVERLAY))) $(if $(2),$(if $(PRESET),--model.init_args.network $(PRESET))) \
	$(if $(2),$(if $(PRIOR),--model.init_args.prior_path $(PRIOR))) \
	--trainer.devices $(DEVICES) --trainer.num_nodes $(NODES) --trainer.strategy $(STRATEGY) \
	--trainer.precision $(PRECISION) $(if $(RESUME),--ckpt_path $(RESUME)) $(if $(START_OVER),--start_over) $(FIT_ARGS)

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): setup.cfg constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e '.[dev,faces]'
	$(BIN)/grain setup-lpips  # LPIPS's AlexNet offline (no-op once cached)
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install grain_pl with its pins (torch 2.14.1, torchvision 0.29.1)

# e.g. make demo DEMO_ARGS="--scale 2" (twice the iterations), DEMO_ARGS="--seed 1", DEMO_ARGS="--minutes 60" (cap)
DEMO_ARGS ?=
demo: $(STAMP)  ## the embedded default: train the whole chain on scikit-image photos for fixed iterations, evaluate (runs/demo)
	$(BIN)/grain demo --output runs/demo $(DEMO_ARGS)

test: $(STAMP)  ## run the test suite (CPU, no downloads)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the suite without the tests marked slow (subprocesses, DDP, the demo chain)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff over src/, tests/ and benchmarks/
	$(BIN)/ruff check src tests benchmarks

# e.g. make bench BENCH_ARGS="--cases forward:whole train:stage1" (the per-module cases),
# BENCH_ARGS="--cases stage1:baseline stage1:lean stage1:baseline@loaded stage1:lean@loaded" (a busy process alongside)
BENCH_ARGS ?= --cases decode:baseline decode:fast stage1:baseline stage1:lean stage3:baseline stage3:lean \
	final:baseline final:lean --rounds 1 --repeats 1
bench: $(STAMP)  ## paper preset (1024 px, fp32, CPU), today's code vs now: decode, stage 1/2/3/final steps; time, peak, ratios
	$(BIN)/python benchmarks/bench_network.py $(BENCH_ARGS)

bench-codec: $(STAMP)  ## encode/decode latency and peak memory (paper preset at 1024, demo preset)
	$(BIN)/python benchmarks/bench_codec.py

bench-demo: $(STAMP)  ## the demo's training throughput per stage: today's settings vs each CPU speed option, as ratios
	$(BIN)/python benchmarks/bench_demo.py $(BENCH_DEMO_ARGS)

bench-stages: $(STAMP)  ## training-step time per stage (tiny and 256-px presets) and the final stage's memory
	$(BIN)/python benchmarks/bench_stages.py --preset tiny-64-lr8 --iterations 8
	$(BIN)/python benchmarks/bench_stages.py --preset cat-256-lr16 --iterations 4
	$(BIN)/python benchmarks/bench_stages.py --preset cat-256-lr16 --stages stage3 --iterations 3 --frozen-grad both
	$(BIN)/python benchmarks/bench_stages.py --preset paper-1024-lr16 --stages final --iterations 2 --checkpointing both

train-prior: $(STAMP)  ## optional: train a StyleGAN2 prior on DATA (exports runs/prior/stylegan2.pt)
	$(call grain_fit,prior,)

train-stage1: $(STAMP)  ## stage 1: encoder + decoder (runs/stage1)
	$(call grain_fit,stage1,grain)

train-stage2: $(STAMP)  ## stage 2: latent codes, from runs/stage1/checkpoints/last.ckpt (needs PRIOR or conf's prior_path)
	$(call grain_fit,stage2,grain)

train-stage3: $(STAMP)  ## stage 3: fusion, from runs/stage2/checkpoints/last.ckpt
	$(call grain_fit,stage3,grain)

train-final: $(STAMP)  ## final stage: end to end, from runs/stage3; exports runs/final/grain.safetensors
	$(call grain_fit,final,grain)

train: train-stage1 train-stage2 train-stage3 train-final  ## all GRAIN stages in order

clean:  ## remove the virtual env and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info

# vistr-lit: every command a user or CI needs. `make help` lists them.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install train test test-slow lint format ablations ablations-cpu paper-small-start bench data clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)  ## create .venv and install vistr-lit with its dev tools

# The quickstart as 2 DDP processes of 1 thread, batch 12 each: the preset's global batches of 24 clips, its
# 2,100 optimizer steps (50 epochs) and its schedule, ~1.3x the steps a minute of one 2-thread process.
# More overrides: make train ARGS="seed=1".
QUICKSTART_DDP := trainer=ddp trainer.accelerator=cpu trainer.devices=2 num_threads=1 \
	data.batch_size=12 data.num_workers=0

train: $(STAMP)  ## train the quickstart model on synthvis (generated on first use) on both cores, then evaluate it
	$(PY) -m vistr_lit.train +experiment=quickstart $(QUICKSTART_DDP) $(ARGS)

test: $(STAMP)  ## the default test suite (< 10 min on 2 CPU cores)
	$(PY) -m pytest -q

test-slow: $(STAMP)  ## only the slow tests
	$(PY) -m pytest -q -m slow

lint: $(STAMP)  ## ruff check and format check
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

format: $(STAMP)  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix src tests scripts
	$(VENV)/bin/ruff format src tests scripts

data: $(STAMP)  ## generate the synthvis dataset and check it
	$(PY) -m vistr_lit.data.synthetic --out data/synthvis
	$(PY) -m vistr_lit.data.check --root data/synthvis/train/JPEGImages --ann data/synthvis/train.json

# The paper-size sweep on every visible GPU. DDP by spawned processes: Lightning's re-executing `ddp` would
# start the whole --multirun again in every rank.
GPU_DDP := trainer=gpu ++trainer.strategy=ddp_spawn trainer.devices=-1

ablations: $(STAMP)  ## the paper's ablations (R50, T = 36) x 2 seeds on the visible GPUs (DDP), then the table
	@$(PY) scripts/require_gpu.py "make ablations" "make ablations-cpu"
	$(PY) -m vistr_lit.train --multirun '+experiment=glob(ablate_*)' seed=1,2 $(GPU_DDP)
	$(PY) scripts/ablation_table.py multirun

PAPER_SMALL_START := outputs/starts/paper_small/checkpoints/last.ckpt

paper-small-start: $(PAPER_SMALL_START)  ## the start of preset=paper_small (as the paper's COCO DETR), once

$(PAPER_SMALL_START): $(STAMP)
	$(PY) -m vistr_lit.train +experiment=paper_small_start hydra.run.dir=outputs/starts/paper_small

ablations-cpu: $(STAMP) $(PAPER_SMALL_START)  ## the paper-shaped CPU table: baseline + 4 ablations x 3 seeds at preset=paper_small
	$(PY) -m vistr_lit.train --multirun '+experiment=glob(ablate_*)' preset=paper_small seed=1,2,3
	$(PY) scripts/ablation_table.py multirun

bench: $(STAMP)  ## all benchmarks (CPU); the measured figures are in docs/benchmarks.md
	$(PY) scripts/bench_data.py
	$(PY) scripts/bench_model.py
	$(PY) scripts/bench_matcher.py
	$(PY) scripts/bench_eval.py
	$(PY) scripts/bench_infer.py
	$(PY) scripts/bench_train_step.py

clean:  ## remove caches and run outputs (keeps .venv and data/)
	rm -rf outputs multirun .pytest_cache .ruff_cache wandb lightning_logs

# harness: `make eval` runs the whole job, `make test` the test suite; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# GPU=1 installs the CUDA stack (vllm + CUDA torch); default: detected with nvidia-smi.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
ifeq ($(GPU),1)
  LOCK := requirements/gpu.txt
  PIP_INSTALL := $(BIN)/pip install -r $(LOCK)
else
  LOCK := requirements/cpu.lock
  PIP_INSTALL := $(BIN)/pip install --no-deps -r $(LOCK)
endif
STAMP := $(VENV)/.installed-gpu$(GPU)
TINY := models/weights/tiny-l/harness-tiny.json
CONFIG ?= configs/default.yaml

.PHONY: install test lint format eval bench clean

install: $(STAMP) $(TINY)

$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL)
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

$(TINY): $(STAMP) harness/models/tiny.py models/tiny/corpus.txt
	$(BIN)/harness models build-tiny

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

eval: install
	$(BIN)/harness eval -c $(CONFIG)

BENCH_CONFIG ?= configs/bench.yaml
bench: install
	$(BIN)/harness bench -c $(BENCH_CONFIG)

clean:
	rm -rf runs .cache models/weights .pytest_cache .ruff_cache

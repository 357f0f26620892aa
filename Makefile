# The two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned here (the CPU build lies on this machine's disk); pyproject keeps a wide range.
TORCH := torch==2.13.0

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip byte-compiles every file it installs (most of the install's minute, for torch); only what
# aehg imports is compiled here, by importing it once (PYTHONDONTWRITEBYTECODE is emptied so that
# this import writes the caches, as pip would have).
WARM := import aehg, aehg.data, aehg.decoding, aehg.engine, aehg.evaluation, aehg.inference, \
	aehg.models, aehg.export, aehg.cli, aehg.visualize, torch.export, torch.distributed, \
	pytest, hypothesis, onnx, onnxruntime, h5py

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --no-compile $(TORCH)
	$(BIN)/python -m pip install -q --no-compile -e '.[dev]'
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -c "$(WARM)"
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check aehg tools tests benchmarks

# Synthetic data, two small models trained on the CPU, evaluation, pictures and graphs.
demo: $(STAMP)
	$(BIN)/python tools/demo.py --out outputs/demo

# pytest exits 5 when it collects no test; make treats any non-zero exit as failure.
test: $(STAMP) lint
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

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

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
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

# Two commands do all the set-up: `make search` and `make test` create .venv, install tabslim
# with the pinned versions in constraints.txt, and run. Both are idempotent: the install step
# reruns only when pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install search train test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "tabslim needs Python 3.10 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and alone: pinned to 2.13.0 so pip takes the local CPU build here (CUDA on GPU nodes).
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

search: $(STAMP)
	$(BIN)/tabslim search --config configs/default.yaml

train: $(STAMP)
	$(BIN)/tabslim train --config configs/default.yaml

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check search lightning_modules pruning tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/train_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# genbench — every target creates .venv on first use and reuses it afterwards.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Tests run on the CPU with W&B offline; no network is needed.
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: install test test-all lecture bench bench-quick lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

lecture: $(STAMP)
	$(BIN)/genbench-lecture

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf outputs multirun wandb .pytest_cache

# `make demo` and `make test` each set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow test-all lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned, so that no resolver pulls a CUDA build onto a CPU machine
	$(PY) -m pip install -q "torch==2.13.0" -c constraints.txt
	$(PY) -m pip install -q -e ".[dev,demo]" -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kept demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not gpu" -n 2

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow" || [ $$? -eq 5 ]

test-all: test test-slow

# ruff (lint + format) over the code, mypy over the four packages (settings in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check kg masking fusion kept tests benchmarks
	$(VENV)/bin/ruff format --check kg masking fusion kept tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	for f in benchmarks/*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache

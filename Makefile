# Quick start:  make demo       (sample data -> proposals -> train -> detect -> evaluate)
#               make test       (lint, format check, types, then the whole test suite; CI runs exactly this)
#               make test-fast  (lint + types + the tests not marked slow: the tier to run while editing)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sppdet-installed
# torch/torchvision versions served from this machine's disk; any torch>=2.3 works.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install lint test test-fast demo benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q $(TORCH_PIN) || $(PY) -m pip install -q "torch>=2.3" "torchvision>=0.18"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# ruff (lint + format check) and mypy before the tests: a style or type error fails CI fast.
lint: $(STAMP)
	$(PY) -m ruff check sppdet tools tests
	$(PY) -m ruff format --check sppdet tools tests
	$(PY) -m mypy

test: lint
	$(PY) -m pytest tests

test-fast: lint
	$(PY) -m pytest tests -m "not slow"

demo: $(STAMP)
	$(PY) tools/demo.py

benchmark: $(STAMP)
	$(PY) tools/benchmark.py all --out output/benchmark.json

clean:
	rm -rf output data/sample

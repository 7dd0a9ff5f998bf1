# Quick start:  make demo   (sample data -> proposals -> train -> detect -> evaluate)
#               make test   (the test suite; CI runs exactly this)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sppdet-installed
# torch/torchvision versions served from this machine's disk; any torch>=2.3 works.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install test demo benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q $(TORCH_PIN) || $(PY) -m pip install -q "torch>=2.3" "torchvision>=0.18"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	$(PY) tools/demo.py

benchmark: $(STAMP)
	$(PY) tools/benchmark.py all --out output/benchmark.json

clean:
	rm -rf output data/sample

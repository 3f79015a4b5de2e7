# `make run` sets up (first time only) and opens the app; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed only when missing. On PyPI this pin is the CUDA build on Linux and the
# MPS build on macOS; a torch you installed yourself (any build) is kept.
TORCH ?= torch==2.13.0

.PHONY: setup run test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "C2C Playground needs Python >= 3.10"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

run: setup
	$(VENV)/bin/c2c-playground $(ARGS)

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/modes.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

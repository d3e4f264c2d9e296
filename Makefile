# The two commands of a fresh machine: `make demo` and `make test`.
# Each creates its virtual environment and installs what it needs (offline but for the package
# registries). verl lives in a venv of its own (.venv-verl): it pins other versions of shared
# dependencies (transformers, antlr), and the core must never need it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VERL_VENV := .venv-verl
VERL_PY := $(VERL_VENV)/bin/python
VERL_STAMP := $(VERL_VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

$(VERL_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install --quiet --upgrade pip
	$(VERL_PY) -m pip install --quiet torch==2.13.0 -e ".[verl,test]"
	touch $(VERL_STAMP)

.PHONY: install demo test test-core test-verl bench
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bae demo

test: test-core test-verl

test-core: $(STAMP)
	$(PY) -m pytest -q

test-verl: $(VERL_STAMP)
	$(VERL_PY) -m pytest -q tests_verl

bench: $(STAMP)
	$(PY) benchmarks/advantages.py

# The two commands of a fresh machine: `make demo` and `make test`.
# Each creates its virtual environment and installs what it needs (offline but for the package
# registries). verl lives in a venv of its own (.venv-verl): it pins other versions of shared
# dependencies (antlr, packaging), and the core must never need it.
# Both install the exact versions CI tests, from constraints.txt and constraints-verl.txt;
# pyproject.toml holds only the ranges bae works with. Another interpreter:
# `PYTHON=python3.12 make test` (CI tests 3.11; the verl venv needs < 3.13).
PYTHON ?= python3
CONSTRAINTS := constraints.txt
VERL_CONSTRAINTS := constraints-verl.txt
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VERL_VENV := .venv-verl
VERL_PY := $(VERL_VENV)/bin/python
VERL_STAMP := $(VERL_VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test]"
	touch $(STAMP)

$(VERL_STAMP): pyproject.toml $(VERL_CONSTRAINTS)
	$(PYTHON) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install --quiet -c $(VERL_CONSTRAINTS) --upgrade pip
	$(VERL_PY) -m pip install --quiet -c $(VERL_CONSTRAINTS) -e ".[verl,test]"
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

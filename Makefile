# Every target sets up .venv itself: on a fresh clone `make test` is the only command needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint venv clean

# Reinstalled (and the C extensions rebuilt) whenever the project metadata or a C source changes.
$(STAMP): pyproject.toml setup.py cdc/pgoutput/_speedups.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m compileall -q cdc catalog derivers  # byte-code even under PYTHONDONTWRITEBYTECODE
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/cdc demo

# The whole suite on each implementation of the pgoutput decoder (cdc/pgoutput/decoder.py, CDC_IMPL),
# both at once (TEST_SERIAL=1: one after the other); see tests/run_both_impls.py.
test: $(STAMP) lint
	$(BIN)/python tests/run_both_impls.py

lint: $(STAMP)
	$(BIN)/ruff check cdc derivers catalog tests bench
	$(BIN)/ruff format --check cdc derivers catalog tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.suite

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
	find cdc catalog derivers -name '*.so' -delete  # the extensions built in place

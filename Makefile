# stddaq entry points. `make demo` runs the main job, `make test` the test suite;
# both set up everything they need on a fresh machine (uv, the virtual environment,
# generated code, and - as root - the Debian packages the tests use).

SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := 3.11
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_QUICK ?=

.PHONY: help setup system-deps proto docs lint test test-fast bench demo clean

help:
	@echo "make demo       run the demo (main job)"
	@echo "make test       lint + the whole test suite (sets everything up first)"
	@echo "make bench      all benchmarks (BENCH_QUICK=1 for the short mode)"
	@echo "make lint       ruff + mypy on libs/ and services/"
	@echo "make proto      regenerate the protobuf code from protos/"
	@echo "make docs       regenerate docs/config-schema.json, docs/config.md, docs/openapi.json"

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

$(VENV)/.synced: pyproject.toml uv.lock libs/*/pyproject.toml services/*/pyproject.toml | $(UV)
	$(UV) sync --all-packages --locked
	@touch $@

setup: $(VENV)/.synced

# Debian packages used by tests (real InfluxDB, promtool, h5dump). Installed only as root.
system-deps:
	@bash scripts/install-system-deps.sh

proto: setup
	bash scripts/gen_proto.sh

docs: setup
	$(VENV)/bin/stddaq config schema > docs/config-schema.json
	$(VENV)/bin/stddaq config docs > docs/config.md
	@if [ -f scripts/gen_openapi.py ]; then $(PY) scripts/gen_openapi.py > docs/openapi.json; fi

lint: setup
	$(VENV)/bin/ruff check libs services tests bench scripts
	$(VENV)/bin/mypy libs/stddaq_common/src $(wildcard services/*/src)

test: setup system-deps lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/pytest -x -q $(PYTEST_ARGS)

bench: setup
	BENCH_QUICK=$(BENCH_QUICK) $(PY) -m bench.run

demo: setup
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench-results.json

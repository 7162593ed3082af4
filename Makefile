# fraudstream: the only commands a newcomer needs are `make demo` and `make test`.
# Every target creates .venv and installs the project (extras local,dev) when missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-unit test-integration test-e2e lint format bench stack-up stack-down lock clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is needed (PYTHON=$(PYTHON))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[local,dev]'
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the project with the local and dev extras

demo: $(STAMP) ## Start the local stack and run the whole pipeline, then show the results
	$(VENV)/bin/fraudstream demo

test: $(STAMP) ## Run the unit, integration and e2e tests
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## Unit tests only
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-integration: $(STAMP) ## Integration tests only (real Kafka + Redis)
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

test-e2e: $(STAMP) ## End-to-end tests only
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP) ## Apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

stack-up: $(STAMP) ## Start the local Kafka + Redis stack
	$(VENV)/bin/fraudstream stack up

stack-down: $(STAMP) ## Stop the local stack
	$(VENV)/bin/fraudstream stack down

lock: $(STAMP) ## Re-pin constraints.txt from the current .venv (after a tested upgrade)
	$(PY) -m pip freeze --exclude-editable | grep -v '^fraudstream' > constraints.txt

clean: ## Remove caches (not .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache

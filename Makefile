# lingua-scheduler: every developer and SRE task is one target here.
# `make run` and `make test` work on a fresh machine: they create .venv and install what they need.

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
CLI      := $(VENV)/bin/lingua-scheduler
STAMP    := $(VENV)/.installed
CONFIG   ?=
CONFIG_FLAG := $(if $(CONFIG),--config $(CONFIG),)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test check style types bench bench-lua ownership inbox dlq-list dlq-show dlq-replay dlq-purge nodes pools jobs audit config-doc clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its test tools

run: $(STAMP) ## start a scheduler (embedded Redis when none is configured)
	$(CLI) $(CONFIG_FLAG) serve

test: $(STAMP) ## lint, then the whole suite (unit, real Redis, Cluster, end to end)
	$(VENV)/bin/ruff check scheduler cross_instance tests
	$(PY) -m pytest $(PYTEST_ARGS)

check: style types test ## everything CI should be happy with

style: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check scheduler cross_instance tests
	$(VENV)/bin/ruff format --check scheduler cross_instance tests

types: $(STAMP) ## mypy
	$(VENV)/bin/mypy

bench: bench-lua ## all benchmarks (figures go to docs/benchmarks.md)

bench-lua: $(STAMP) ## scheduling decisions per second vs pool size, next to the raw EVALSHA ceiling
	$(PY) -m tests.bench.bench_lua

config-doc: $(STAMP) ## regenerate docs/configuration.md from the config type
	$(CLI) config doc > docs/configuration.md

nodes: $(STAMP) ## registered nodes (JSON with ARGS=--json)
	$(CLI) $(CONFIG_FLAG) nodes $(ARGS)

pools: $(STAMP) ## language-pair pools and their nodes
	$(CLI) $(CONFIG_FLAG) pools $(ARGS)

jobs: $(STAMP) ## active jobs and their deadlines
	$(CLI) $(CONFIG_FLAG) jobs $(ARGS)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

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
.PHONY: help install run test check style types bench bench-lua bench-runtime bench-e2e ownership inbox dlq-list dlq-show dlq-replay dlq-purge drain nodes pools jobs audit config-doc clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its test tools

run: $(STAMP) ## start a scheduler (embedded Redis when none is configured)
	$(CLI) $(CONFIG_FLAG) serve

test: $(STAMP) ## lint and type-check, then the whole suite (unit, real Redis, Cluster, end to end)
	$(VENV)/bin/ruff check scheduler cross_instance tests
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

check: style types test ## everything CI should be happy with

style: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check scheduler cross_instance tests
	$(VENV)/bin/ruff format --check scheduler cross_instance tests

types: $(STAMP) ## mypy
	$(VENV)/bin/mypy

bench: bench-lua bench-runtime bench-e2e ## all benchmarks (figures go to docs/benchmarks.md)

bench-lua: $(STAMP) ## scheduling decisions per second vs pool size, next to the raw EVALSHA ceiling
	$(PY) -m tests.bench.bench_lua

bench-runtime: $(STAMP) ## cross-instance messages/s and latency (local, remote) vs raw XADD/XREADGROUP/XACK
	$(PY) -m tests.bench.bench_runtime

bench-e2e: $(STAMP) ## utterance dispatch/relay latency through real replicas (1 and 2) vs a bare WS round trip
	$(PY) -m tests.bench.bench_e2e

config-doc: $(STAMP) ## regenerate docs/configuration.md from the config type
	$(CLI) config doc > docs/configuration.md

nodes: $(STAMP) ## registered nodes (JSON with ARGS=--json)
	$(CLI) $(CONFIG_FLAG) nodes $(ARGS)

pools: $(STAMP) ## language-pair pools and their nodes
	$(CLI) $(CONFIG_FLAG) pools $(ARGS)

jobs: $(STAMP) ## active jobs and their deadlines
	$(CLI) $(CONFIG_FLAG) jobs $(ARGS)

ownership: $(STAMP) ## replicas, what each owns, orphans (ARGS=--full / --json)
	$(CLI) $(CONFIG_FLAG) ownership $(ARGS)

inbox: $(STAMP) ## per replica inbox: length, pending, oldest pending age, lag
	$(CLI) $(CONFIG_FLAG) inbox $(ARGS)

dlq-list: $(STAMP) ## dead letters, oldest first (ARGS=--reason no_owner --target node:X --older-than 15m)
	$(CLI) $(CONFIG_FLAG) dlq list $(ARGS)

dlq-show: $(STAMP) ## one dead letter in full: make dlq-show ID=<entry or message id>
	@test -n "$(ID)" || { echo "usage: make dlq-show ID=<entry or message id>"; exit 2; }
	$(CLI) $(CONFIG_FLAG) dlq show $(ID) $(ARGS)

dlq-replay: $(STAMP) ## send dead letters again: [ID="a b"] (default all) [TO=<instance>] [ARGS=--dry-run]
	$(CLI) $(CONFIG_FLAG) dlq replay $(if $(ID),$(ID),--all) $(if $(TO),--to $(TO),) $(ARGS)

dlq-purge: $(STAMP) ## delete dead letters for good: [ID="a b"] (default all); needs CONFIRM=1
	@test "$(CONFIRM)" = 1 || { echo "dlq-purge deletes for good: add CONFIRM=1 (or ARGS=--dry-run)"; \
		case "$(ARGS)" in *--dry-run*) ;; *) exit 2;; esac; }
	$(CLI) $(CONFIG_FLAG) dlq purge $(if $(ID),$(ID),--all) $(if $(filter 1,$(CONFIRM)),--yes,) $(ARGS)

drain: $(STAMP) ## ask a replica to drain and exit: make drain INSTANCE=<id>
	@test -n "$(INSTANCE)" || { echo "usage: make drain INSTANCE=<instance id>"; exit 2; }
	$(CLI) $(CONFIG_FLAG) drain $(INSTANCE) $(ARGS)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

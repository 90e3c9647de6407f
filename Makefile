# SigVerify: `make run` and `make test` set everything up from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_OUT := services/proto

.PHONY: setup run test faults bench proto proto-check lint clean stack-down

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-eval.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -r requirements-eval.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# Generated code is committed; `proto` regenerates it, `proto-check` fails on drift.
proto: setup
	bash deploy/gen-proto.sh $(BIN)/python $(PROTO_OUT)

proto-check: setup
	bash deploy/gen-proto.sh $(BIN)/python $$(mktemp -d) --check $(PROTO_OUT)

run: setup
	$(BIN)/sigverify demo

test: setup proto-check
	$(BIN)/python -m pytest -q

# The long fault-injection and scale variants (tests marked `long`), outside the CI budget.
faults: setup
	$(BIN)/python -m pytest -q -m long tests

bench: setup
	$(BIN)/sigverify bench

lint: setup
	$(BIN)/ruff check services tests
	$(BIN)/mypy services/common services/intake services/matching services/dedupe services/tally services/cli

stack-down:
	$(BIN)/sigverify stack down

clean:
	-$(BIN)/sigverify stack down
	rm -rf .sigverify

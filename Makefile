# The one entry point: make install | generate | run | demo | test | lint | bench (| fuzz, mk/fuzz.mk)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BUF := npx --yes @bufbuild/buf@1.75.0
PROTOS := $(wildcard protos/longread/v1/*.proto)
PYGEN := client/python

TOOLS := $(abspath .tools)
GRPCURL_VERSION := v1.9.4

# Parts of the build kept in their own files (e.g. mk/clients.mk for the Go/TS/Java clients);
# each may add targets to TEST_EXTRA (run by `make test`) and GENERATE_EXTRA (`make generate`).
TEST_EXTRA :=
GENERATE_EXTRA :=
-include mk/*.mk

.PHONY: install tools generate check-generated run demo sandbox test pytest lint bench clean

# The gateway and, beside it, the Python client (client/python) it depends on and the vendor
# emulator (sandbox/) the dev extra names, each a distribution of its own: one pip command, so
# both resolve to this repository's copies, all editable.
$(VENV)/.installed: pyproject.toml client/python/pyproject.toml sandbox/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./client/python -e ./sandbox -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Third-party gRPC tools the tests use against the running server.
$(TOOLS)/grpcurl:
	GOBIN=$(TOOLS) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

tools: $(TOOLS)/grpcurl $(TOOLS)/.ghz-$(GHZ_VERSION)

generate: install
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m grpc_tools.protoc -Iprotos \
	  --python_out=$(PYGEN) --grpc_python_out=$(PYGEN) --mypy_out=$(PYGEN) --mypy_grpc_out=$(PYGEN) \
	  --connectrpc_out=$(PYGEN) --connectrpc_opt=protobuf=google \
	  $(PROTOS)
	$(if $(GENERATE_EXTRA),$(MAKE) $(GENERATE_EXTRA))

# Fails when the committed stubs differ from what `make generate` writes.
check-generated: generate
	git diff --exit-code -- client/python/longread/v1

run: install
	$(VENV)/bin/longread serve

demo: install
	$(PY) -m longread_sandbox.demo

sandbox: install
	$(VENV)/bin/longread sandbox

# Everything CI checks: generated code is current, lint is clean, every test passes.
test: install tools check-generated lint pytest $(TEST_EXTRA)

pytest: install tools
	PATH=$(TOOLS):$$PATH $(VENV)/bin/pytest -q

# The contract must stay compatible with v1 as first published (the repository's first
# commit): buf's FILE rules, the strictest, since Go, Java and TS code is generated from it.
BUF_AGAINST ?= .git\#ref=$(shell git rev-list --max-parents=0 HEAD 2>/dev/null | tail -n 1)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(BUF) lint
	$(BUF) format -d --exit-code
	$(BUF) breaking --against '$(BUF_AGAINST)'

# Each public bench/ module is one benchmark printing one JSON object; _private ones are helpers.
bench: install tools
	$(PY) -m pip install -q -e ./client/python -e ./sandbox -e '.[dev,bench]'
	for b in $$(cd bench && ls *.py | grep -v '^_' | sed 's/\.py$$//'); do \
	  echo "== bench.$$b" >&2; $(PY) -m bench.$$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

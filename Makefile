# The commands people type. Everything runs through uv: one workspace, one lockfile.
export UV_PYTHON_DOWNLOADS := never
export LITELLM_LOCAL_MODEL_COST_MAP := True
UV ?= uv
PYTEST_ARGS ?=
PROTO_FILES := $(sort $(shell find proto -name "*.proto"))

.PHONY: help setup run test up proto proto-check bench

help:
	@echo "make run          set up and run every service in one process on embedded defaults (gateway on :8000)"
	@echo "make test         set up and run the whole test suite"
	@echo "make up           split mode: every service in its own process on PostgreSQL, Redis and RabbitMQ"
	@echo "make proto        regenerate libs/protos from proto/"
	@echo "make bench        run the benchmarks (results go in BENCHMARKS.md by hand)"

setup:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet "uv>=0.13,<0.14"
	$(UV) sync --frozen

run: setup
	$(UV) run --frozen agentry dev

test: setup
	$(UV) run --frozen pytest $(PYTEST_ARGS)

up: setup
	$(UV) run --frozen agentry up

proto:
	$(UV) run --frozen python -m grpc_tools.protoc -Iproto \
	  --python_out=libs/protos/src --grpc_python_out=libs/protos/src --pyi_out=libs/protos/src \
	  $(PROTO_FILES)
	@find libs/protos/src/agentry/api -type d -exec sh -c 'test -f "$$0/__init__.py" || : > "$$0/__init__.py"' {} \;

proto-check: proto
	@git diff --exit-code -- libs/protos || (echo "libs/protos is out of date: run 'make proto' and commit" && exit 1)
	@test -z "$$(git status --porcelain -- libs/protos)" || (git status --porcelain -- libs/protos; echo "untracked generated files: run 'make proto' and commit" && exit 1)

bench: setup
	$(UV) run --frozen python bench/ttft.py --mode both
	$(UV) run --frozen python bench/agentpress_processor.py
	$(UV) run --frozen python bench/durable.py --stops 50 --kills 20 --leases 10,3

# The commands people type. Everything runs through uv: one workspace, one lockfile.
export UV_PYTHON_DOWNLOADS := never
export LITELLM_LOCAL_MODEL_COST_MAP := True
# uv from PATH, else the project-local one `make setup` bootstraps (scripts/bootstrap-uv.sh).
UV ?= $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/uv/bin/uv)
PORT ?= 8000
PYTEST_ARGS ?=
# Test files run in parallel, each whole in one worker (module fixtures are shared): most tests
# wait on servers and subprocesses, so two workers fit two cores. PYTEST_WORKERS=0 runs serially.
# Tests marked `serial` (worker kills, server restarts: they measure recovery against deadlines)
# run afterwards, alone.
PYTEST_WORKERS ?= 2
PROTO_FILES := $(sort $(shell find proto -name "*.proto"))

.PHONY: help setup run test up proto proto-check bench images lint fmt fmt-check

help:
	@echo "make setup        install uv if needed (into .tools/, never into the system Python) and the workspace"
	@echo "make run          set up and run every service in one process on embedded defaults (gateway on :8000; PORT=8001 for another)"
	@echo "make test         set up and run the whole test suite"
	@echo "make lint         ruff check, pyright (basedpyright, standard mode) and import-linter's architecture contracts"
	@echo "make fmt          sort imports and format the code with ruff (fmt-check: only check)"
	@echo "make up           split mode: every service in its own process on PostgreSQL, Redis and RabbitMQ"
	@echo "make proto        regenerate libs/protos from proto/"
	@echo "make bench        run the benchmarks (results go in BENCHMARKS.md by hand)"
	@echo "make images       build every service's container image (needs docker or podman; see docs/deploy.md)"

# Bytecode is compiled at install, as in the image (Dockerfile): where PYTHONDONTWRITEBYTECODE is
# set, every process would otherwise compile each module it imports from source at every start
# and keep ~5-10 MB more RSS for it (BENCHMARKS.md, idle RSS).
setup:
	@UV="$(UV)" sh scripts/bootstrap-uv.sh >/dev/null
	$(UV) sync --frozen --compile-bytecode
	@$(UV) run --frozen python -m compileall -q -j 0 src libs/*/src services/*/src >/dev/null

run: setup
	$(UV) run --frozen agentry dev --port $(PORT)

test: setup
	$(UV) run --frozen pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) -m "not serial" $(PYTEST_ARGS)
	$(UV) run --frozen pytest -m serial $(PYTEST_ARGS)

# Static checks CI runs before the tests (config in pyproject.toml: [tool.ruff], [tool.pyright], [tool.importlinter]).
lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen basedpyright --project pyproject.toml
	$(UV) run --frozen lint-imports

fmt: setup
	$(UV) run --frozen ruff check --select I --fix .
	$(UV) run --frozen ruff format .

fmt-check: setup
	$(UV) run --frozen ruff format --check .

up: setup
	$(UV) run --frozen agentry up --port $(PORT)

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

# Container images: one Dockerfile target per service, tagged $(IMAGE_PREFIX)agentry-<target>:$(IMAGE_TAG).
# Each is then started with --help as its non-root user on a read-only root filesystem.
CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
IMAGE_PREFIX ?=
IMAGE_TAG ?= dev
IMAGE_TARGETS := gateway auth billing sandbox runner-api runner-worker fake-llm
# Set to the vetted base, pinned by digest; the Dockerfile's default is a placeholder.
PYTHON_IMAGE ?=

images:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make images needs a container engine (docker or podman)"; exit 1; }
	@test -n "$(PYTHON_IMAGE)" || { echo "set PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:<digest> (docs/deploy.md)"; exit 1; }
	@for target in $(IMAGE_TARGETS); do \
	  echo "== $(IMAGE_PREFIX)agentry-$$target:$(IMAGE_TAG)"; \
	  $(CONTAINER_ENGINE) build --target $$target --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
	    -t $(IMAGE_PREFIX)agentry-$$target:$(IMAGE_TAG) . || exit 1; \
	  test "$$($(CONTAINER_ENGINE) image inspect -f '{{.Config.User}}' $(IMAGE_PREFIX)agentry-$$target:$(IMAGE_TAG))" = "10001:10001" \
	    || { echo "agentry-$$target does not run as 10001"; exit 1; }; \
	  $(CONTAINER_ENGINE) run --rm --read-only --cap-drop ALL --security-opt no-new-privileges \
	    $(IMAGE_PREFIX)agentry-$$target:$(IMAGE_TAG) --help >/dev/null || exit 1; \
	done

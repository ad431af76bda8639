# The commands people type. Everything runs through uv in one workspace, one lockfile.
export UV_PYTHON_DOWNLOADS := never
export LITELLM_LOCAL_MODEL_COST_MAP := True
UV ?= uv
PROTO_FILES := $(sort $(shell find proto -name "*.proto"))

.PHONY: setup run test up proto proto-check bench lint

setup:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet "uv>=0.13,<0.14"
	$(UV) sync --frozen

proto:
	$(UV) run --frozen python -m grpc_tools.protoc -Iproto \
	  --python_out=libs/protos/src --grpc_python_out=libs/protos/src --pyi_out=libs/protos/src \
	  $(PROTO_FILES)
	@find libs/protos/src/agentry/api -type d -exec sh -c 'test -f "$$0/__init__.py" || : > "$$0/__init__.py"' {} \;

proto-check: proto
	@git diff --exit-code -- libs/protos || (echo "libs/protos is out of date: run 'make proto' and commit" && exit 1)
	@test -z "$$(git status --porcelain -- libs/protos)" || (git status --porcelain -- libs/protos; echo "untracked generated files: run 'make proto' and commit" && exit 1)

# syntax=docker/dockerfile:1.7
# One image per service, all from this file: `make images` builds each target as agentry-<target>.
#   targets: gateway auth billing sandbox runner-api runner-worker (and fake-llm, the scripted
#   offline model the dev overlay runs when no provider key is set)
# The base is pinned by digest. Replace the placeholder below (or pass PYTHON_IMAGE) with the digest
# you vetted: docker buildx imagetools inspect docker.io/library/python:3.11-slim-bookworm
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:0000000000000000000000000000000000000000000000000000000000000000

# ---- build: uv installs each service's locked dependencies into its own virtualenv ----------
FROM ${PYTHON_IMAGE} AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 UV_PROJECT_ENVIRONMENT=/opt/agentry/venv
# uv's cache (a cache mount, kept between builds) would reuse an earlier build of a workspace
# package whose pyproject.toml did not change, code changes or not: always rebuild ours.
ENV REBUILD_WORKSPACE="--reinstall-package agentry-protos --reinstall-package agentry-servicekit \
    --reinstall-package agentpress --reinstall-package agentry-fakellm --reinstall-package agentry-auth \
    --reinstall-package agentry-billing --reinstall-package agentry-sandbox --reinstall-package agentry-runner \
    --reinstall-package agentry-gateway"
RUN pip install --no-cache-dir "uv>=0.13,<0.14"
WORKDIR /src
COPY . .

FROM build AS build-gateway
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package agentry-gateway $REBUILD_WORKSPACE
FROM build AS build-auth
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package agentry-auth $REBUILD_WORKSPACE
FROM build AS build-billing
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package agentry-billing $REBUILD_WORKSPACE
FROM build AS build-sandbox
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package agentry-sandbox $REBUILD_WORKSPACE
FROM build AS build-runner
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package agentry-runner $REBUILD_WORKSPACE
FROM build AS build-fake-llm
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package agentry-fakellm $REBUILD_WORKSPACE

# ---- runtime: no compiler, no uv, no pip; a non-root user; read-only root filesystem ---------
# Writable paths are volumes: /tmp (HOME too) and /var/lib/agentry (the working directory).
FROM ${PYTHON_IMAGE} AS runtime
RUN python -m pip uninstall --yes --quiet pip setuptools wheel 2>/dev/null; \
    groupadd --system --gid 10001 agentry \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin agentry \
    && mkdir -p /var/lib/agentry && chown 10001:10001 /var/lib/agentry
ENV PATH=/opt/agentry/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    LITELLM_LOCAL_MODEL_COST_MAP=True
WORKDIR /var/lib/agentry
USER 10001:10001
# SIGTERM starts each service's graceful shutdown (health NOT_SERVING, drain, hand back runs).
STOPSIGNAL SIGTERM

FROM runtime AS gateway
COPY --from=build-gateway /opt/agentry/venv /opt/agentry/venv
ENTRYPOINT ["python", "-m", "agentry.gateway"]

FROM runtime AS auth
COPY --from=build-auth /opt/agentry/venv /opt/agentry/venv
ENTRYPOINT ["python", "-m", "agentry.auth"]

FROM runtime AS billing
COPY --from=build-billing /opt/agentry/venv /opt/agentry/venv
ENTRYPOINT ["python", "-m", "agentry.billing"]

FROM runtime AS sandbox
# The local provider isolates each command with bubblewrap (see deploy/k8s: the sandbox's pod is
# the one that may not use the RuntimeDefault seccomp profile).
USER root
RUN apt-get update && apt-get install --yes --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*
USER 10001:10001
COPY --from=build-sandbox /opt/agentry/venv /opt/agentry/venv
ENTRYPOINT ["python", "-m", "agentry.sandbox"]

FROM runtime AS runner-api
COPY --from=build-runner /opt/agentry/venv /opt/agentry/venv
ENV AGENTRY_RUNNER_ROLE=api
ENTRYPOINT ["python", "-m", "agentry.runner"]

FROM runtime AS runner-worker
COPY --from=build-runner /opt/agentry/venv /opt/agentry/venv
ENV AGENTRY_RUNNER_ROLE=worker
ENTRYPOINT ["python", "-m", "agentry.runner"]

FROM runtime AS fake-llm
COPY --from=build-fake-llm /opt/agentry/venv /opt/agentry/venv
ENTRYPOINT ["python", "-m", "agentry.fakellm"]

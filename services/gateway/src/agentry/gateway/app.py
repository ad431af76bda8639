"""Builds the FastAPI application; nothing is created at import time."""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from agentry.servicekit.eventstream import EventStream

from . import accounts_routes, api_keys, auth_routes, exec_routes, initiate, me_routes, thread_routes
from .billing_routes import router as billing_router
from .config import GatewaySettings
from .errors import install_error_handlers
from .metrics import HttpMetricsMiddleware
from .metrics import router as metrics_router
from .openapi import install_docs, operation_id
from .routes import router
from .sandbox_routes import router as sandbox_router
from .upstreams import Upstreams, open_upstreams

DESCRIPTION = """Threads, agent runs and their live event streams, sandboxes and their files.

Authenticate with `Authorization: Bearer <access token or API key>` (or `X-API-Key`); act for a
team account with `X-Account-Id`. Every error answers `{"error": {"code", "message", "fields"?}}`:
branch on `code`. Bad input is always **422** (the body, a query, path or header value), with
`fields` naming what was refused when the gateway can tell."""


def create_app(
    settings: GatewaySettings, *, upstreams: Upstreams | None = None, events: EventStream | None = None
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async with contextlib.AsyncExitStack() as stack:
            app.state.upstreams = upstreams or await open_upstreams(settings, stack, events=events)
            yield

    app = FastAPI(
        title="Agentry",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
        description=DESCRIPTION,
    )
    app.state.settings = settings
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    install_error_handlers(app)
    install_docs(app)
    app.add_middleware(HttpMetricsMiddleware)
    app.include_router(metrics_router)
    app.include_router(auth_routes.router)
    app.include_router(api_keys.router)
    app.include_router(accounts_routes.router)
    app.include_router(router)
    app.include_router(thread_routes.router)
    app.include_router(initiate.router)
    app.include_router(me_routes.router)
    app.include_router(exec_routes.router)
    app.include_router(sandbox_router)
    app.include_router(billing_router)
    return app

"""Builds the FastAPI application; nothing is created at import time."""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from agentry.servicekit.eventstream import EventStream

from . import accounts_routes, api_keys, auth_routes
from .config import GatewaySettings
from .errors import install_error_handlers
from .metrics import HttpMetricsMiddleware
from .metrics import router as metrics_router
from .routes import router
from .sandbox_routes import router as sandbox_router
from .upstreams import Upstreams, open_upstreams


def create_app(settings: GatewaySettings, *, upstreams: Upstreams | None = None,
               events: EventStream | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async with contextlib.AsyncExitStack() as stack:
            app.state.upstreams = upstreams or await open_upstreams(settings, stack, events=events)
            yield

    app = FastAPI(title="Agentry", version="0.1.0", lifespan=lifespan,
                  description="Threads, agent runs and their live event streams.")
    app.state.settings = settings
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
    install_error_handlers(app)
    app.add_middleware(HttpMetricsMiddleware)
    app.include_router(metrics_router)
    app.include_router(auth_routes.router)
    app.include_router(api_keys.router)
    app.include_router(accounts_routes.router)
    app.include_router(router)
    app.include_router(sandbox_router)
    return app

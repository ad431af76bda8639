"""Composition root of the gateway: serves the app with uvicorn in the current event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import uvicorn

from agentry.servicekit import tracing
from agentry.servicekit.context import configure_logging
from agentry.servicekit.eventstream import EventStream

from .app import create_app
from .config import GatewaySettings

logger = logging.getLogger(__name__)


@dataclass
class RunningGateway:
    server: uvicorn.Server
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start(
    settings: GatewaySettings, stack: contextlib.AsyncExitStack, *, events: EventStream | None = None
) -> RunningGateway:
    tracing.configure_tracing("gateway")  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    app = create_app(settings, events=events)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="none",  # no WebSocket routes: no WebSocket protocol to parse, nor its library to import
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign] - the caller owns signals
    task = asyncio.create_task(server.serve(), name="gateway")
    while not server.started:
        if task.done():
            task.result()  # raises the startup error (port taken, ...)
            raise RuntimeError("gateway stopped during startup")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]

    async def _stop() -> None:
        server.should_exit = True
        await task

    stack.push_async_callback(_stop)
    logger.info("gateway serving HTTP on http://%s:%d", settings.host, port)
    return RunningGateway(server=server, port=port)


async def _serve(settings: GatewaySettings) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        await start(settings, stack)
        from agentry.servicekit.server import freeze_startup_heap

        freeze_startup_heap()
        await stop.wait()


def main() -> None:
    import sys

    from agentry.servicekit.entrypoint import service_command

    code = service_command(sys.argv[1:], GatewaySettings)
    if code is not None:
        raise SystemExit(code)
    settings = GatewaySettings()
    configure_logging(settings.log_level, json=settings.log_json())
    from agentry.servicekit.server import run_on_event_loop

    run_on_event_loop(_serve(settings))

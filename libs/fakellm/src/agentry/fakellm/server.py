"""Run the fake server on a free local port, in the caller's event loop or in a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

import uvicorn

from .app import LoggedRequest, create_app
from .script import Script


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the host process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(server: uvicorn.Server) -> None:
    # uvicorn reports a failed bind as SystemExit, which would escape the event loop.
    try:
        await server.serve()
    except SystemExit as exc:
        raise RuntimeError(f"the fake LLM server failed to start (exit code {exc.code})") from None


class FakeLLMServer:
    """`async with FakeLLMServer() as llm:` serves on 127.0.0.1 until the block ends."""

    def __init__(
        self,
        scripts: Mapping[str, Script] | None = None,
        *,
        ttft_seconds: float = 0.0,
        tokens_per_second: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        strict: bool = False,
    ) -> None:
        self._app = create_app(scripts, ttft_seconds=ttft_seconds, tokens_per_second=tokens_per_second, strict=strict)
        self._host = host
        self._requested_port = port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def requests(self) -> Sequence[LoggedRequest]:
        """The chat-completion requests so far (the latest 10,000), in arrival order. From another
        thread, copy it with list() before iterating: the server appends as requests arrive."""
        return self._app.state.requests  # type: ignore[no-any-return]

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the fake LLM server is not running")
        return f"http://{self._host}:{self.port}/v1"

    async def start(self) -> None:
        config = uvicorn.Config(
            self._app,
            host=self._host,
            port=self._requested_port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = _EmbeddedServer(config)
        task = asyncio.create_task(_serve(server), name="fakellm-server")
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the fake LLM server stopped before it started")
            await asyncio.sleep(0.005)
        self._server, self._task = server, task
        self.port = server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None
        self.port = 0

    async def __aenter__(self) -> FakeLLMServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class ThreadedFakeLLMServer:
    """The same server for synchronous callers: it runs in a thread with its own event loop."""

    def __init__(
        self,
        scripts: Mapping[str, Script] | None = None,
        *,
        ttft_seconds: float = 0.0,
        tokens_per_second: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        strict: bool = False,
    ) -> None:
        self._server = FakeLLMServer(
            scripts,
            ttft_seconds=ttft_seconds,
            tokens_per_second=tokens_per_second,
            host=host,
            port=port,
            strict=strict,
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def requests(self) -> Sequence[LoggedRequest]:
        return self._server.requests

    def start(self, timeout: float = 10.0) -> None:
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="fakellm-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the fake LLM server did not start in time")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._server.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for ready
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._server.stop()

    def __enter__(self) -> ThreadedFakeLLMServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

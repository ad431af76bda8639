"""Run the fake Stripe on a free local port in the caller's event loop, and drive it from a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn

from .app import Webhooks, create_app
from .state import FakeStripe


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the host process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class Delivery:
    """One event as sent to the webhook endpoint; `status` is None when nothing answered."""

    event: dict[str, Any]
    status: int | None

    @property
    def type(self) -> str:
        return str(self.event["type"])


class FakeStripeServer:
    """`async with FakeStripeServer(webhook_url=..., webhook_secret=...) as stripe:`.

    Point the real client at it with `StripeClient(key, base_addresses={"api": stripe.base_url})`.
    The test controls (`pay`, `renew`, `fail_payment`, `cancel`, `change_price`) change state the
    way a customer or Stripe's billing engine would and, unless `deliver=False`, send the events
    that follow, signed, and return once each was answered. `send(event)` delivers any event
    (again, or out of order).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.fake = FakeStripe(clock=clock) if clock else FakeStripe()
        self._app = create_app(api_key=api_key, webhook_url=webhook_url, webhook_secret=webhook_secret, fake=self.fake)
        self._host, self._requested_port = host, port
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def webhooks(self) -> Webhooks:
        return self._app.state.webhooks  # type: ignore[no-any-return]

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the fake Stripe server is not running")
        return f"http://{self._host}:{self.port}"

    def configure_webhooks(self, url: str, secret: str) -> None:
        self.webhooks.url, self.webhooks.secret = url, secret

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

        async def serve() -> None:
            try:
                await server.serve()
            except SystemExit as exc:  # uvicorn reports a failed bind as SystemExit
                raise RuntimeError(f"the fake Stripe server failed to start (exit code {exc.code})") from None

        task = asyncio.create_task(serve(), name="fakestripe-server")
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the fake Stripe server stopped before it started")
            await asyncio.sleep(0.005)
        self._server, self._task = server, task
        self.fake.base_url = f"http://{self._host}:{server.servers[0].sockets[0].getsockname()[1]}"
        self.port = server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self.webhooks.close()
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None
        self.port = 0

    async def __aenter__(self) -> FakeStripeServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- test controls ---------------------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> Delivery:
        """Delivers `event` (again): replays and out-of-order delivery are the receiver's problem."""
        return Delivery(event, await self.webhooks.deliver(event))

    async def _deliver(self, events: list[dict[str, Any]], deliver: bool) -> list[Delivery]:
        if not deliver:
            return [Delivery(e, None) for e in events]
        return [await self.send(e) for e in events]

    async def pay(self, checkout_session_id: str, *, deliver: bool = True) -> list[Delivery]:
        return await self._deliver(self.fake.pay_checkout_session(checkout_session_id), deliver)

    async def renew(self, subscription_id: str, *, deliver: bool = True) -> list[Delivery]:
        return await self._deliver(self.fake.renew(subscription_id), deliver)

    async def fail_payment(self, subscription_id: str, *, deliver: bool = True) -> list[Delivery]:
        return await self._deliver(self.fake.fail_payment(subscription_id), deliver)

    async def cancel(self, subscription_id: str, *, deliver: bool = True) -> list[Delivery]:
        return await self._deliver(self.fake.cancel(subscription_id), deliver)

    async def change_price(self, subscription_id: str, price_id: str, *, deliver: bool = True) -> list[Delivery]:
        return await self._deliver(self.fake.change_price(subscription_id, price_id), deliver)

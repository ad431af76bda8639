"""Stripe webhooks through the gateway: events applied per second and each delivery's latency.

Run: uv run python bench/stripe_webhooks.py [--events 200] [--concurrency 8] [--pg postgresql+asyncpg://...]

Auth, billing (AGENTRY_BILLING_PROVIDER=stripe against agentry.fakestripe) and the gateway in
this process. One account buys `--events` credit packs (Checkout Sessions, through the gateway);
the fake records each payment's `checkout.session.completed` without sending it; then the events
are POSTed, signed, to /api/billing/webhook `--concurrency` at a time (first delivery: verify,
record the event id and grant in one transaction), then all again (repeats: verify, find the id,
change nothing). The balance is checked to have grown by exactly one pack per event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from agentry.auth.config import AuthSettings
from agentry.auth.main import start as start_auth
from agentry.billing.config import BillingSettings
from agentry.billing.main import start as start_billing
from agentry.fakestripe import FakeStripeServer
from agentry.gateway.config import GatewaySettings
from agentry.gateway.main import start as start_gateway
from agentry.servicekit.eventstream import MemoryEventStream

KEY, WHSEC = "sk_test_bench", "whsec_bench"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def deliver_all(fake: FakeStripeServer, events: list[dict], concurrency: int) -> tuple[float, list[float]]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(event: dict) -> None:
        async with gate:
            started = time.perf_counter()
            delivery = await fake.send(event)
            latencies.append(time.perf_counter() - started)
            assert delivery.status == 200, delivery.status

    started = time.perf_counter()
    await asyncio.gather(*(one(e) for e in events))
    return time.perf_counter() - started, latencies


async def main(events: int, concurrency: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-stripe-") as tmp:
        data = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            fake = await stack.enter_async_context(FakeStripeServer(api_key=KEY))
            auth = await start_auth(
                AuthSettings(port=0, database_url=f"sqlite+aiosqlite:///{data / 'auth.db'}", key_path=data / "key.pem"),
                stack,
            )
            billing = await start_billing(
                BillingSettings(
                    port=0,
                    database_url=database_url or f"sqlite+aiosqlite:///{data / 'billing.db'}",
                    provider="stripe",
                    STRIPE_SECRET_KEY=KEY,
                    STRIPE_WEBHOOK_SECRET=WHSEC,
                    stripe_api_base=fake.base_url,
                ),
                stack,
            )
            gateway = await start_gateway(
                GatewaySettings(
                    port=0,
                    auth_target=auth.target,
                    billing_target=billing.target,
                    sandbox_target="127.0.0.1:9",
                    runner_target="127.0.0.1:9",
                ),
                stack,
                events=MemoryEventStream(),
            )
            fake.configure_webhooks(f"{gateway.base_url}/api/billing/webhook", WHSEC)
            async with httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as client:
                account = {"email": "bench@example.com", "password": "a long password"}
                await client.post("/api/auth/signup", json=account)
                token = (await client.post("/api/auth/token", json=account)).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                before = (await client.get("/api/billing/subscription", headers=headers)).json()["balance_micros"]
                started = time.perf_counter()
                recorded = []
                for _ in range(events):
                    session = (
                        await client.post(
                            "/api/billing/checkout", json={"credit_pack_id": "credits_10"}, headers=headers
                        )
                    ).json()
                    recorded += [d.event for d in await fake.pay(session["checkout_session_id"], deliver=False)]
                checkout_seconds = time.perf_counter() - started
                first, first_lat = await deliver_all(fake, recorded, concurrency)
                again, again_lat = await deliver_all(fake, recorded, concurrency)
                after = (await client.get("/api/billing/subscription", headers=headers)).json()["balance_micros"]
            assert after - before == events * 10_000_000, (before, after)
    db = "PostgreSQL" if database_url else "SQLite"
    print(f"Stripe webhooks through the gateway ({db}, {events} events, {concurrency} at a time)")
    print(f"  checkout (gateway -> billing -> Stripe): {events / checkout_seconds:.0f}/s")
    for name, seconds, lat in (("first delivery (grant)", first, first_lat), ("repeat (no change)", again, again_lat)):
        print(
            f"  {name}: {len(lat) / seconds:.0f} events/s, latency p50 {statistics.median(lat) * 1000:.1f} ms "
            f"p99 {pct(lat, 0.99) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pg", default=None, help="billing on this PostgreSQL database (migrated here)")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.concurrency, args.pg))

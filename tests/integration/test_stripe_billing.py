"""Stripe billing end to end: `agentry dev`'s stack started with AGENTRY_BILLING_PROVIDER=stripe and
the Stripe variables pointing at the fake Stripe server (agentry.fakestripe, driven through the
real stripe library), every call through the gateway, webhooks signed as Stripe signs them.

checkout → paid → credits granted → plan active → renewal grants the allowance → a failed payment
or a cancellation downgrades; a forged signature is refused (400); a replayed or out-of-order
event changes nothing wrong."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest
import pytest_asyncio
import stripe

from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ThreadedFakeLLMServer, Turn
from agentry.fakestripe import FakeStripeServer, sign

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PORTS = {"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0}
PASSWORD = "correct horse battery staple"
KEY = "sk_test_agentry_integration"
WHSEC = "whsec_agentry_integration_secret"
USD = 1_000_000
OPENING = 5 * USD  # BillingSettings.initial_credit_micros: the dev stack's default
PRO = 20 * USD  # the built-in catalog: pro is 20 USD a month with 20 USD of credits
PACK = 10 * USD  # credits_10


@dataclass
class Stack:
    url: str
    stripe: FakeStripeServer

    def subscription_of(self, session_id: str) -> str:
        return self.stripe.fake.objects[session_id]["subscription"]


@dataclass
class User:
    account_id: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer({"stripe-quick": Script(turns=(Turn(text="done"),))}) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(llm, tmp_path_factory) -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeStripeServer(api_key=KEY))
        # Exactly what an operator exports before `make run` (docs/operations.md, Stripe).
        env = stack.enter_context(pytest.MonkeyPatch.context())
        env.setenv("AGENTRY_BILLING_PROVIDER", "stripe")
        env.setenv("STRIPE_SECRET_KEY", KEY)
        env.setenv("STRIPE_WEBHOOK_SECRET", WHSEC)
        env.setenv("AGENTRY_BILLING_STRIPE_API_BASE", fake.base_url)
        dev = await start_dev_stack(
            stack, data_dir=tmp_path_factory.mktemp("stripe-billing"), llm_api_base=llm.base_url, ports=PORTS
        )
        fake.configure_webhooks(f"{dev.gateway_url}/api/billing/webhook", WHSEC)
        yield Stack(dev.gateway_url, fake)


@pytest_asyncio.fixture(loop_scope="module")
async def client(system) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as client:
        yield client


async def _user(client: httpx.AsyncClient, email: str) -> User:
    signup = await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert signup.status_code == 201, signup.text
    token = await client.post("/api/auth/token", json={"email": email, "password": PASSWORD})
    return User(signup.json()["account_id"], {"Authorization": f"Bearer {token.json()['access_token']}"})


async def _subscription(client: httpx.AsyncClient, user: User) -> dict:
    answer = await client.get("/api/billing/subscription", headers=user.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _checkout(client: httpx.AsyncClient, user: User, **body) -> dict:
    answer = await client.post("/api/billing/checkout", json=body, headers=user.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _unix(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _all_ok(deliveries) -> None:
    assert [d.status for d in deliveries] == [200] * len(deliveries), [(d.type, d.status) for d in deliveries]


async def test_the_catalog_was_created_in_stripe_by_lookup_key(system, client):
    user = await _user(client, "catalog@example.com")
    plans = (await client.get("/api/billing/plans", headers=user.headers)).json()
    pro = next(p for p in plans["plans"] if p["id"] == "pro")
    pack = next(p for p in plans["credit_packs"] if p["id"] == "credits_10")
    fake = system.stripe.fake
    assert fake.objects[pro["stripe_price_id"]]["lookup_key"] == "agentry_plan_pro"
    assert fake.objects[pro["stripe_price_id"]]["recurring"]["interval"] == "month"
    assert fake.objects[pro["stripe_price_id"]]["unit_amount"] == 2000
    assert fake.objects[pack["stripe_price_id"]]["type"] == "one_time"
    assert next(p for p in plans["plans"] if p["id"] == "free")["stripe_price_id"] is None


async def test_checkout_paid_renewed_then_failed_payment_downgrades(system, client):
    alice = await _user(client, "alice.stripe@example.com")
    before = await _subscription(client, alice)
    assert (before["plan"]["id"], before["status"], before["balance_micros"]) == ("free", "free", OPENING)

    session = await _checkout(client, alice, plan_id="pro", success_url="https://app.example/paid")
    assert session["checkout_session_id"].startswith("cs_") and session["url"].startswith(system.stripe.base_url)
    created = system.stripe.fake.objects[session["checkout_session_id"]]
    assert created["mode"] == "subscription" and created["success_url"] == "https://app.example/paid"

    _all_ok(await system.stripe.pay(session["checkout_session_id"]))
    paid = await _subscription(client, alice)
    assert (paid["plan"]["id"], paid["status"]) == ("pro", "active")
    assert paid["balance_micros"] == OPENING + PRO  # the first invoice's allowance
    assert paid["current_period_end"]

    sub_id = system.subscription_of(session["checkout_session_id"])
    _all_ok(await system.stripe.renew(sub_id))
    renewed = await _subscription(client, alice)
    assert (renewed["plan"]["id"], renewed["status"]) == ("pro", "active")
    assert renewed["balance_micros"] == OPENING + 2 * PRO
    assert _unix(renewed["current_period_start"]) == _unix(paid["current_period_end"])

    # A subscribed account changes plans in the portal, not with a second checkout.
    again = await client.post("/api/billing/checkout", json={"plan_id": "pro"}, headers=alice.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_subscribed", again.text
    portal = await client.post(
        "/api/billing/portal", json={"return_url": "https://app.example/account"}, headers=alice.headers
    )
    assert portal.status_code == 200 and portal.json()["url"].startswith(system.stripe.base_url), portal.text

    _all_ok(await system.stripe.fail_payment(sub_id))
    failed = await _subscription(client, alice)
    assert (failed["plan"]["id"], failed["status"]) == ("free", "past_due")
    assert failed["balance_micros"] == OPENING + 2 * PRO  # an unpaid invoice grants nothing


async def test_cancellation_downgrades_and_a_credit_pack_is_granted_once_paid(system, client):
    bob = await _user(client, "bob.stripe@example.com")
    session = await _checkout(client, bob, plan_id="pro")
    created = system.stripe.fake.objects[session["checkout_session_id"]]
    assert created["success_url"].startswith("http") and created["cancel_url"].startswith("http")  # the defaults
    _all_ok(await system.stripe.pay(session["checkout_session_id"]))
    assert (await _subscription(client, bob))["plan"]["id"] == "pro"
    _all_ok(await system.stripe.cancel(system.subscription_of(session["checkout_session_id"])))
    cancelled = await _subscription(client, bob)
    assert (cancelled["plan"]["id"], cancelled["status"]) == ("free", "canceled")

    pack = await _checkout(client, bob, credit_pack_id="credits_10")
    assert system.stripe.fake.objects[pack["checkout_session_id"]]["mode"] == "payment"
    # Not paid yet: nothing granted.
    assert (await _subscription(client, bob))["balance_micros"] == OPENING + PRO
    deliveries = await system.stripe.pay(pack["checkout_session_id"])
    _all_ok(deliveries)
    assert (await _subscription(client, bob))["balance_micros"] == OPENING + PRO + PACK


async def test_a_forged_or_tampered_signature_is_refused(system, client):
    carol = await _user(client, "carol.stripe@example.com")
    pack = await _checkout(client, carol, credit_pack_id="credits_10")
    [completed] = await system.stripe.pay(pack["checkout_session_id"], deliver=False)
    body = json.dumps(completed.event).encode()
    url = "/api/billing/webhook"

    forged = await client.post(url, content=body, headers={"Stripe-Signature": sign(body, "whsec_attacker")})
    assert forged.status_code == 400 and forged.json()["error"]["code"] == "invalid_signature", forged.text
    tampered = body.replace(b"credits_10", b"credits_99")
    answer = await client.post(url, content=tampered, headers={"Stripe-Signature": sign(body, WHSEC)})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_signature"
    stale = await client.post(url, content=body, headers={"Stripe-Signature": sign(body, WHSEC, timestamp=1)})
    assert stale.status_code == 400 and stale.json()["error"]["code"] == "invalid_signature"
    missing = await client.post(url, content=body)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "invalid_signature"
    huge = b" " * (1024 * 1024 + 1)
    too_big = await client.post(url, content=huge, headers={"Stripe-Signature": sign(huge, WHSEC)})
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    # Verified with the library's own header generator: accepted once.
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), WHSEC)  # type: ignore[attr-defined]
    assert (await client.post(url, content=body, headers={"Stripe-Signature": header})).json()["applied"] is True
    assert (await _subscription(client, carol))["balance_micros"] == OPENING + PACK


async def test_replayed_and_out_of_order_events_change_nothing_wrong(system, client):
    dave = await _user(client, "dave.stripe@example.com")
    session = await _checkout(client, dave, plan_id="pro")
    paid = await system.stripe.pay(session["checkout_session_id"], deliver=False)
    sub_id = system.subscription_of(session["checkout_session_id"])
    renewed = await system.stripe.renew(sub_id, deliver=False)
    events = paid + renewed
    # Delivered newest first, then all again in order: the end state is the in-order one.
    for delivery in [*reversed(events), *events]:
        _all_ok([await system.stripe.send(delivery.event)])
    state = await _subscription(client, dave)
    assert (state["plan"]["id"], state["status"]) == ("pro", "active")
    assert state["balance_micros"] == OPENING + 2 * PRO  # two paid periods, each granted once
    current = system.stripe.fake.objects[sub_id]["items"]["data"][0]
    assert _unix(state["current_period_end"]) == current["current_period_end"]

    # The subscription is cancelled; an older "updated (active)" event arriving afterwards does
    # not bring the plan back.
    cancelled = await system.stripe.cancel(sub_id, deliver=False)
    _all_ok([await system.stripe.send(cancelled[0].event)])
    stale_update = next(d for d in renewed if d.type == "customer.subscription.updated")
    replay = await client.post(
        "/api/billing/webhook",
        content=json.dumps(stale_update.event).encode(),
        headers={"Stripe-Signature": sign(json.dumps(stale_update.event).encode(), WHSEC)},
    )
    assert replay.status_code == 200 and replay.json()["applied"] is False
    after = await _subscription(client, dave)
    assert (after["plan"]["id"], after["status"]) == ("free", "canceled")
    assert after["balance_micros"] == OPENING + 2 * PRO

    # A pack's checkout.session.completed delivered three times grants once.
    pack = await _checkout(client, dave, credit_pack_id="credits_10")
    [completed] = await system.stripe.pay(pack["checkout_session_id"], deliver=False)
    outcomes = []
    for _ in range(3):
        body = json.dumps(completed.event).encode()
        answer = await client.post(
            "/api/billing/webhook", content=body, headers={"Stripe-Signature": sign(body, WHSEC)}
        )
        outcomes.append(answer.json()["applied"])
    assert outcomes == [True, False, False]
    assert (await _subscription(client, dave))["balance_micros"] == OPENING + 2 * PRO + PACK


async def test_checkout_requests_are_validated(system, client):
    erin = await _user(client, "erin.stripe@example.com")

    async def refused(body: dict, status: int) -> dict:
        answer = await client.post("/api/billing/checkout", json=body, headers=erin.headers)
        assert answer.status_code == status, answer.text
        return answer.json()["error"]

    assert (await refused({}, 422))["fields"][0]["field"] == "body.plan_id"
    both = await refused({"plan_id": "pro", "credit_pack_id": "credits_10"}, 422)
    assert both["fields"][0]["field"] == "body.credit_pack_id"
    assert (await refused({"plan_id": "pro", "success_url": "javascript:alert(1)"}, 422))["fields"][0][
        "field"
    ] == "body.success_url"
    assert (await refused({"plan_id": "pro", "extra": 1}, 422))["code"] == "validation_error"
    assert (await refused({"plan_id": "gold"}, 422))["code"] == "unknown_plan"  # bad input: 422 everywhere
    assert (await refused({"credit_pack_id": "credits_99"}, 422))["code"] == "unknown_plan"
    assert "free" in (await refused({"plan_id": "free"}, 422))["message"]
    unauthenticated = await client.post("/api/billing/checkout", json={"plan_id": "pro"})
    assert unauthenticated.status_code == 401
    assert (await client.post("/api/billing/portal")).status_code == 401


async def test_without_stripe_the_payment_routes_answer_501(tmp_path):
    """The local provider (the default): auth, billing and the gateway only (no runs needed)."""
    from agentry.auth.config import AuthSettings
    from agentry.auth.main import start as start_auth
    from agentry.billing.config import BillingSettings
    from agentry.billing.main import start as start_billing
    from agentry.gateway.config import GatewaySettings
    from agentry.gateway.main import start as start_gateway
    from agentry.servicekit.eventstream import MemoryEventStream

    async with contextlib.AsyncExitStack() as stack:
        auth = await start_auth(
            AuthSettings(
                port=0, database_url=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}", key_path=tmp_path / "key.pem"
            ),
            stack,
        )
        billing = await start_billing(
            BillingSettings(port=0, database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", provider="local"), stack
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
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:
            frank = await _user(client, "frank.local@example.com")
            for path, body, headers in [
                ("/api/billing/checkout", {"credit_pack_id": "credits_10"}, frank.headers),
                ("/api/billing/portal", {}, frank.headers),
                ("/api/billing/webhook", {}, {"Stripe-Signature": "t=1,v1=00"}),
            ]:
                answer = await client.post(path, json=body, headers=headers)
                assert answer.status_code == 501, answer.text
                error = answer.json()["error"]
                assert error["code"] == "payments_not_configured" and "AGENTRY_BILLING_PROVIDER" in error["message"]


async def test_a_team_buys_as_itself_and_only_its_owners_and_admins_may(system, client):
    owner, member = await _user(client, "owner.stripe@example.com"), await _user(client, "member.stripe@example.com")
    team = (await client.post("/api/accounts", json={"name": "Payers"}, headers=owner.headers)).json()
    invitation = (
        await client.post(
            f"/api/accounts/{team['id']}/invitations",
            json={"email": "member.stripe@example.com", "role": "member"},
            headers=owner.headers,
        )
    ).json()
    accepted = await client.post(
        "/api/accounts/invitations/accept", json={"token": invitation["token"]}, headers=member.headers
    )
    assert accepted.status_code == 200, accepted.text
    as_member = {**member.headers, "X-Account-Id": team["id"]}
    for path, body in [("/api/billing/checkout", {"credit_pack_id": "credits_10"}), ("/api/billing/portal", {})]:
        refused = await client.post(path, json=body, headers=as_member)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "role_required", refused.text

    as_owner = {**owner.headers, "X-Account-Id": team["id"]}
    session = await client.post("/api/billing/checkout", json={"credit_pack_id": "credits_10"}, headers=as_owner)
    assert session.status_code == 200, session.text
    _all_ok(await system.stripe.pay(session.json()["checkout_session_id"]))
    team_state = (await client.get("/api/billing/subscription", headers=as_member)).json()
    assert team_state["balance_micros"] == OPENING + PACK  # the team's credit, which its members see
    assert (await _subscription(client, owner))["balance_micros"] == OPENING  # not the owner's own

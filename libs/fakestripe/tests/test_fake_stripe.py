"""The fake answers the real stripe library (StripeClient, async calls) as Stripe would, and signs
its webhooks so that stripe.Webhook verifies them."""

from __future__ import annotations

import asyncio

import pytest
import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentry.fakestripe import FakeStripeServer, sign
from agentry.fakestripe.forms import decode

KEY = "sk_test_fake"
SECRET = "whsec_test_secret"


class Receiver:
    """A webhook endpoint that verifies each event with the stripe library, as a real one would."""

    def __init__(self) -> None:
        self.events: list[stripe.Event] = []
        self.refused = 0

        async def hook(request: Request) -> Response:
            try:
                event = stripe.Webhook.construct_event(
                    await request.body(), request.headers["stripe-signature"], SECRET
                )
            except stripe.SignatureVerificationError:
                self.refused += 1
                return Response(status_code=400)
            self.events.append(event)
            return Response(status_code=200)

        self.server = uvicorn.Server(
            uvicorn.Config(
                Starlette(routes=[Route("/hook", hook, methods=["POST"])]), port=0, lifespan="off", log_level="warning"
            )
        )

    async def __aenter__(self) -> str:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.005)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}/hook"

    async def __aexit__(self, *exc) -> None:
        self.server.should_exit = True
        await self.task


@pytest.fixture
async def fake():
    async with FakeStripeServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def client(fake):
    return stripe.StripeClient(
        KEY, base_addresses={"api": fake.base_url}, max_network_retries=0, http_client=stripe.HTTPXClient()
    )


def test_bracket_decoding_matches_the_librarys_encoding():
    assert decode(
        [
            ("line_items[0][price]", "p"),
            ("line_items[0][quantity]", "1"),
            ("expand[0]", "a.b"),
            ("metadata[account_id]", "acc"),
            ("mode", "payment"),
        ]
    ) == {
        "line_items": [{"price": "p", "quantity": "1"}],
        "expand": ["a.b"],
        "metadata": {"account_id": "acc"},
        "mode": "payment",
    }


async def test_products_prices_by_lookup_key_customers_checkout_and_portal(client):
    product = await client.v1.products.create_async({"name": "Pro", "metadata": {"plan_id": "pro"}})
    price = await client.v1.prices.create_async(
        {
            "product": product.id,
            "unit_amount": 2000,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "lookup_key": "agentry_pro",
        }
    )
    assert (price.type, price.recurring.interval, price.unit_amount) == ("recurring", "month", 2000)
    found = await client.v1.prices.list_async({"lookup_keys": ["agentry_pro", "nope"], "expand": ["data.product"]})
    assert [p.id for p in found.data] == [price.id] and found.data[0].product.metadata["plan_id"] == "pro"
    with pytest.raises(stripe.InvalidRequestError) as taken:
        await client.v1.prices.create_async(
            {"product": product.id, "unit_amount": 1, "currency": "usd", "lookup_key": "agentry_pro"}
        )
    assert taken.value.code == "lookup_key_exists"

    customer = await client.v1.customers.create_async({"metadata": {"account_id": "acc_1"}})
    session = await client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://app.example/ok",
            "client_reference_id": "acc_1",
            "subscription_data": {"metadata": {"account_id": "acc_1"}},
        }
    )
    assert session.id.startswith("cs_test_") and session.url.startswith("http") and session.status == "open"
    assert (await client.v1.checkout.sessions.retrieve_async(session.id)).mode == "subscription"
    with pytest.raises(stripe.InvalidRequestError) as wrong_mode:
        await client.v1.checkout.sessions.create_async(
            {
                "mode": "payment",
                "customer": customer.id,
                "line_items": [{"price": price.id, "quantity": 1}],
                "success_url": "https://app.example/ok",
            }
        )
    assert wrong_mode.value.param == "line_items[0][price]"
    portal = await client.v1.billing_portal.sessions.create_async(
        {"customer": customer.id, "return_url": "https://app.example"}
    )
    assert portal.url.startswith("http") and portal.customer == customer.id
    with pytest.raises(stripe.InvalidRequestError) as gone:
        await client.v1.customers.retrieve_async("cus_nope")
    assert gone.value.http_status == 404 and gone.value.code == "resource_missing"


async def test_idempotency_key_replays_the_first_answer_and_refuses_other_parameters(client):
    first = await client.v1.customers.create_async({"email": "a@example.com"}, {"idempotency_key": "k1"})
    again = await client.v1.customers.create_async({"email": "a@example.com"}, {"idempotency_key": "k1"})
    assert again.id == first.id
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.customers.create_async({"email": "b@example.com"}, {"idempotency_key": "k1"})


async def test_a_wrong_api_key_is_refused(fake):
    bad = stripe.StripeClient(
        "sk_test_other", base_addresses={"api": fake.base_url}, max_network_retries=0, http_client=stripe.HTTPXClient()
    )
    with pytest.raises(stripe.AuthenticationError):
        await bad.v1.customers.create_async({})


async def test_paying_renewing_failing_and_cancelling_send_signed_events(fake, client):
    receiver = Receiver()
    async with receiver as url:
        fake.configure_webhooks(url, SECRET)
        product = await client.v1.products.create_async({"name": "Pro"})
        price = await client.v1.prices.create_async(
            {"product": product.id, "unit_amount": 2000, "currency": "usd", "recurring": {"interval": "month"}}
        )
        customer = await client.v1.customers.create_async({})
        session = await client.v1.checkout.sessions.create_async(
            {
                "mode": "subscription",
                "customer": customer.id,
                "line_items": [{"price": price.id, "quantity": 1}],
                "success_url": "https://app.example/ok",
                "subscription_data": {"metadata": {"account_id": "acc"}},
            }
        )
        paid = await fake.pay(session.id)
        assert [d.type for d in paid] == [
            "customer.subscription.created",
            "invoice.paid",
            "invoice.payment_succeeded",
            "checkout.session.completed",
        ]
        assert all(d.status == 200 for d in paid)
        completed = receiver.events[-1].data.object
        assert (completed.status, completed.payment_status) == ("complete", "paid")
        sub_id = completed.subscription
        invoice = receiver.events[1].data.object
        assert invoice.parent.subscription_details.subscription == sub_id
        assert invoice.parent.subscription_details.metadata["account_id"] == "acc"
        sub = await client.v1.subscriptions.retrieve_async(sub_id)
        period_end = sub["items"].data[0].current_period_end
        assert sub.status == "active" and sub["items"].data[0].price.id == price.id

        await fake.renew(sub_id)
        sub = await client.v1.subscriptions.retrieve_async(sub_id)
        assert sub["items"].data[0].current_period_start == period_end
        failed = await fake.fail_payment(sub_id)
        assert [d.type for d in failed] == ["invoice.payment_failed", "customer.subscription.updated"]
        assert (await client.v1.subscriptions.retrieve_async(sub_id)).status == "past_due"
        cancelled = await fake.cancel(sub_id)
        assert cancelled[0].event["data"]["object"]["status"] == "canceled"
        assert receiver.refused == 0

        # A copy signed with another secret is refused by the verifying receiver.
        fake.configure_webhooks(url, "whsec_wrong")
        assert (await fake.send(cancelled[0].event)).status == 400 and receiver.refused == 1


def test_signature_header_is_what_the_library_generates():
    payload = b'{"id": "evt_1"}'
    header = sign(payload, SECRET, timestamp=1_700_000_000)
    expected = stripe.WebhookSignature._compute_signature(f"1700000000.{payload.decode()}", SECRET)
    assert header == f"t=1700000000,v1={expected}"

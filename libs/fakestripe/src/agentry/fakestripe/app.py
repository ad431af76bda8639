"""The fake's HTTP face: Stripe's /v1 routes (form-encoded in, JSON out) and the test controls.

Stripe routes check `Authorization: Bearer <secret key>` (when the fake was given one) and honour
`Idempotency-Key` on POST: the same key with the same parameters answers the first response again
(header `Idempotent-Replayed: true`); with other parameters, a 400 `idempotency_error`.

Test controls live under /_test (no Stripe client calls them):
- POST /_test/webhook_endpoint  {"url", "secret"}         where events are sent and how they are signed
- POST /_test/checkout/sessions/{id}/pay                  the customer pays
- POST /_test/subscriptions/{id}/renew | fail_payment | cancel
- POST /_test/subscriptions/{id}/change_price {"price"}   a plan switch in the portal
- POST /_test/events/{id}/resend                          deliver an event again
- GET  /_test/events                                      every event so far
Each control takes `?deliver=false` to record the events without sending them (a test then
sends them itself, in any order, with /resend). Otherwise it answers after every event has been
delivered: `{"events": [...], "deliveries": [{"event", "type", "status"}]}`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import forms
from .state import API_VERSION, FakeStripe, StripeError, expand

logger = logging.getLogger(__name__)


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe sends: `t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">`,
    keyed by the endpoint's whole signing secret (`whsec_...`)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class Webhooks:
    """Where events go. Each is POSTed as Stripe does: JSON body, signed, one attempt here."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.secret: str | None = None
        self._client: httpx.AsyncClient | None = None

    async def deliver(self, event: dict[str, Any]) -> int | None:
        """Sends one event; its HTTP status, or None when no endpoint is configured or it failed."""
        if not self.url or not self.secret:
            return None
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=30)
        payload = json.dumps(event, indent=2).encode()  # Stripe's bodies are pretty-printed JSON
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": sign(payload, self.secret),
        }
        try:
            response = await self._client.post(self.url, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            logger.warning("webhook %s to %s failed: %s", event["id"], self.url, exc)
            return None
        return response.status_code

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def create_app(
    *,
    api_key: str | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    fake: FakeStripe | None = None,
) -> Starlette:
    """The ASGI app. `api_key`: the only secret key accepted (None: any `sk_` key)."""
    fake = fake or FakeStripe()
    hooks = Webhooks()
    hooks.url, hooks.secret = webhook_url, webhook_secret
    idempotent: dict[tuple[str, str], tuple[str, int, dict[str, Any]]] = {}

    def answer(obj: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(
            obj,
            status_code=status,
            headers={"Request-Id": f"req_{time.time_ns()}", "Stripe-Version": API_VERSION, **(headers or {})},
        )

    def stripe_route(handler):
        async def endpoint(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            scheme, _, key = auth.partition(" ")
            if scheme.lower() != "bearer" or not key.startswith(("sk_", "rk_")) or (api_key and key != api_key):
                return answer(
                    StripeError(
                        401, "Invalid API Key provided.", code="api_key_invalid", type="invalid_request_error"
                    ).body(),
                    401,
                )
            try:
                if request.method == "GET":
                    params = forms.decode(request.query_params.multi_items())
                else:
                    body = (await request.body()).decode()
                    params = forms.decode(parse_qsl(body, keep_blank_values=True))
            except forms.FormError as exc:
                return answer(StripeError(400, str(exc)).body(), 400)
            idem_key = request.headers.get("idempotency-key") if request.method == "POST" else None
            fingerprint = json.dumps([request.url.path, params], sort_keys=True)
            if idem_key:
                seen = idempotent.get((key, idem_key))
                if seen is not None:
                    if seen[0] != fingerprint:
                        return answer(
                            StripeError(
                                400,
                                "Keys for idempotent requests can only be used with the same parameters they "
                                "were first used with.",
                                type="idempotency_error",
                            ).body(),
                            400,
                        )
                    return answer(seen[2], seen[1], {"Idempotent-Replayed": "true", "Idempotency-Key": idem_key})
            try:
                status, obj = 200, handler(request, params)
            except StripeError as exc:
                status, obj = exc.status, exc.body()
            if idem_key and status < 500:
                idempotent[(key, idem_key)] = (fingerprint, status, obj)
            return answer(obj, status, {"Idempotency-Key": idem_key} if idem_key else None)

        return endpoint

    def listing(url: str, data: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        limit = forms.as_int(params.get("limit", 10), "limit")
        paths = [p.removeprefix("data.") for p in forms.as_list(params.get("expand")) if p.startswith("data.")]
        return {
            "object": "list",
            "data": [expand(fake, o, paths) for o in data[:limit]],
            "has_more": len(data) > limit,
            "url": url,
        }

    def one(kind: str, param: str = "id"):
        def handler(request: Request, params: dict[str, Any]) -> dict[str, Any]:
            obj = fake.get(kind, request.path_params[param])
            return expand(fake, obj, forms.as_list(params.get("expand")))

        return handler

    def created(factory):
        def handler(request: Request, params: dict[str, Any]) -> dict[str, Any]:
            return expand(fake, factory(params), forms.as_list(params.get("expand")))

        return handler

    def list_products(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        products = sorted(
            (o for o in fake.objects.values() if o["object"] == "product"), key=lambda p: p["created"], reverse=True
        )
        return listing("/v1/products", products, params)

    routes = [
        Route("/v1/products", stripe_route(created(fake.create_product)), methods=["POST"]),
        Route("/v1/products", stripe_route(list_products), methods=["GET"]),
        Route("/v1/products/{id}", stripe_route(one("product")), methods=["GET"]),
        Route("/v1/prices", stripe_route(created(fake.create_price)), methods=["POST"]),
        Route("/v1/prices", stripe_route(lambda r, p: listing("/v1/prices", fake.list_prices(p), p)), methods=["GET"]),
        Route("/v1/prices/{id}", stripe_route(one("price")), methods=["GET"]),
        Route("/v1/customers", stripe_route(created(fake.create_customer)), methods=["POST"]),
        Route("/v1/customers/{id}", stripe_route(one("customer")), methods=["GET"]),
        Route("/v1/checkout/sessions", stripe_route(created(fake.create_checkout_session)), methods=["POST"]),
        Route("/v1/checkout/sessions/{id}", stripe_route(one("checkout.session")), methods=["GET"]),
        Route("/v1/billing_portal/sessions", stripe_route(created(fake.create_portal_session)), methods=["POST"]),
        Route("/v1/subscriptions/{id}", stripe_route(one("subscription")), methods=["GET"]),
        Route("/v1/invoices/{id}", stripe_route(one("invoice")), methods=["GET"]),
    ]

    async def control(request: Request) -> Response:
        action = request.path_params.get("action") or request.url.path.rsplit("/", 1)[-1]
        object_id = request.path_params.get("id", "")
        body = await request.json() if (await request.body()) else {}
        try:
            if action == "webhook_endpoint":
                hooks.url, hooks.secret = body.get("url"), body.get("secret")
                return JSONResponse({"url": hooks.url})
            if action == "events":
                return JSONResponse({"events": fake.events})
            events = {
                "pay": lambda: fake.pay_checkout_session(object_id),
                "renew": lambda: fake.renew(object_id),
                "fail_payment": lambda: fake.fail_payment(object_id),
                "cancel": lambda: fake.cancel(object_id),
                "change_price": lambda: fake.change_price(object_id, body.get("price", "")),
                "resend": lambda: [fake.get("event", object_id)],
            }[action]()
        except StripeError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        deliveries = []
        if request.query_params.get("deliver", "true") != "false":
            for event in events:
                deliveries.append({"event": event["id"], "type": event["type"], "status": await hooks.deliver(event)})
        return JSONResponse({"events": events, "deliveries": deliveries})

    routes += [
        Route("/_test/webhook_endpoint", control, methods=["POST"], name="webhook_endpoint"),
        Route("/_test/events", control, methods=["GET"]),
        Route("/_test/checkout/sessions/{id}/{action:str}", control, methods=["POST"]),
        Route("/_test/subscriptions/{id}/{action:str}", control, methods=["POST"]),
        Route("/_test/events/{id}/{action:str}", control, methods=["POST"]),
    ]

    async def not_found(request: Request) -> Response:
        return answer(StripeError(404, f"Unrecognized request URL ({request.method}: {request.url.path}).").body(), 404)

    routes.append(Route("/{path:path}", not_found, methods=["GET", "POST", "DELETE"]))

    app = Starlette(routes=routes)
    app.state.fake = fake
    app.state.webhooks = hooks
    return app

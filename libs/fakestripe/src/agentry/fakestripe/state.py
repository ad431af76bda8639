"""The fake's objects and what happens to them: Stripe's object shapes (API 2026-10-28), kept in memory.

Only what Agentry's Stripe adapter calls exists: products, prices (found by `lookup_key`),
customers, Checkout Sessions (subscription and one-time payment), billing portal sessions,
subscriptions and invoices. The test controls (`pay_checkout_session`, `renew`, `fail_payment`,
`cancel`, `change_price`) move an object the way a customer or Stripe's billing engine would and
record the events Stripe would send, in the order Stripe usually sends them (which receivers must
not rely on).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "2026-10-28.endive"
PERIOD_SECONDS = 30 * 24 * 3600


class StripeError(Exception):
    """An error answered in Stripe's shape: `{"error": {"type", "message", "code"?, "param"?}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return {"error": error}


def missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def bad(message: str, param: str | None = None) -> StripeError:
    return StripeError(
        400, message, code="parameter_missing" if "Missing" in message else "parameter_invalid", param=param
    )


@dataclass
class FakeStripe:
    """Every object by id, and every event in the order it happened."""

    base_url: str = "http://127.0.0.1"
    clock: Callable[[], float] = time.time
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    # ---- helpers -----------------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock())

    def _new(self, prefix: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj_id = obj.get("id") or f"{prefix}_{secrets.token_hex(12)}"
        obj = {"id": obj_id, **{k: v for k, v in obj.items() if k != "id"}}
        self.objects[obj_id] = obj
        return obj

    def get(self, kind: str, object_id: str, param: str = "id") -> dict[str, Any]:
        obj = self.objects.get(object_id)
        if obj is None or obj["object"] != kind:
            raise missing(kind.replace("_", " "), object_id, param)
        return obj

    def _event(self, type_: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": _snapshot(self, obj)}
        if previous is not None:
            data["previous_attributes"] = previous
        event = self._new(
            "evt",
            {
                "object": "event",
                "api_version": API_VERSION,
                "created": self.now(),
                "data": data,
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "type": type_,
            },
        )
        self.events.append(event)
        return event

    # ---- products and prices -----------------------------------------------------------------

    def create_product(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("name"):
            raise bad("Missing required param: name.", "name")
        if params.get("id") and params["id"] in self.objects:
            raise StripeError(400, "Product already exists.", code="resource_already_exists", param="id")
        now = self.now()
        return self._new(
            "prod",
            {
                "id": params.get("id"),
                "object": "product",
                "active": _bool(params.get("active", "true")),
                "created": now,
                "updated": now,
                "default_price": None,
                "description": params.get("description"),
                "images": [],
                "livemode": False,
                "marketing_features": [],
                "metadata": params.get("metadata") or {},
                "name": params["name"],
                "package_dimensions": None,
                "shippable": None,
                "statement_descriptor": None,
                "tax_code": None,
                "type": "service",
                "unit_label": None,
                "url": None,
            },
        )

    def create_price(self, params: dict[str, Any]) -> dict[str, Any]:
        product = params.get("product")
        if not product:
            raise bad("Missing required param: product.", "product")
        self.get("product", product, "product")
        if not params.get("currency"):
            raise bad("Missing required param: currency.", "currency")
        if "unit_amount" not in params:
            raise bad("Missing required param: unit_amount.", "unit_amount")
        amount = _int(params["unit_amount"], "unit_amount")
        lookup_key = params.get("lookup_key")
        if lookup_key:
            holder = self.price_by_lookup_key(lookup_key)
            if holder is not None:
                if not _bool(params.get("transfer_lookup_key", "false")):
                    raise StripeError(
                        400,
                        f"A price (`{holder['id']}`) already uses that lookup key.",
                        code="lookup_key_exists",
                        param="lookup_key",
                    )
                holder["lookup_key"] = None
        recurring = params.get("recurring")
        if recurring is not None:
            interval = recurring.get("interval")
            if interval not in ("day", "week", "month", "year"):
                raise bad(
                    "Invalid recurring[interval]: must be one of day, week, month, or year", "recurring[interval]"
                )
            recurring = {
                "interval": interval,
                "interval_count": _int(recurring.get("interval_count", 1), "recurring[interval_count]"),
                "meter": None,
                "trial_period_days": None,
                "usage_type": "licensed",
            }
        return self._new(
            "price",
            {
                "object": "price",
                "active": True,
                "billing_scheme": "per_unit",
                "created": self.now(),
                "currency": params["currency"].lower(),
                "custom_unit_amount": None,
                "livemode": False,
                "lookup_key": lookup_key,
                "metadata": params.get("metadata") or {},
                "nickname": params.get("nickname"),
                "product": product,
                "recurring": recurring,
                "tax_behavior": "unspecified",
                "tiers_mode": None,
                "transform_quantity": None,
                "type": "recurring" if recurring else "one_time",
                "unit_amount": amount,
                "unit_amount_decimal": str(amount),
            },
        )

    def price_by_lookup_key(self, lookup_key: str) -> dict[str, Any] | None:
        return next(
            (o for o in self.objects.values() if o["object"] == "price" and o["lookup_key"] == lookup_key), None
        )

    def list_prices(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        prices = [o for o in self.objects.values() if o["object"] == "price"]
        if "lookup_keys" in params:
            keys = set(_list(params["lookup_keys"]))
            prices = [p for p in prices if p["lookup_key"] in keys]
        if "active" in params:
            prices = [p for p in prices if p["active"] == _bool(params["active"])]
        if "product" in params:
            prices = [p for p in prices if p["product"] == params["product"]]
        return sorted(prices, key=lambda p: p["created"], reverse=True)

    # ---- customers ---------------------------------------------------------------------------

    def create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._new(
            "cus",
            {
                "object": "customer",
                "address": None,
                "balance": 0,
                "created": self.now(),
                "currency": None,
                "default_source": None,
                "delinquent": False,
                "description": params.get("description"),
                "email": params.get("email"),
                "invoice_prefix": secrets.token_hex(4).upper(),
                "invoice_settings": {
                    "custom_fields": None,
                    "default_payment_method": None,
                    "footer": None,
                    "rendering_options": None,
                },
                "livemode": False,
                "metadata": params.get("metadata") or {},
                "name": params.get("name"),
                "phone": None,
                "preferred_locales": [],
                "shipping": None,
                "tax_exempt": "none",
                "test_clock": None,
            },
        )

    # ---- checkout and the portal ---------------------------------------------------------------

    def create_checkout_session(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = params.get("mode")
        if mode not in ("payment", "subscription"):
            raise bad(
                "Missing required param: mode."
                if mode is None
                else "Invalid mode: must be one of payment, setup, or subscription",
                "mode",
            )
        if not params.get("success_url"):
            raise bad("Missing required param: success_url.", "success_url")
        customer = params.get("customer")
        if customer:
            self.get("customer", customer, "customer")
        items = _list(params.get("line_items"))
        if not items:
            raise bad("Missing required param: line_items.", "line_items")
        total = 0
        lines = []
        for i, item in enumerate(items):
            price = self.get("price", item.get("price", ""), f"line_items[{i}][price]")
            quantity = _int(item.get("quantity", 1), f"line_items[{i}][quantity]")
            if mode == "subscription" and price["type"] != "recurring":
                raise bad(
                    "You must provide at least one recurring price in `subscription` mode when using prices.",
                    f"line_items[{i}][price]",
                )
            if mode == "payment" and price["type"] == "recurring":
                raise bad(
                    "You specified `payment` mode but passed a recurring price. Either switch to "
                    "`subscription` mode or use only one-time prices.",
                    f"line_items[{i}][price]",
                )
            total += price["unit_amount"] * quantity
            lines.append({"price": price["id"], "quantity": quantity})
        now = self.now()
        session_id = f"cs_test_{secrets.token_hex(24)}"
        return self._new(
            "cs",
            {
                "id": session_id,
                "object": "checkout.session",
                "amount_subtotal": total,
                "amount_total": total,
                "cancel_url": params.get("cancel_url"),
                "client_reference_id": params.get("client_reference_id"),
                "created": now,
                "currency": "usd",
                "customer": customer,
                "customer_email": params.get("customer_email"),
                "expires_at": now + 24 * 3600,
                "invoice": None,
                "livemode": False,
                "metadata": params.get("metadata") or {},
                "mode": mode,
                "payment_intent": None,
                "payment_status": "unpaid",
                "status": "open",
                "subscription": None,
                "success_url": params["success_url"],
                "ui_mode": "hosted",
                "url": f"{self.base_url}/c/pay/{session_id}",
                "_line_items": lines,
                "_subscription_metadata": (params.get("subscription_data") or {}).get("metadata") or {},
                "_payment_metadata": (params.get("payment_intent_data") or {}).get("metadata") or {},
            },
        )

    def create_portal_session(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = params.get("customer")
        if not customer:
            raise bad("Missing required param: customer.", "customer")
        self.get("customer", customer, "customer")
        session_id = f"bps_{secrets.token_hex(12)}"
        return self._new(
            "bps",
            {
                "id": session_id,
                "object": "billing_portal.session",
                "configuration": "bpc_default",
                "created": self.now(),
                "customer": customer,
                "flow": None,
                "livemode": False,
                "locale": None,
                "on_behalf_of": None,
                "return_url": params.get("return_url"),
                "url": f"{self.base_url}/p/session/{session_id}",
            },
        )

    # ---- what customers and the billing engine do (test controls) ------------------------------

    def pay_checkout_session(self, session_id: str) -> list[dict[str, Any]]:
        """The customer pays: a subscription (with its first paid invoice) or a one-time payment."""
        session = self.get("checkout.session", session_id)
        if session["status"] != "open":
            raise StripeError(400, f"Checkout Session {session_id} is {session['status']}, not open.")
        if session["customer"] is None:
            session["customer"] = self.create_customer({"email": session.get("customer_email")})["id"]
        before = len(self.events)
        if session["mode"] == "subscription":
            sub = self._create_subscription(session)
            invoice = self._invoice(sub, "subscription_create", paid=True)
            session.update(subscription=sub["id"], invoice=invoice["id"])
            self._event("customer.subscription.created", sub)
            self._invoice_events(invoice)
        else:
            session["payment_intent"] = f"pi_{secrets.token_hex(12)}"
        session.update(status="complete", payment_status="paid")
        self._event("checkout.session.completed", session)
        return self.events[before:]

    def renew(self, subscription_id: str) -> list[dict[str, Any]]:
        """The next period starts and its invoice is paid."""
        sub = self.get("subscription", subscription_id)
        before = len(self.events)
        previous = self._advance(sub)
        sub["status"] = "active"
        invoice = self._invoice(sub, "subscription_cycle", paid=True)
        sub["latest_invoice"] = invoice["id"]
        self._event("customer.subscription.updated", sub, previous)
        self._invoice_events(invoice)
        return self.events[before:]

    def fail_payment(self, subscription_id: str) -> list[dict[str, Any]]:
        """The next period's invoice cannot be paid: the subscription goes past_due."""
        sub = self.get("subscription", subscription_id)
        before = len(self.events)
        previous = self._advance(sub)
        invoice = self._invoice(sub, "subscription_cycle", paid=False)
        previous["status"] = sub["status"]
        sub.update(status="past_due", latest_invoice=invoice["id"])
        self._event("invoice.payment_failed", invoice)
        self._event("customer.subscription.updated", sub, previous)
        return self.events[before:]

    def cancel(self, subscription_id: str) -> list[dict[str, Any]]:
        """The subscription ends now (the customer cancelled, or Stripe gave up collecting)."""
        sub = self.get("subscription", subscription_id)
        if sub["status"] == "canceled":
            raise StripeError(400, f"Subscription {subscription_id} is already canceled.")
        now = self.now()
        sub.update(status="canceled", canceled_at=now, ended_at=now)
        sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": "cancellation_requested"}
        return [self._event("customer.subscription.deleted", sub)]

    def change_price(self, subscription_id: str, price_id: str) -> list[dict[str, Any]]:
        """The customer switches plan in the portal; the difference is invoiced and paid at once
        (proration_behavior=always_invoice): a proration invoice whose line starts now."""
        sub = self.get("subscription", subscription_id)
        price = self.get("price", price_id, "price")
        item = sub["items"]["data"][0]
        previous = {"items": _snapshot(self, sub["items"]), "plan": None}
        item["price"] = _snapshot(self, price)
        before = len(self.events)
        self._event("customer.subscription.updated", sub, previous)
        invoice = self._invoice(sub, "subscription_update", paid=True, line_start=self.now())
        sub["latest_invoice"] = invoice["id"]
        self._invoice_events(invoice)
        return self.events[before:]

    # ---- internals -------------------------------------------------------------------------

    def _create_subscription(self, session: dict[str, Any]) -> dict[str, Any]:
        now = self.now()
        sub_id = f"sub_{secrets.token_hex(12)}"
        items = [
            {
                "id": f"si_{secrets.token_hex(12)}",
                "object": "subscription_item",
                "created": now,
                "current_period_start": now,
                "current_period_end": now + PERIOD_SECONDS,
                "discounts": [],
                "metadata": {},
                "price": _snapshot(self, self.objects[line["price"]]),
                "quantity": line["quantity"],
                "subscription": sub_id,
                "tax_rates": [],
            }
            for line in session["_line_items"]
        ]
        return self._new(
            "sub",
            {
                "id": sub_id,
                "object": "subscription",
                "billing_cycle_anchor": now,
                "cancel_at": None,
                "cancel_at_period_end": False,
                "canceled_at": None,
                "cancellation_details": {"comment": None, "feedback": None, "reason": None},
                "collection_method": "charge_automatically",
                "created": now,
                "currency": "usd",
                "customer": session["customer"],
                "default_payment_method": f"pm_{secrets.token_hex(12)}",
                "description": None,
                "discounts": [],
                "ended_at": None,
                "items": {
                    "object": "list",
                    "data": items,
                    "has_more": False,
                    "url": f"/v1/subscription_items?subscription={sub_id}",
                },
                "latest_invoice": None,
                "livemode": False,
                "metadata": session["_subscription_metadata"],
                "start_date": now,
                "status": "active",
                "test_clock": None,
                "trial_end": None,
                "trial_start": None,
            },
        )

    def _advance(self, sub: dict[str, Any]) -> dict[str, Any]:
        if sub["status"] == "canceled":
            raise StripeError(400, f"Subscription {sub['id']} is canceled.")
        previous_items = _snapshot(self, sub["items"])
        for item in sub["items"]["data"]:
            start = item["current_period_end"]
            item["current_period_start"], item["current_period_end"] = start, start + PERIOD_SECONDS
        return {"items": previous_items}

    def _invoice(
        self, sub: dict[str, Any], reason: str, *, paid: bool, line_start: int | None = None
    ) -> dict[str, Any]:
        now = self.now()
        lines, total = [], 0
        for item in sub["items"]["data"]:
            price = item["price"]
            amount = price["unit_amount"] * item["quantity"]
            total += amount
            lines.append(
                {
                    "id": f"il_{secrets.token_hex(12)}",
                    "object": "line_item",
                    "amount": amount,
                    "currency": "usd",
                    "description": None,
                    "livemode": False,
                    "metadata": {},
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {
                            "invoice_item": None,
                            "proration": False,
                            "subscription": sub["id"],
                            "subscription_item": item["id"],
                        },
                    },
                    "period": {
                        "start": item["current_period_start"] if line_start is None else line_start,
                        "end": item["current_period_end"],
                    },
                    "pricing": {
                        "type": "price_details",
                        "unit_amount_decimal": str(price["unit_amount"]),
                        "price_details": {"price": price["id"], "product": price["product"]},
                    },
                    "quantity": item["quantity"],
                }
            )
        period = sub["items"]["data"][0]
        invoice = self._new(
            "in",
            {
                "object": "invoice",
                "amount_due": total,
                "amount_paid": total if paid else 0,
                "amount_remaining": 0 if paid else total,
                "attempt_count": 1,
                "attempted": True,
                "billing_reason": reason,
                "collection_method": "charge_automatically",
                "created": now,
                "currency": "usd",
                "customer": sub["customer"],
                "livemode": False,
                "lines": {"object": "list", "data": lines, "has_more": False, "url": "/v1/invoices/lines"},
                "metadata": {},
                "next_payment_attempt": None if paid else now + 3 * 24 * 3600,
                "parent": {
                    "type": "subscription_details",
                    "quote_details": None,
                    "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub["id"]},
                },
                "period_start": period["current_period_start"],
                "period_end": period["current_period_end"],
                "status": "paid" if paid else "open",
                "status_transitions": {
                    "finalized_at": now,
                    "paid_at": now if paid else None,
                    "voided_at": None,
                    "marked_uncollectible_at": None,
                },
                "total": total,
            },
        )
        return invoice

    def _invoice_events(self, invoice: dict[str, Any]) -> None:
        self._event("invoice.paid", invoice)
        self._event("invoice.payment_succeeded", invoice)


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API shows it (without the fake's own bookkeeping fields)."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _snapshot(fake: FakeStripe, obj: Any) -> Any:
    """A deep copy as it is now (events carry the object as it was when they happened)."""
    if isinstance(obj, dict):
        return {k: _snapshot(fake, v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [_snapshot(fake, v) for v in obj]
    return obj


def expand(fake: FakeStripe, obj: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """`expand[]` of the paths this fake knows: a price's `product`, a subscription item's `price`."""
    out = _snapshot(fake, obj)
    for path in paths:
        _expand_path(fake, out, path.split("."))
    return out


def _expand_path(fake: FakeStripe, node: Any, parts: list[str]) -> None:
    if not parts or not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    value = node.get(head)
    if isinstance(value, list):
        for v in value:
            _expand_path(fake, v, rest)
    elif isinstance(value, dict):
        _expand_path(fake, value, rest)
    elif isinstance(value, str) and not rest and value in fake.objects:
        node[head] = _snapshot(fake, fake.objects[value])


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise bad(f"Invalid integer: {value}", name) from None


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]

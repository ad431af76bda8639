"""The Stripe payments provider: Products/Prices by lookup_key, customers, Checkout, the portal, webhooks.

Built on the real `stripe` library (`StripeClient`, its `*_async` calls over httpx), pointed at
api.stripe.com or, with AGENTRY_BILLING_STRIPE_API_BASE, at any Stripe-compatible server (tests use
agentry.fakestripe). Money: the catalog is micro-USD; Stripe amounts are cents (a price must be a
whole number of cents).

Webhooks (`handle_webhook`): the signature is checked by the library on the raw body with the
endpoint secret; then one BillingService transaction records the event id (a repeat changes
nothing) together with its effect:

- `checkout.session.completed` / `checkout.session.async_payment_succeeded`: remembers the
  customer; a one-time credit pack is granted (kind top_up, key `checkout:<session id>`) only
  when `payment_status == "paid"`.
- `customer.subscription.created|updated|deleted`, `invoice.paid`, `invoice.payment_failed`: the
  subscription is RE-FETCHED from Stripe (events arrive in any order; the object as it is now is
  the truth) and stored unless a newer event already set it (`event_created`). Active or trialing
  → its plan; past_due, unpaid, canceled, incomplete… → the catalog's default (free) plan.
- `invoice.paid` with `status == "paid"` of a subscription's period invoice (billing_reason
  subscription_create or subscription_cycle) also grants the plan's monthly credits (kind
  monthly_allowance, key `allowance:<account>:<line period start>`: once per period, however many
  deliveries). Proration invoices of a mid-period plan change grant nothing.
Other event types are recorded and ignored.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Literal

import stripe

from agentry.servicekit.errors import FailedPrecondition, Unavailable

from ..config import BillingSettings
from ..domain import LedgerWrite, Subscription, allowance_key, checkout_key
from ..errors import InvalidBillingRequest, InvalidSignature, UnknownPlan
from ..plans import Catalog, CreditPack, Plan
from ..ports import BillingTx, CheckoutSession, WebhookOutcome

if TYPE_CHECKING:
    from stripe._base_address import BaseAddresses
    from stripe.params import PriceCreateParams
    from stripe.params.checkout import SessionCreateParams
from ..service import BillingService

logger = logging.getLogger(__name__)

MICROS_PER_CENT = 10_000
ACTIVE_STATUSES = ("active", "trialing")
# Stripe answers at most 10 lookup keys per list call.
LOOKUP_KEYS_PER_CALL = 10
SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
INVOICE_EVENTS = ("invoice.paid", "invoice.payment_failed")
# The invoices that open a billing period (the first one, then each renewal).
PERIOD_INVOICES = ("subscription_create", "subscription_cycle")
CHECKOUT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
# The events an operator subscribes the endpoint to (docs/operations.md lists the same).
HANDLED_EVENTS = CHECKOUT_EVENTS + SUBSCRIPTION_EVENTS + INVOICE_EVENTS


class PaymentsProviderUnavailable(Unavailable):
    """Stripe could not be reached, failed (5xx), throttled us, or refused our key: try again later.

    The message never carries Stripe's text (it may name our account or key)."""

    code = "payments_provider_unavailable"


class PaymentsRequestRefused(InvalidBillingRequest):
    """Stripe refused what the user asked (a bad return URL, say): a 400 naming Stripe's param."""

    code = "payments_request_refused"


class AlreadySubscribed(FailedPrecondition):
    """A subscription checkout for an account that already has an active subscription."""

    code = "already_subscribed"


def translate(exc: stripe.StripeError, action: str) -> Exception:
    """A Stripe library error as billing's DomainError (logged here without secrets)."""
    if isinstance(exc, stripe.InvalidRequestError) and (exc.http_status or 0) < 500:
        param = getattr(exc, "param", None)
        logger.warning("stripe refused %s: %s (param %s, code %s)", action, exc.user_message, param, exc.code)
        where = f" ({param})" if param else ""
        return PaymentsRequestRefused(
            f"the payment provider refused {action}{where}: {exc.user_message or 'invalid request'}"
        )
    if isinstance(exc, stripe.IdempotencyError):
        logger.error("stripe idempotency conflict during %s", action)
        return FailedPrecondition(f"{action} conflicts with an earlier request; try again", code="conflict")
    logger.error(
        "stripe failed during %s: %s (http %s, request %s)", action, type(exc).__name__, exc.http_status, exc.request_id
    )
    return PaymentsProviderUnavailable("the payment provider is unavailable; try again")


def _cents(micros: int, what: str) -> int:
    if micros % MICROS_PER_CENT:
        raise ValueError(f"{what}: Stripe prices are whole cents, {micros} micro-USD is not")
    return micros // MICROS_PER_CENT


def _get(obj: Any, *path: str) -> Any:
    """obj[a][b]... or None (Stripe objects and plain dicts alike)."""
    for key in path:
        if obj is None:
            return None
        try:
            obj = obj[key]
        except (KeyError, TypeError, IndexError):
            return None
    return obj


class StripePaymentsProvider:
    """PaymentsProvider over Stripe. `start()` must run before anything else (it syncs the catalog)."""

    name = "stripe"

    def __init__(
        self,
        settings: BillingSettings,
        service: BillingService,
        *,
        client: stripe.StripeClient | None = None,
        max_network_retries: int = 2,
    ) -> None:
        self._service = service
        self._webhook_secret = settings.stripe_webhook_secret.get_secret_value()
        self._public_url = settings.public_url.rstrip("/")
        self._http: stripe.HTTPXClient | None = None
        if client is None:
            self._http = stripe.HTTPXClient(timeout=30)
            base: BaseAddresses | None = (
                {"api": settings.stripe_api_base.rstrip("/")} if settings.stripe_api_base else None
            )
            client = stripe.StripeClient(
                settings.stripe_secret_key.get_secret_value(),
                base_addresses=base,
                max_network_retries=max_network_retries,
                http_client=self._http,
            )
        self._client = client
        # price id -> plan / pack, filled by start(); prices a lookup key moved away from stay known.
        self._plan_prices: dict[str, str] = {}
        self._pack_prices: dict[str, str] = {}

    # --- lifecycle: the catalog's Products and Prices ------------------------------------------------

    async def start(self) -> None:
        """Finds (by lookup_key) or creates the Product and Price of every paid plan and credit pack,
        then puts the price ids into the service's catalog. Idempotent: every create carries an
        Idempotency-Key derived from the lookup key and amount, so replicas starting together
        create one of each. A price id named in the plans file is used as it is (checked to exist).
        A changed amount creates a new Price and moves the lookup key to it (old subscribers keep
        theirs; both stay mapped to the plan)."""
        catalog = self._service.catalog
        items: list[tuple[str, Plan | CreditPack]] = [("plan", p) for p in catalog.plans if p.price_micros > 0]
        items += [("pack", p) for p in catalog.credit_packs]
        wanted = {self._lookup_key(kind, item): (kind, item) for kind, item in items if not item.stripe_price_id}
        found: dict[str, Any] = {}
        keys = list(wanted)
        try:
            for i in range(0, len(keys), LOOKUP_KEYS_PER_CALL):
                page = await self._client.v1.prices.list_async(
                    {"lookup_keys": keys[i : i + LOOKUP_KEYS_PER_CALL], "active": True, "limit": 100}
                )
                found.update({p.lookup_key: p for p in page.data if p.lookup_key})
            price_ids: dict[tuple[str, str], str] = {}
            for kind, item in items:
                if item.stripe_price_id:
                    price = await self._client.v1.prices.retrieve_async(item.stripe_price_id)
                    self._check_price(kind, item, price)
                    price_ids[(kind, item.id)] = price.id
                    continue
                key = self._lookup_key(kind, item)
                price = found.get(key)
                if price is not None:  # kept mapped even if replaced below: subscribers may still pay it
                    self._remember(kind, item.id, price.id)
                if (
                    price is None
                    or price.unit_amount != _cents(item.price_micros, item.id)
                    or (kind == "plan") != (price.recurring is not None)
                ):
                    price = await self._create_price(kind, item, key, transfer=price is not None)
                price_ids[(kind, item.id)] = price.id
        except stripe.StripeError as exc:
            raise translate(exc, "setting up the catalog's prices") from exc
        for (kind, item_id), price_id in price_ids.items():
            self._remember(kind, item_id, price_id)
        self._service.catalog = Catalog(
            plans=tuple(
                dataclasses.replace(p, stripe_price_id=price_ids.get(("plan", p.id), p.stripe_price_id))
                for p in catalog.plans
            ),
            credit_packs=tuple(
                dataclasses.replace(p, stripe_price_id=price_ids[("pack", p.id)]) for p in catalog.credit_packs
            ),
            default_plan_id=catalog.default_plan_id,
        )
        logger.info(
            "stripe catalog ready: %d plan prices, %d credit pack prices",
            sum(1 for k in price_ids if k[0] == "plan"),
            sum(1 for k in price_ids if k[0] == "pack"),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close_async()

    @staticmethod
    def _lookup_key(kind: str, item: Plan | CreditPack) -> str:
        return item.lookup_key or f"agentry_{kind}_{item.id}"

    def _remember(self, kind: str, item_id: str, price_id: str) -> None:
        (self._plan_prices if kind == "plan" else self._pack_prices)[price_id] = item_id

    @staticmethod
    def _check_price(kind: str, item: Plan | CreditPack, price: Any) -> None:
        if (kind == "plan") != (price.recurring is not None):
            raise ValueError(
                f"{kind} {item.id}: Stripe price {price.id} must be {'recurring' if kind == 'plan' else 'one-time'}"
            )

    async def _create_price(self, kind: str, item: Plan | CreditPack, key: str, *, transfer: bool) -> Any:
        cents = _cents(item.price_micros, item.id)
        meta = {f"agentry_{kind}_id": item.id}
        product = await self._client.v1.products.create_async(
            {"name": item.name, "metadata": meta}, {"idempotency_key": f"agentry-product-{key}"}
        )
        params: PriceCreateParams = {
            "product": product.id,
            "currency": "usd",
            "unit_amount": cents,
            "lookup_key": key,
            "metadata": meta,
            "nickname": item.name,
        }
        if kind == "plan":
            params["recurring"] = {"interval": "month"}
        if transfer:
            params["transfer_lookup_key"] = True
        return await self._client.v1.prices.create_async(
            params, {"idempotency_key": f"agentry-price-{key}-{cents}-{'m' if kind == 'plan' else 'once'}"}
        )

    # --- checkout and the portal ------------------------------------------------------------------

    async def checkout(
        self,
        account_id: str,
        *,
        plan_id: str | None,
        credit_pack_id: str | None,
        success_url: str | None,
        cancel_url: str | None,
    ) -> CheckoutSession:
        """A hosted Checkout Session: a monthly subscription to `plan_id` or a one-time `credit_pack_id`.

        Errors: exactly one id (InvalidBillingRequest naming it), an unknown id (UnknownPlan), a
        free plan (InvalidBillingRequest), an account already subscribed (AlreadySubscribed: change
        plans in the portal), Stripe refusing (PaymentsRequestRefused) or failing (Unavailable)."""
        if bool(plan_id) == bool(credit_pack_id):
            field = "plan_id" if not plan_id else "credit_pack_id"
            raise InvalidBillingRequest(f"{field}: give exactly one of plan_id or credit_pack_id")
        catalog = self._service.catalog
        metadata = {"account_id": account_id}
        mode: Literal["payment", "subscription"]
        if plan_id:
            plan = catalog.find_plan(plan_id)
            if plan is None:
                raise UnknownPlan(f"plan_id: no plan {plan_id!r}")
            if plan.price_micros <= 0 or not plan.stripe_price_id:
                raise InvalidBillingRequest(f"plan_id: the {plan.name} plan is free and needs no checkout")
            sub = await self._service.store.subscription(account_id)
            if sub is not None and sub.stripe_subscription_id and sub.status in ACTIVE_STATUSES:
                raise AlreadySubscribed(
                    "this account already has a subscription: change plans in the "
                    "billing portal (POST /api/billing/portal)"
                )
            price_id, mode = plan.stripe_price_id, "subscription"
            metadata["plan_id"] = plan.id
        else:
            pack = catalog.find_pack(credit_pack_id or "")
            if pack is None or not pack.stripe_price_id:
                raise UnknownPlan(f"credit_pack_id: no credit pack {credit_pack_id!r}")
            price_id, mode = pack.stripe_price_id, "payment"
            metadata.update(credit_pack_id=pack.id, credits_micros=str(pack.credits_micros))
        customer = await self._customer(account_id)
        params: SessionCreateParams = {
            "mode": mode,
            "customer": customer,
            "client_reference_id": account_id,
            "metadata": metadata,
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url or f"{self._public_url}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": cancel_url or f"{self._public_url}/billing/cancel",
        }
        if mode == "subscription":
            params["subscription_data"] = {"metadata": metadata}
        else:
            params["payment_intent_data"] = {"metadata": metadata}
        try:
            session = await self._client.v1.checkout.sessions.create_async(params)
        except stripe.StripeError as exc:
            raise translate(exc, "the checkout") from exc
        return CheckoutSession(session_id=session.id, url=session.url or "")

    async def portal(self, account_id: str, *, return_url: str | None) -> str:
        """The URL of a Stripe customer portal session (manage card, change plan, cancel)."""
        customer = await self._customer(account_id)
        try:
            session = await self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer, "return_url": return_url or f"{self._public_url}/billing"}
            )
        except stripe.StripeError as exc:
            raise translate(exc, "the billing portal") from exc
        return session.url

    async def _customer(self, account_id: str) -> str:
        """The account's Stripe customer id, created (once: the Idempotency-Key is the account) and
        stored on first use."""
        customer_id = await self._service.store.stripe_customer(account_id)
        if customer_id:
            return customer_id
        try:
            customer = await self._client.v1.customers.create_async(
                {"metadata": {"account_id": account_id}}, {"idempotency_key": f"agentry-customer-{account_id}"}
            )
        except stripe.StripeError as exc:
            raise translate(exc, "creating the customer") from exc
        async with self._service.transaction() as tx:
            await tx.set_customer(account_id, customer.id)
        return customer.id

    # --- webhooks -----------------------------------------------------------------------------

    async def handle_webhook(self, payload: bytes, signature: str) -> WebhookOutcome:
        """Verifies and applies one webhook; `applied` is False for a repeat, an event older than
        the state stored, or a type billing does not act on. Errors: InvalidSignature (forged,
        stale beyond 300 s, or not JSON), Unavailable (re-fetching from Stripe failed: Stripe retries)."""
        try:
            event = self._client.construct_event(payload, signature, self._webhook_secret)
        except stripe.SignatureVerificationError as exc:
            raise InvalidSignature("the Stripe-Signature header does not match the payload") from exc
        except ValueError as exc:  # not JSON
            raise InvalidSignature("the webhook body is not a Stripe event") from exc
        subscription = None
        if event.type in SUBSCRIPTION_EVENTS or event.type in INVOICE_EVENTS:
            subscription = await self._fetch_subscription(event)
        async with self._service.transaction() as tx:
            if not await tx.record_event(event.id, event.type, int(event.created)):
                return WebhookOutcome(event.id, event.type, applied=False)
            applied = False
            if event.type in CHECKOUT_EVENTS:
                applied = await self._on_checkout(tx, event.data.object)
            elif subscription is not None:
                applied = await self._sync_subscription(tx, subscription, int(event.created))
                if event.type == "invoice.paid":
                    applied = await self._grant_allowance(tx, event.data.object, subscription) or applied
        logger.info("stripe event %s %s applied=%s", event.id, event.type, applied)
        return WebhookOutcome(event.id, event.type, applied=applied)

    async def _fetch_subscription(self, event: stripe.Event) -> Any:
        """The subscription an event is about, as Stripe has it now (None: not a subscription's)."""
        obj = event.data.object
        if obj.object == "subscription":
            sub_id, fallback = obj.id, obj
        else:
            sub_id, fallback = _get(obj, "parent", "subscription_details", "subscription"), None
            if not sub_id:
                return None
        try:
            return await self._client.v1.subscriptions.retrieve_async(sub_id)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404 and fallback is not None:
                return fallback
            raise translate(exc, "reading the subscription") from exc
        except stripe.StripeError as exc:
            raise translate(exc, "reading the subscription") from exc

    async def _account(self, tx: BillingTx, customer: str | None, metadata: Any) -> str | None:
        """The account an object belongs to: the customer we stored for it, else its metadata."""
        if customer:
            account = await tx.account_for_customer(customer)
            if account:
                return account
        account = _get(metadata, "account_id")
        if account and customer:
            await tx.set_customer(account, customer)
        return account or None

    async def _on_checkout(self, tx: BillingTx, session: Any) -> bool:
        account = await self._account(tx, session.customer, session.metadata)
        if account is None:
            logger.warning("checkout session %s names no known account; ignored", session.id)
            return False
        if session.mode != "payment":
            return False  # a subscription: its own events and invoices carry the effect
        if session.payment_status != "paid":
            return False  # async payment methods: granted on checkout.session.async_payment_succeeded
        pack_id = _get(session.metadata, "credit_pack_id")
        pack = self._service.catalog.find_pack(pack_id or "")
        credits = _get(session.metadata, "credits_micros")
        amount = int(credits) if credits and str(credits).isdigit() else (pack.credits_micros if pack else 0)
        if amount <= 0:
            logger.warning("checkout session %s: unknown credit pack %r; nothing granted", session.id, pack_id)
            return False
        posted = await tx.post(
            LedgerWrite(
                account_id=account,
                amount_micros=amount,
                kind="top_up",
                key=checkout_key(session.id),
                note=f"credit pack {pack_id}",
            )
        )
        return posted.applied

    def _plan_of(self, subscription: Any) -> Plan | None:
        catalog = self._service.catalog
        for item in _get(subscription, "items", "data") or []:
            price = item["price"]
            plan_id = self._plan_prices.get(price["id"]) or _get(price, "metadata", "agentry_plan_id")
            plan = catalog.find_plan(plan_id or "")
            if plan is not None:
                return plan
        return None

    async def _sync_subscription(self, tx: BillingTx, sub: Any, event_created: int) -> bool:
        account = await self._account(tx, sub.customer, sub.metadata)
        if account is None:
            logger.warning("subscription %s names no known account; ignored", sub.id)
            return False
        stored = await tx.subscription(account)
        free = self._service.catalog.default_plan_id
        plan = self._plan_of(sub)
        if sub.status in ACTIVE_STATUSES and plan is not None:
            items = _get(sub, "items", "data") or []
            first = items[0] if items else {}
            return await tx.upsert_subscription(
                Subscription(
                    account_id=account,
                    plan_id=plan.id,
                    status=sub.status,
                    current_period_start=_get(first, "current_period_start"),
                    current_period_end=_get(first, "current_period_end"),
                    stripe_customer_id=sub.customer,
                    stripe_subscription_id=sub.id,
                    cancel_at_period_end=bool(sub.cancel_at_period_end),
                    event_created=event_created,
                )
            )
        if plan is None and sub.status in ACTIVE_STATUSES:
            logger.warning(
                "subscription %s has no price of a configured plan; account %s goes to %s", sub.id, account, free
            )
        # Another subscription of this account is the live one: this one ending changes nothing.
        if (
            stored is not None
            and stored.stripe_subscription_id not in (None, sub.id)
            and stored.status in ACTIVE_STATUSES
        ):
            return False
        return await tx.downgrade_to_free(account, free_plan_id=free, status=sub.status, event_created=event_created)

    async def _grant_allowance(self, tx: BillingTx, invoice: Any, sub: Any) -> bool:
        # A period's own invoice only: a proration invoice (a plan change mid-period,
        # billing_reason subscription_update) grants nothing until the next period starts.
        if invoice.status != "paid" or invoice.billing_reason not in PERIOD_INVOICES:
            return False
        account = await self._account(tx, invoice.customer, _get(invoice, "parent", "subscription_details", "metadata"))
        if account is None:
            return False
        lines = _get(invoice, "lines", "data") or []
        plan, period_start = None, None
        for line in lines:
            price_id = _get(line, "pricing", "price_details", "price")
            plan_id = self._plan_prices.get(price_id or "")
            if plan_id is not None:
                plan, period_start = self._service.catalog.find_plan(plan_id), _get(line, "period", "start")
                break
        if plan is None:  # a price created before a restart under another lookup key: ask the subscription
            plan = self._plan_of(sub)
            period_start = _get(lines[0], "period", "start") if lines else invoice.period_start
        if plan is None or plan.monthly_credits_micros <= 0:
            return False
        posted = await tx.post(
            LedgerWrite(
                account_id=account,
                amount_micros=plan.monthly_credits_micros,
                kind="monthly_allowance",
                key=allowance_key(account, int(period_start or invoice.created)),
                note=f"{plan.id} allowance, invoice {invoice.id}",
            )
        )
        return posted.applied

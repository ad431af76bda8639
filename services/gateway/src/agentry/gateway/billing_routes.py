"""Billing under /api/billing: plans, the caller's subscription and balance, usage.

Amounts are given both as integer micro-USD (`*_micros`) and as decimal USD strings (`*_usd`).
The Stripe routes (checkout, portal, webhook) are added at the end of this file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import grpc
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, field_validator

from agentry.api.billing.v1 import billing_pb2 as bpb
from agentry.servicekit.errors import ERROR_CODE_KEY

from .deps import CallerDep, UpstreamsDep
from .errors import ApiError
from .schemas import _Body

router = APIRouter(prefix="/api/billing", tags=["billing"])

MAX_USAGE_LIMIT = 200


def _usd(micros: int) -> str:
    return str((Decimal(micros) / 1_000_000).quantize(Decimal("0.000001")).normalize())


def _time(value: float) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


class SandboxLimitsOut(BaseModel):
    max_sandboxes: int
    cpu: float
    memory_mb: int
    disk_gb: int
    max_seconds_per_month: int


class RateLimitsOut(BaseModel):
    run_starts_per_minute: int
    requests_per_minute: int


class PlanOut(BaseModel):
    id: str
    name: str
    price_micros: int
    price_usd: str
    monthly_credits_micros: int
    monthly_credits_usd: str
    models: list[str]
    max_concurrent_runs: int
    sandbox: SandboxLimitsOut
    rate_limits: RateLimitsOut
    stripe_price_id: str | None = None


class CreditPackOut(BaseModel):
    id: str
    name: str
    price_micros: int
    price_usd: str
    credits_micros: int
    credits_usd: str
    stripe_price_id: str | None = None


class PlansOut(BaseModel):
    currency: str
    default_plan_id: str
    plans: list[PlanOut]
    credit_packs: list[CreditPackOut]


class SubscriptionOut(BaseModel):
    plan: PlanOut
    status: str
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    balance_micros: int
    balance_usd: str


class UsageRowOut(BaseModel):
    key: str
    cost_micros: int
    cost_usd: str
    prompt_tokens: int
    completion_tokens: int
    calls: int
    sandbox_seconds: float
    first_at: datetime | None
    last_at: datetime | None


class UsageOut(BaseModel):
    group_by: str
    rows: list[UsageRowOut]
    next_cursor: str | None


def _plan(p: bpb.Plan) -> PlanOut:
    return PlanOut(
        id=p.id,
        name=p.name,
        price_micros=p.price_micros,
        price_usd=_usd(p.price_micros),
        monthly_credits_micros=p.monthly_credits_micros,
        monthly_credits_usd=_usd(p.monthly_credits_micros),
        models=list(p.models),
        max_concurrent_runs=p.max_concurrent_runs,
        sandbox=SandboxLimitsOut(
            max_sandboxes=p.sandbox.max_sandboxes,
            cpu=p.sandbox.cpu,
            memory_mb=p.sandbox.memory_mb,
            disk_gb=p.sandbox.disk_gb,
            max_seconds_per_month=p.sandbox.max_seconds_per_month,
        ),
        rate_limits=RateLimitsOut(
            run_starts_per_minute=p.rate_limits.run_starts_per_minute,
            requests_per_minute=p.rate_limits.requests_per_minute,
        ),
        stripe_price_id=p.stripe_price_id or None,
    )


@router.get("/plans", response_model=PlansOut)
async def list_plans(caller: CallerDep, up: UpstreamsDep):
    """Every plan and credit pack on offer, with ids and prices (USD)."""
    reply = await up.billing.ListPlans(bpb.ListPlansRequest())
    return PlansOut(
        currency=reply.currency or "usd",
        default_plan_id=reply.default_plan_id,
        plans=[_plan(p) for p in reply.plans],
        credit_packs=[
            CreditPackOut(
                id=c.id,
                name=c.name,
                price_micros=c.price_micros,
                price_usd=_usd(c.price_micros),
                credits_micros=c.credits_micros,
                credits_usd=_usd(c.credits_micros),
                stripe_price_id=c.stripe_price_id or None,
            )
            for c in reply.credit_packs
        ],
    )


@router.get("/subscription", response_model=SubscriptionOut)
async def get_subscription(caller: CallerDep, up: UpstreamsDep):
    """The caller's plan, its status and period, the credit balance and the plan's limits."""
    reply = await up.billing.GetSubscription(bpb.GetSubscriptionRequest(account_id=caller.account_id))
    return SubscriptionOut(
        plan=_plan(reply.plan),
        status=reply.status,
        current_period_start=_time(reply.current_period_start),
        current_period_end=_time(reply.current_period_end),
        cancel_at_period_end=reply.cancel_at_period_end,
        balance_micros=reply.balance_micros,
        balance_usd=_usd(reply.balance_micros),
    )


@router.get("/usage", response_model=UsageOut)
async def get_usage(
    caller: CallerDep,
    up: UpstreamsDep,
    group_by: Literal["day", "model", "run"] = "day",
    limit: int = Query(50, ge=1, le=MAX_USAGE_LIMIT),
    cursor: str | None = Query(None, max_length=1024),
    since: datetime | None = None,
    until: datetime | None = None,
):
    """The caller's usage grouped by UTC day, model or run, most recently used first.

    `cursor`: `next_cursor` of the previous page (null on the last page). Costs include the markup.
    """
    if since and until and since >= until:
        raise ApiError(
            400,
            "invalid_argument",
            "since must be before until",
            fields=[{"field": "query.since", "message": "must be before until"}],
        )
    reply = await up.billing.ListUsage(
        bpb.ListUsageRequest(
            account_id=caller.account_id,
            group_by=group_by,
            cursor=cursor or "",
            limit=limit,
            since=since.timestamp() if since else 0,
            until=until.timestamp() if until else 0,
        )
    )
    return UsageOut(
        group_by=group_by,
        next_cursor=reply.next_cursor or None,
        rows=[
            UsageRowOut(
                key=r.key,
                cost_micros=r.cost_micros,
                cost_usd=_usd(r.cost_micros),
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                calls=r.calls,
                sandbox_seconds=r.sandbox_seconds,
                first_at=_time(r.first_at),
                last_at=_time(r.last_at),
            )
            for r in reply.rows
        ],
    )


# --- Stripe routes (helper "stripe"): POST /checkout, /portal, /webhook below this line ---

# Webhook bodies are Stripe events (a few KB; the largest objects stay well under 256 KB).
MAX_WEBHOOK_BYTES = 1024 * 1024
NOT_CONFIGURED = "payments_not_configured"


def _return_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("https://", "http://")) or any(ch.isspace() for ch in value):
        raise ValueError("must be an absolute http(s) URL")
    return value


class CheckoutIn(_Body):
    """Exactly one of `plan_id` (a monthly subscription) or `credit_pack_id` (a one-time purchase)."""

    plan_id: str | None = Field(default=None, min_length=1, max_length=64)
    credit_pack_id: str | None = Field(default=None, min_length=1, max_length=64)
    success_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Where Checkout sends the user after paying (default: AGENTRY_BILLING_PUBLIC_URL/billing/success).",
    )
    cancel_url: str | None = Field(
        default=None, max_length=2048, description="Where Checkout sends the user on cancel."
    )

    _urls = field_validator("success_url", "cancel_url")(_return_url)


class CheckoutOut(BaseModel):
    checkout_session_id: str
    url: str


class PortalIn(_Body):
    return_url: str | None = Field(
        default=None, max_length=2048, description="Where the portal's back link goes (default: the public URL)."
    )

    _urls = field_validator("return_url")(_return_url)


class PortalOut(BaseModel):
    url: str


class WebhookOut(BaseModel):
    received: bool
    event_id: str
    event_type: str
    applied: bool = Field(
        description="False for a repeat, an event older than the stored state, or a type billing does not act on."
    )


# Who may buy for, or manage the card of, an account chosen with X-Account-Id ("" = one's own).
BILLING_ROLES = ("", "owner", "admin")


def _require_billing_role(caller) -> None:
    if caller.role not in BILLING_ROLES:
        raise ApiError(403, "role_required", "only an owner or admin of the account manages its billing")


async def _payments_call(call):
    """Runs a payments RPC; the local provider's refusal becomes 501 payments_not_configured."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        if dict(exc.trailing_metadata() or ()).get(ERROR_CODE_KEY) == NOT_CONFIGURED:
            raise ApiError(
                501,
                NOT_CONFIGURED,
                "card payments are not configured on this installation: "
                "set AGENTRY_BILLING_PROVIDER=stripe (docs/operations.md, Stripe)",
            ) from exc
        raise


@router.post("/checkout", response_model=CheckoutOut)
async def create_checkout(body: CheckoutIn, caller: CallerDep, up: UpstreamsDep):
    """A Stripe Checkout Session for the caller's account: send the user to `url`.

    Errors: 422 naming `plan_id`/`credit_pack_id` unless exactly one is given (or naming a bad
    return URL); 400 `unknown_plan` for an id not on offer; 409 `already_subscribed` (change plans
    in the portal); 501 `payments_not_configured` without the Stripe provider; 503 when Stripe is
    unreachable; 403 `role_required` for a team member who is not an owner or admin."""
    _require_billing_role(caller)
    if bool(body.plan_id) == bool(body.credit_pack_id):
        field = "credit_pack_id" if body.plan_id else "plan_id"
        message = "give exactly one of plan_id or credit_pack_id"
        raise ApiError(
            422,
            "validation_error",
            f"invalid request: body.{field}: {message}",
            fields=[{"field": f"body.{field}", "message": message}],
        )
    reply = await _payments_call(
        up.billing.CreateCheckout(
            bpb.CreateCheckoutRequest(
                account_id=caller.account_id,
                plan_id=body.plan_id or "",
                credit_pack_id=body.credit_pack_id or "",
                success_url=body.success_url or "",
                cancel_url=body.cancel_url or "",
            )
        )
    )
    return CheckoutOut(checkout_session_id=reply.checkout_session_id, url=reply.url)


@router.post("/portal", response_model=PortalOut)
async def create_portal(caller: CallerDep, up: UpstreamsDep, body: PortalIn | None = None):
    """A Stripe customer portal session (card, invoices, plan changes, cancellation): send the user to `url`.

    Errors: 403 `role_required` for a team member who is not an owner or admin; 501
    `payments_not_configured` without the Stripe provider; 503 when Stripe is unreachable."""
    _require_billing_role(caller)
    reply = await _payments_call(
        up.billing.CreatePortal(
            bpb.CreatePortalRequest(account_id=caller.account_id, return_url=(body.return_url if body else None) or "")
        )
    )
    return PortalOut(url=reply.url)


@router.post(
    "/webhook",
    response_model=WebhookOut,
    responses={
        400: {"description": "The `Stripe-Signature` header is missing, forged or stale (`invalid_signature`)."},
        413: {"description": "The body is over 1 MiB (`payload_too_large`)."},
        501: {
            "description": "Payments are not configured: billing runs without the Stripe provider "
            "(`payments_not_configured`)."
        },
    },
)
async def stripe_webhook(request: Request, up: UpstreamsDep):
    """Stripe's webhook endpoint. No bearer token: the `Stripe-Signature` header is the credential,
    checked by billing on the raw body, which is forwarded byte for byte.

    Errors: 400 `invalid_signature` (missing, forged or stale signature); 413 for a body over 1 MiB;
    501 `payments_not_configured` without the Stripe provider; 503 (Stripe retries) when billing or
    Stripe is unreachable."""
    signature = request.headers.get("stripe-signature", "")
    if not signature:
        raise ApiError(400, "invalid_signature", "the Stripe-Signature header is missing")
    declared = request.headers.get("content-length", "0")
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise ApiError(413, "payload_too_large", f"a webhook body may be at most {MAX_WEBHOOK_BYTES} bytes")
    payload = bytearray()
    async for chunk in request.stream():
        payload += chunk
        if len(payload) > MAX_WEBHOOK_BYTES:
            raise ApiError(413, "payload_too_large", f"a webhook body may be at most {MAX_WEBHOOK_BYTES} bytes")
    reply = await _payments_call(
        up.billing.HandleWebhook(bpb.HandleWebhookRequest(payload=bytes(payload), signature=signature))
    )
    return WebhookOut(received=True, event_id=reply.event_id, event_type=reply.event_type, applied=reply.applied)

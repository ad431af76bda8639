"""The BillingService gRPC servicer: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import grpc

from agentry.api.billing.v1 import billing_pb2 as pb
from agentry.api.billing.v1 import billing_pb2_grpc

from .domain import Usage
from .errors import InvalidBillingRequest
from .plans import CreditPack, Plan
from .ports import PaymentsProvider
from .service import BillingService

MAX_USAGE_PAGE = 200


def plan_pb(plan: Plan) -> pb.Plan:
    return pb.Plan(
        id=plan.id,
        name=plan.name,
        price_micros=plan.price_micros,
        monthly_credits_micros=plan.monthly_credits_micros,
        models=list(plan.models),
        max_concurrent_runs=plan.max_concurrent_runs,
        sandbox=pb.SandboxLimits(
            max_sandboxes=plan.sandbox.max_sandboxes,
            cpu=plan.sandbox.cpu,
            memory_mb=plan.sandbox.memory_mb,
            disk_gb=plan.sandbox.disk_gb,
            max_seconds_per_month=plan.sandbox.max_seconds_per_month,
        ),
        rate_limits=pb.RateLimits(
            run_starts_per_minute=plan.rate_limits.run_starts_per_minute,
            requests_per_minute=plan.rate_limits.requests_per_minute,
        ),
        stripe_price_id=plan.stripe_price_id or "",
        lookup_key=plan.lookup_key,
    )


def pack_pb(pack: CreditPack) -> pb.CreditPack:
    return pb.CreditPack(
        id=pack.id,
        name=pack.name,
        price_micros=pack.price_micros,
        credits_micros=pack.credits_micros,
        stripe_price_id=pack.stripe_price_id or "",
        lookup_key=pack.lookup_key,
    )


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    """Translates only; domain errors propagate to servicekit's interceptor, which maps them."""

    def __init__(self, service: BillingService, payments: PaymentsProvider | None = None) -> None:
        self._service = service
        if payments is None:
            from .adapters.local import LocalPaymentsProvider

            payments = LocalPaymentsProvider()
        self._payments = payments

    async def CheckRun(self, request: pb.CheckRunRequest, context: grpc.aio.ServicerContext) -> pb.CheckRunResponse:
        decision = await self._service.check_run(request.account_id, request.model)
        return pb.CheckRunResponse(
            allowed=decision.allowed,
            reason=decision.reason,
            message=decision.message,
            balance_micros=decision.balance_micros,
            max_concurrent_runs=decision.max_concurrent_runs,
            plan_id=decision.plan_id,
        )

    async def RecordUsage(
        self, request: pb.RecordUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordUsageResponse:
        charge = await self._service.record_usage(
            Usage(
                account_id=request.account_id,
                run_id=request.run_id,
                step=request.step,
                model=request.model,
                prompt_tokens=request.prompt_tokens,
                completion_tokens=request.completion_tokens,
                cost_micros=request.cost_micros,
            ),
            source=request.source,
            sandbox_seconds=request.sandbox_seconds,
            cost_unknown=request.cost_unknown,
        )
        return pb.RecordUsageResponse(
            balance_micros=charge.balance_micros,
            charged=charge.charged,
            may_continue=charge.may_continue,
            charged_micros=charge.cost_micros,
        )

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBalanceResponse:
        return pb.GetBalanceResponse(balance_micros=await self._service.balance(request.account_id))

    async def ListPlans(self, request: pb.ListPlansRequest, context: grpc.aio.ServicerContext) -> pb.ListPlansResponse:
        catalog = self._service.catalog
        return pb.ListPlansResponse(
            plans=[plan_pb(p) for p in catalog.plans],
            credit_packs=[pack_pb(p) for p in catalog.credit_packs],
            default_plan_id=catalog.default_plan_id,
            currency="usd",
        )

    async def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSubscriptionResponse:
        plan, sub, balance = await self._service.subscription(request.account_id)
        return pb.GetSubscriptionResponse(
            plan=plan_pb(plan),
            status=sub.status if sub else "free",
            current_period_start=(sub.current_period_start or 0) if sub else 0,
            current_period_end=(sub.current_period_end or 0) if sub else 0,
            balance_micros=balance,
            cancel_at_period_end=bool(sub and sub.cancel_at_period_end),
        )

    async def ListUsage(self, request: pb.ListUsageRequest, context: grpc.aio.ServicerContext) -> pb.ListUsageResponse:
        if not request.account_id:
            raise InvalidBillingRequest("account_id is required")
        limit = request.limit or 50
        if not 1 <= limit <= MAX_USAGE_PAGE:
            raise InvalidBillingRequest(f"limit must be between 1 and {MAX_USAGE_PAGE}")
        rows, cursor = await self._service.store.usage(
            request.account_id,
            group_by=request.group_by or "day",
            cursor=request.cursor,
            limit=limit,
            since=request.since,
            until=request.until,
        )
        return pb.ListUsageResponse(rows=[pb.UsageRow(**r) for r in rows], next_cursor=cursor)

    async def Grant(self, request: pb.GrantRequest, context: grpc.aio.ServicerContext) -> pb.GrantResponse:
        balance, applied = await self._service.grant(
            request.account_id,
            request.amount_micros,
            key=request.idempotency_key,
            note=request.note,
            kind=request.kind or "grant",
        )
        return pb.GrantResponse(balance_micros=balance, applied=applied)

    async def CreateCheckout(
        self, request: pb.CreateCheckoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCheckoutResponse:
        session = await self._payments.checkout(
            request.account_id,
            plan_id=request.plan_id or None,
            credit_pack_id=request.credit_pack_id or None,
            success_url=request.success_url or None,
            cancel_url=request.cancel_url or None,
        )
        return pb.CreateCheckoutResponse(checkout_session_id=session.session_id, url=session.url)

    async def CreatePortal(
        self, request: pb.CreatePortalRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreatePortalResponse:
        return pb.CreatePortalResponse(
            url=await self._payments.portal(request.account_id, return_url=request.return_url or None)
        )

    async def HandleWebhook(
        self, request: pb.HandleWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.HandleWebhookResponse:
        outcome = await self._payments.handle_webhook(request.payload, request.signature)
        return pb.HandleWebhookResponse(
            event_id=outcome.event_id, event_type=outcome.event_type, applied=outcome.applied
        )

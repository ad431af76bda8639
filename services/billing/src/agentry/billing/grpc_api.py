"""The BillingService gRPC servicer: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import grpc

from agentry.api.billing.v1 import billing_pb2, billing_pb2_grpc

from .domain import Usage
from .service import BillingService


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    """Translates only; domain errors propagate to servicekit's interceptor, which maps them."""

    def __init__(self, service: BillingService) -> None:
        self._service = service

    async def CheckRun(
        self, request: billing_pb2.CheckRunRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CheckRunResponse:
        decision = await self._service.check_run(request.account_id, request.model)
        return billing_pb2.CheckRunResponse(
            allowed=decision.allowed,
            reason=decision.reason,
            message=decision.message,
            balance_micros=decision.balance_micros,
        )

    async def RecordUsage(
        self, request: billing_pb2.RecordUsageRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RecordUsageResponse:
        charge = await self._service.record_usage(
            Usage(
                account_id=request.account_id,
                run_id=request.run_id,
                step=request.step,
                model=request.model,
                prompt_tokens=request.prompt_tokens,
                completion_tokens=request.completion_tokens,
                cost_micros=request.cost_micros,
            )
        )
        return billing_pb2.RecordUsageResponse(
            balance_micros=charge.balance_micros, charged=charge.charged, may_continue=charge.may_continue
        )

    async def GetBalance(
        self, request: billing_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.GetBalanceResponse:
        return billing_pb2.GetBalanceResponse(balance_micros=await self._service.balance(request.account_id))

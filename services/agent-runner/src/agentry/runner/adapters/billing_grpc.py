"""agentpress's usage sink, charging the billing service over gRPC as the run consumes tokens."""

from __future__ import annotations

import grpc
from agentpress import Usage

from agentry.api.billing.v1 import billing_pb2 as pb
from agentry.api.billing.v1 import billing_pb2_grpc


class GrpcUsageSink:
    def __init__(self, channel: grpc.aio.Channel, *, account_id: str, run_id: str) -> None:
        self._stub = billing_pb2_grpc.BillingServiceStub(channel)
        self._account_id = account_id
        self._run_id = run_id

    async def record(self, usage: Usage) -> bool:
        reply = await self._stub.RecordUsage(pb.RecordUsageRequest(
            account_id=self._account_id, run_id=self._run_id, step=usage.step, model=usage.model,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_micros=max(0, round(usage.cost_usd * 1_000_000))))
        return reply.may_continue

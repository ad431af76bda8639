"""agentpress's usage sink, charging the billing service over gRPC as the run consumes tokens."""

from __future__ import annotations

import grpc

from agentpress import Usage
from agentry.api.billing.v1 import billing_pb2 as pb
from agentry.api.billing.v1 import billing_pb2_grpc
from agentry.servicekit.client import is_unavailable
from agentry.servicekit.db import retrying


class UsageUnavailable(Exception):
    """Billing could not record a model call (unreachable or refusing); the run ends with it."""


# RecordUsage is idempotent per (run, step). A resumed run counts its steps from 1 again, so each
# attempt gets its own range of step keys: a retried call is charged once, a resumed one again.
STEPS_PER_ATTEMPT = 100_000
# Billing that is away (restarting, or its database is) is waited for this long before the run
# gives up: RecordUsage is idempotent per (run, step), so sending it again charges once.
RETRY_SECONDS = 60.0


class GrpcUsageSink:
    def __init__(self, channel: grpc.aio.Channel, *, account_id: str, run_id: str, attempt: int = 1,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        self._stub = billing_pb2_grpc.BillingServiceStub(channel)
        self._retry_seconds = retry_seconds
        self._account_id = account_id
        self._run_id = run_id
        self._step_offset = (max(attempt, 1) - 1) * STEPS_PER_ATTEMPT

    async def record(self, usage: Usage) -> bool:
        request = pb.RecordUsageRequest(
            account_id=self._account_id, run_id=self._run_id, step=self._step_offset + usage.step,
            model=usage.model, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_micros=max(0, round(usage.cost_usd * 1_000_000)))
        try:
            reply = await retrying(lambda: self._stub.RecordUsage(request), deadline=self._retry_seconds,
                                   is_transient=is_unavailable)
        except grpc.aio.AioRpcError as exc:
            raise UsageUnavailable(f"billing did not record the model call: {exc.code().name}: {exc.details()}") from exc
        return reply.may_continue

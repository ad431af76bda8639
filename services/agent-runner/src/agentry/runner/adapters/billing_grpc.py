"""The runner's billing adapters over gRPC: the usage sink charging each model call as the run
consumes tokens, and the gate asked before a run is created."""

from __future__ import annotations

import logging
import math

import grpc

from agentpress import Usage
from agentry.api.billing.v1 import billing_pb2 as pb
from agentry.api.billing.v1 import billing_pb2_grpc
from agentry.servicekit.client import is_unavailable
from agentry.servicekit.db import retrying

from ..errors import BillingUnavailable
from ..ports import BillingCheck

logger = logging.getLogger(__name__)


class UsageUnavailable(Exception):
    """Billing could not record a model call (unreachable or refusing); the run ends with it.

    Its text is what the user sees as the run's error: it names no internal address or status
    detail (those are logged)."""


USER_MESSAGE = "billing is unavailable, so the run was stopped; try again shortly"

# RecordUsage is idempotent per (run, step). A resumed run counts its steps from 1 again, so each
# attempt gets its own range of step keys: a retried call is charged once, a resumed one again.
STEPS_PER_ATTEMPT = 100_000
# Within an attempt's range, sandbox time is keyed from here (model steps count from 1 up).
SANDBOX_STEPS_FROM = 50_000
# Billing that is away (restarting, or its database is) is waited for this long before the run
# gives up: RecordUsage is idempotent per (run, step), so sending it again charges once.
RETRY_SECONDS = 60.0
CHECK_SECONDS = 10.0


class GrpcUsageSink:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        account_id: str,
        run_id: str,
        attempt: int = 1,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._stub = billing_pb2_grpc.BillingServiceStub(channel)
        self._retry_seconds = retry_seconds
        self._account_id = account_id
        self._run_id = run_id
        self._step_offset = (max(attempt, 1) - 1) * STEPS_PER_ATTEMPT
        self._sandbox_calls = 0

    async def record_sandbox(self, seconds: float) -> bool:
        """Charges one sandbox exec's wall-clock seconds (billing prices them per second).

        Keyed per attempt and exec, so a retried RPC charges once. Billing being away does not fail
        the tool: the loss is logged (the next model step's charge still stops a spent run)."""
        self._sandbox_calls += 1
        request = pb.RecordUsageRequest(
            account_id=self._account_id,
            run_id=self._run_id,
            step=self._step_offset + SANDBOX_STEPS_FROM + self._sandbox_calls,
            source="sandbox",
            sandbox_seconds=max(0.0, seconds),
        )
        try:
            reply = await retrying(
                lambda: self._stub.RecordUsage(request), deadline=self._retry_seconds, is_transient=is_unavailable
            )
        except grpc.aio.AioRpcError as exc:
            logger.error(
                "billing did not record %.3f sandbox seconds of run %s: %s: %s",
                seconds,
                self._run_id,
                exc.code().name,
                exc.details(),
            )
            return True
        return reply.may_continue

    async def record(self, usage: Usage) -> bool:
        # agentpress reports an unpriced model (LiteLLM does not know it) as cost_usd NaN:
        # billing then applies its override table or its unknown-model policy, never "free".
        unknown = math.isnan(usage.cost_usd)
        request = pb.RecordUsageRequest(
            account_id=self._account_id,
            run_id=self._run_id,
            step=self._step_offset + usage.step,
            model=usage.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_micros=0 if unknown else max(0, round(usage.cost_usd * 1_000_000)),
            cost_unknown=unknown,
            source="model",
        )
        try:
            reply = await retrying(
                lambda: self._stub.RecordUsage(request), deadline=self._retry_seconds, is_transient=is_unavailable
            )
        except grpc.aio.AioRpcError as exc:
            logger.error(
                "billing did not record run %s step %d: %s: %s",
                self._run_id,
                request.step,
                exc.code().name,
                exc.details(),
            )
            raise UsageUnavailable(USER_MESSAGE) from exc
        return reply.may_continue


class GrpcBillingGate:
    """BillingGate over gRPC: CheckRun with the resolved model; the plan's concurrency cap back."""

    def __init__(self, channel: grpc.aio.Channel, *, retry_seconds: float = CHECK_SECONDS) -> None:
        self._stub = billing_pb2_grpc.BillingServiceStub(channel)
        self._retry_seconds = retry_seconds

    async def check(self, account_id: str, model: str) -> BillingCheck:
        try:
            reply = await retrying(
                lambda: self._stub.CheckRun(pb.CheckRunRequest(account_id=account_id, model=model)),
                deadline=self._retry_seconds,
                is_transient=is_unavailable,
            )
        except grpc.aio.AioRpcError as exc:
            logger.error("billing CheckRun failed: %s: %s", exc.code().name, exc.details())
            raise BillingUnavailable("billing is unavailable; try again shortly") from exc
        return BillingCheck(
            allowed=reply.allowed,
            reason=reply.reason,
            message=reply.message,
            max_concurrent_runs=reply.max_concurrent_runs,
        )

"""BillingService over a real gRPC server, as the gateway and the runner call it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest

from agentry.api.billing.v1 import billing_pb2, billing_pb2_grpc
from agentry.billing import BillingSettings
from agentry.billing.main import start
from agentry.servicekit import DEV_INTERNAL_TOKEN, RunningServer, open_channel

GRANT = 2_000_000


@pytest.fixture
async def running(sqlite_url: str) -> AsyncIterator[RunningServer]:
    async with contextlib.AsyncExitStack() as stack:
        settings = BillingSettings(
            port=0, database_url=sqlite_url, initial_credit_micros=GRANT, blocked_models=["gpt-huge"]
        )
        yield await start(settings, stack)


@pytest.fixture
async def stub(running: RunningServer) -> AsyncIterator[billing_pb2_grpc.BillingServiceStub]:
    async with open_channel(running.target, DEV_INTERNAL_TOKEN) as channel:
        yield billing_pb2_grpc.BillingServiceStub(channel)


def usage(step: int, cost: int, **changes) -> billing_pb2.RecordUsageRequest:
    fields = dict(
        account_id="acct",
        run_id="run-1",
        step=step,
        model="gpt-small",
        prompt_tokens=120,
        completion_tokens=30,
        cost_micros=cost,
    )
    return billing_pb2.RecordUsageRequest(**{**fields, **changes})


def error_code(error: grpc.aio.AioRpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("x-agentry-error-code", "")


async def test_run_allowed_then_refused_once_usage_drains_the_balance(stub):
    allowed = await stub.CheckRun(billing_pb2.CheckRunRequest(account_id="acct", model="gpt-small"))
    assert (allowed.allowed, allowed.reason, allowed.balance_micros) == (True, "", GRANT)

    first = await stub.RecordUsage(usage(0, 1_500_000))
    assert (first.balance_micros, first.charged, first.may_continue) == (500_000, True, True)
    last = await stub.RecordUsage(usage(1, 700_000))
    assert (last.balance_micros, last.charged, last.may_continue) == (-200_000, True, False)

    refused = await stub.CheckRun(billing_pb2.CheckRunRequest(account_id="acct", model="gpt-small"))
    assert (refused.allowed, refused.reason, refused.balance_micros) == (False, "insufficient_credits", -200_000)
    assert "add credits" in refused.message
    balance = await stub.GetBalance(billing_pb2.GetBalanceRequest(account_id="acct"))
    assert balance.balance_micros == -200_000


async def test_blocked_model_is_refused(stub):
    refused = await stub.CheckRun(billing_pb2.CheckRunRequest(account_id="acct", model="gpt-huge"))
    assert (refused.allowed, refused.reason) == (False, "model_not_allowed")


async def test_repeated_usage_is_not_charged(stub):
    first = await stub.RecordUsage(usage(4, 300_000))
    repeat = await stub.RecordUsage(usage(4, 300_000))
    assert (first.charged, repeat.charged) == (True, False)
    assert repeat.balance_micros == first.balance_micros == GRANT - 300_000
    assert repeat.may_continue
    balance = await stub.GetBalance(billing_pb2.GetBalanceRequest(account_id="acct"))
    assert balance.balance_micros == GRANT - 300_000


async def test_get_balance_opens_a_new_account(stub):
    balance = await stub.GetBalance(billing_pb2.GetBalanceRequest(account_id="new"))
    assert balance.balance_micros == GRANT


@pytest.mark.parametrize(
    "call",
    [
        lambda stub: stub.CheckRun(billing_pb2.CheckRunRequest(account_id="", model="gpt-small")),
        lambda stub: stub.GetBalance(billing_pb2.GetBalanceRequest(account_id="")),
        lambda stub: stub.RecordUsage(usage(0, -1)),
        lambda stub: stub.RecordUsage(usage(0, 10, prompt_tokens=-5)),
        lambda stub: stub.RecordUsage(usage(-1, 10)),
        lambda stub: stub.RecordUsage(usage(0, 10, run_id="")),
        lambda stub: stub.RecordUsage(usage(0, 10, account_id="")),
    ],
    ids=[
        "check-no-account",
        "balance-no-account",
        "negative-cost",
        "negative-tokens",
        "negative-step",
        "no-run",
        "usage-no-account",
    ],
)
async def test_bad_input_is_invalid_argument(stub, call):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stub)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code(caught.value) == "invalid_argument"


async def test_bad_usage_changes_nothing(stub):
    await stub.RecordUsage(usage(0, 0))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.RecordUsage(usage(1, -1))
    # The refused step is still free to be recorded properly later.
    assert (await stub.RecordUsage(usage(1, 5))).charged
    assert (await stub.GetBalance(billing_pb2.GetBalanceRequest(account_id="acct"))).balance_micros == GRANT - 5


async def test_calls_without_the_internal_credential_are_unauthenticated(running, stub):
    async with open_channel(running.target, None) as channel:
        anonymous = billing_pb2_grpc.BillingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anonymous.RecordUsage(usage(0, 1_000))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anonymous.GetBalance(billing_pb2.GetBalanceRequest(account_id="acct"))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Nothing the refused caller sent reached the ledger.
    assert (await stub.GetBalance(billing_pb2.GetBalanceRequest(account_id="acct"))).balance_micros == GRANT


async def test_health_answers_without_credentials(running):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with open_channel(running.target, None) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="agentry.api.billing.v1.BillingService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

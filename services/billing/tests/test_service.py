"""Billing's use cases over the real ledger and the local provider."""

from __future__ import annotations

import asyncio

import pytest

from agentry.billing import BillingService, InvalidBillingRequest, Usage, load_catalog

GRANT = 1_000_000


@pytest.fixture
def service(ledger) -> BillingService:
    return BillingService(
        ledger.store, load_catalog(None), opening_grant_micros=GRANT, blocked_models=frozenset({"gpt-huge"})
    )


def step(n: int, cost: int, *, account_id: str = "acct", run_id: str = "run-1") -> Usage:
    return Usage(
        account_id=account_id,
        run_id=run_id,
        step=n,
        model="gpt-small",
        prompt_tokens=1,
        completion_tokens=1,
        cost_micros=cost,
    )


async def test_first_sight_grants_the_initial_credit_once(service, ledger):
    assert await service.balance("acct") == GRANT
    assert (await service.check_run("acct", "gpt-small")).balance_micros == GRANT
    await service.record_usage(step(0, 100))
    assert await service.balance("acct") == GRANT - 100
    assert [e.kind for e in await ledger.entries("acct")] == ["grant", "usage"]


async def test_first_usage_opens_the_account(service):
    charge = await service.record_usage(step(0, 250, account_id="fresh"))
    assert (charge.balance_micros, charge.charged, charge.may_continue) == (GRANT - 250, True, True)


async def test_concurrent_first_calls_grant_once(service, ledger):
    await asyncio.gather(*(service.check_run("acct", "gpt-small") for _ in range(10)), service.balance("acct"))
    assert [e.kind for e in await ledger.entries("acct")] == ["grant"]


async def test_runs_are_refused_once_credit_is_used_up(service):
    assert (await service.check_run("acct", "gpt-small")).allowed
    last = await service.record_usage(step(0, GRANT + 10))
    assert (last.balance_micros, last.charged, last.may_continue) == (-10, True, False)
    decision = await service.check_run("acct", "gpt-small")
    assert (decision.allowed, decision.reason, decision.balance_micros) == (False, "insufficient_credits", -10)
    assert decision.message == "Your credit balance is used up; add credits or upgrade your plan to start new runs."


async def test_draining_exactly_to_zero_stops_the_run(service):
    charge = await service.record_usage(step(0, GRANT))
    assert (charge.balance_micros, charge.may_continue) == (0, False)
    assert not (await service.check_run("acct", "gpt-small")).allowed


async def test_blocked_model_is_refused(service):
    decision = await service.check_run("acct", "gpt-huge")
    assert (decision.allowed, decision.reason, decision.balance_micros) == (False, "model_not_allowed", GRANT)


async def test_recording_a_step_twice_charges_once(service):
    first = await service.record_usage(step(3, 400))
    again = await service.record_usage(step(3, 400))
    assert (first.charged, again.charged) == (True, False)
    assert again.balance_micros == first.balance_micros == GRANT - 400
    assert await service.balance("acct") == GRANT - 400


async def test_steps_of_different_runs_are_charged_separately(service):
    await service.record_usage(step(0, 100, run_id="run-a"))
    await service.record_usage(step(0, 100, run_id="run-b"))
    assert await service.balance("acct") == GRANT - 200


@pytest.mark.parametrize("call", ["check_run", "balance"])
async def test_empty_account_is_invalid(service, call, ledger):
    with pytest.raises(InvalidBillingRequest, match="account_id is required"):
        if call == "check_run":
            await service.check_run("", "gpt-small")
        else:
            await service.balance("")
    assert await ledger.balance("") is None

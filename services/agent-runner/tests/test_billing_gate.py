"""StartRun asks billing with the model the run will really use and caps active runs at the plan's."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agentry.runner.adapters.queue_memory import MemoryRunQueue
from agentry.runner.adapters.sql import SqlRunnerRepository
from agentry.runner.adapters.stop_memory import MemoryStopSignal
from agentry.runner.errors import RunRefusedByBilling, TooManyActiveRuns
from agentry.runner.ports import BillingCheck
from agentry.runner.service import RunnerService
from agentry.servicekit.eventstream import MemoryEventStream


class PlanGate:
    """Billing as the runner sees it: a plan allowing `openai/ok*`, `cap` runs at once, credit or not."""

    def __init__(self, *, cap: int = 0, credit: bool = True) -> None:
        self.cap, self.credit = cap, credit
        self.asked: list[tuple[str, str]] = []

    async def check(self, account_id: str, model: str) -> BillingCheck:
        self.asked.append((account_id, model))
        if not model.startswith("openai/ok"):
            return BillingCheck(False, "model_not_allowed", f"The model {model!r} is not available on the Free plan.")
        if not self.credit:
            return BillingCheck(False, "insufficient_credits", "Your credit balance is used up.")
        return BillingCheck(True, max_concurrent_runs=self.cap)


def service_with(
    engine: AsyncEngine, gate: PlanGate, *, default_model: str = "openai/ok-default", account_cap: int = 0
) -> RunnerService:
    return RunnerService(
        SqlRunnerRepository(engine),
        MemoryRunQueue(),
        MemoryEventStream(),
        MemoryStopSignal(),
        default_model=default_model,
        billing=gate,
        max_active_runs_per_account=account_cap,
    )


async def test_billing_sees_the_default_model_when_none_is_named(sqlite_engine):
    gate = PlanGate()
    service = service_with(sqlite_engine, gate)
    thread = await service.create_thread("acct", "t")
    await service.start_run("acct", thread.thread_id, "", "hi")
    assert gate.asked == [("acct", "openai/ok-default")]

    refusing = service_with(sqlite_engine, PlanGate(), default_model="openai/premium")
    with pytest.raises(RunRefusedByBilling) as refused:
        await refusing.start_run("acct", (await refusing.create_thread("acct", "u")).thread_id, "", "hi")
    assert refused.value.code == "model_not_allowed" and "openai/premium" in str(refused.value)


async def test_no_credit_creates_no_run(sqlite_engine):
    service = service_with(sqlite_engine, PlanGate(credit=False))
    thread = await service.create_thread("acct", "t")
    with pytest.raises(RunRefusedByBilling) as refused:
        await service.start_run("acct", thread.thread_id, "openai/ok", "spend")
    assert refused.value.code == "insufficient_credits"
    assert await service.list_messages("acct", thread.thread_id) == []


@pytest.mark.parametrize("plan_cap,account_cap,allowed", [(1, 0, 1), (2, 5, 2), (5, 2, 2), (0, 3, 3)])
async def test_the_plan_caps_active_runs_with_the_runner_cap(sqlite_engine, plan_cap, account_cap, allowed):
    service = service_with(sqlite_engine, PlanGate(cap=plan_cap), account_cap=account_cap)
    for _ in range(allowed):
        await service.start_run("acct", (await service.create_thread("acct", "t")).thread_id, "openai/ok", "go")
    with pytest.raises(TooManyActiveRuns):
        await service.start_run("acct", (await service.create_thread("acct", "t")).thread_id, "openai/ok", "go")


async def test_billing_is_asked_while_the_thread_is_read_and_a_missing_thread_still_wins(sqlite_engine):
    import asyncio

    from agentry.runner.errors import NotFound

    class SlowGate(PlanGate):
        """Answers only once the thread was read: the two are asked at once, not in turn."""

        def __init__(self) -> None:
            super().__init__(credit=False)
            self.answered = asyncio.Event()

        async def check(self, account_id: str, model: str) -> BillingCheck:
            await asyncio.sleep(0.05)
            self.answered.set()
            return await super().check(account_id, model)

    gate = SlowGate()
    service = service_with(sqlite_engine, gate)
    # Another account's (or no) thread is 404 even though billing would refuse the run.
    with pytest.raises(NotFound):
        await service.start_run("acct", "no-such-thread", "", "hi")
    thread = await service.create_thread("acct", "t")
    with pytest.raises(RunRefusedByBilling) as refused:
        await service.start_run("acct", thread.thread_id, "", "hi")
    assert refused.value.code == "insufficient_credits" and gate.answered.is_set()
    assert len(gate.asked) == 1  # the first start's check was cancelled once its thread was not found

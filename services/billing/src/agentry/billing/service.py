"""Billing's use cases: may this account run, charge a step once, and what is left."""

from __future__ import annotations

import time

from . import metrics
from .domain import Charge, RunDecision, Usage, require_account_id
from .ports import CreditLedger, PaymentsProvider


class BillingService:
    """Credits and usage over a ledger and a payments provider.

    Accounts are opened on first sight (any call), with the grant their plan gives, so a new
    user can run without anyone setting billing up first.
    """

    def __init__(self, ledger: CreditLedger, payments: PaymentsProvider) -> None:
        self._ledger = ledger
        self._payments = payments

    async def check_run(self, account_id: str, model: str) -> RunDecision:
        require_account_id(account_id)
        started = time.perf_counter()
        plan = await self._payments.plan_for(account_id)
        balance = await self._ledger.open_account(account_id, plan.opening_grant_micros)
        decision = plan.decide(balance, model)
        metrics.check_duration().observe(time.perf_counter() - started)
        metrics.checks().labels("allowed" if decision.allowed else "refused", decision.reason[:40]).inc()
        return decision

    async def record_usage(self, usage: Usage) -> Charge:
        await self._open(usage.account_id)
        return await self._ledger.charge(usage)

    async def balance(self, account_id: str) -> int:
        require_account_id(account_id)
        return await self._open(account_id)

    async def _open(self, account_id: str) -> int:
        plan = await self._payments.plan_for(account_id)
        return await self._ledger.open_account(account_id, plan.opening_grant_micros)

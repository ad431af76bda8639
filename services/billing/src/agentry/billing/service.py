"""Billing's use cases: may this account run, charge a step once, grant credit, what is left.

CheckRun answers from memory: each account's plan and balance are cached in this process and
kept exact by the process's own writes (every transaction goes through `transaction()`, which
re-reads the touched accounts after commit). Writes by another replica are seen within
`cache_ttl` seconds (see docs/architecture.md, "Billing").
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal

from . import metrics
from .domain import (
    MICROS_PER_USD,
    Charge,
    LedgerWrite,
    RunDecision,
    Subscription,
    Usage,
    opening_key,
    require_account_id,
    usage_key,
)
from .errors import InvalidBillingRequest
from .plans import Catalog, Plan
from .ports import BillingStore, BillingTx

UNKNOWN_PRICE = "unknown_model_price"


@dataclass
class _Cached:
    plan: Plan
    subscription: Subscription | None
    balance_micros: int
    read_at: float
    ticket: int = 0


@dataclass(frozen=True)
class Pricing:
    """How billing turns a metered step into micro-USD.

    `markup_percent` applies to every model cost; `model_prices` (USD per million tokens,
    input/output) override LiteLLM's price or price models it does not know; an unpriced model is
    charged `unknown_price` or refused (unknown_price None). Sandbox time per second.
    """

    markup_percent: Decimal = Decimal(0)
    model_prices: dict[str, tuple[Decimal, Decimal]] | None = None
    unknown_price: tuple[Decimal, Decimal] | None = (Decimal(10), Decimal(30))
    sandbox_usd_per_hour: Decimal = Decimal("0.05")

    def model_cost(
        self, model: str, prompt_tokens: int, completion_tokens: int, measured_micros: int, cost_unknown: bool
    ) -> int | None:
        """Micro-USD to charge for one model call, or None when the price is unknown and refused."""
        override = (self.model_prices or {}).get(model)
        if override is not None:
            base = _per_million(override, prompt_tokens, completion_tokens)
        elif not cost_unknown:
            base = Decimal(measured_micros)
        elif self.unknown_price is not None:
            base = _per_million(self.unknown_price, prompt_tokens, completion_tokens)
        else:
            return None
        return int((base * (100 + self.markup_percent) / 100).to_integral_value(rounding="ROUND_CEILING"))

    def sandbox_cost(self, seconds: float) -> int:
        return int(
            (Decimal(str(max(seconds, 0.0))) * self.sandbox_usd_per_hour * MICROS_PER_USD / 3600).to_integral_value(
                rounding="ROUND_CEILING"
            )
        )


def _per_million(price: tuple[Decimal, Decimal], prompt: int, completion: int) -> Decimal:
    return (price[0] * prompt + price[1] * completion) * MICROS_PER_USD / 1_000_000


class BillingService:
    """Plans, credits and usage over a BillingStore.

    Accounts are opened on first sight (any call) with `opening_grant_micros` (once, keyed
    open:<account>), so a new user can run before anyone sets billing up.
    """

    def __init__(
        self,
        store: BillingStore,
        catalog: Catalog,
        *,
        opening_grant_micros: int = 0,
        blocked_models: frozenset[str] = frozenset(),
        pricing: Pricing | None = None,
        cache_ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self._opening = opening_grant_micros
        self._blocked = blocked_models
        self.pricing = pricing or Pricing()
        self._ttl = cache_ttl
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._tickets = 0

    # --- transactions (the unit of work the Stripe adapter uses too) -------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[BillingTx]:
        """One transaction over ledger + subscriptions + processed events; after it commits, the
        cache of every account it touched is re-read, so this process answers CheckRun exactly."""
        async with self.store.transaction() as tx:
            yield tx
        for account_id in tx.touched:
            await self._load(account_id)

    # --- reads -----------------------------------------------------------------------------------

    async def _load(self, account_id: str) -> _Cached:
        # A read that started later saw at least as much committed state: only it may replace an
        # entry, however the awaits interleave (a slow earlier read never overwrites a newer one).
        self._tickets += 1
        ticket = self._tickets
        balance, sub = await self.store.snapshot(account_id)
        if balance is None:
            async with self.store.transaction() as tx:
                posted = await tx.post(
                    LedgerWrite(
                        account_id=account_id,
                        amount_micros=self._opening,
                        kind="grant",
                        key=opening_key(account_id),
                        note="opening grant",
                    )
                )
            balance = posted.balance_micros
        entry = _Cached(
            plan=self.catalog.plan(sub.plan_id if sub else None),
            subscription=sub,
            balance_micros=balance,
            read_at=self._clock(),
            ticket=ticket,
        )
        current = self._cache.get(account_id)
        if current is None or current.ticket < ticket:
            self._cache[account_id] = entry
        return entry

    def _install_balance(self, account_id: str, balance_micros: int, ticket: int) -> None:
        """The account's cached balance becomes what a write that took `ticket` answered, unless
        a later read (or write) is cached already."""
        current = self._cache.get(account_id)
        if current is not None and current.ticket < ticket:
            self._cache[account_id] = dataclasses.replace(current, balance_micros=balance_micros, ticket=ticket)

    async def _account(self, account_id: str) -> _Cached:
        cached = self._cache.get(account_id)
        if cached is None or self._clock() - cached.read_at > self._ttl:
            cached = await self._load(account_id)
        return cached

    async def check_run(self, account_id: str, model: str) -> RunDecision:
        """Whether a run on `model` may start, with the plan's id and max_concurrent_runs (the
        runner's to enforce). From memory when cached (well under a millisecond)."""
        started = time.perf_counter()
        decision = await self._decide(account_id, model)
        metrics.check_duration().observe(time.perf_counter() - started)
        metrics.checks().labels("allowed" if decision.allowed else "refused", decision.reason[:40]).inc()
        return decision

    async def _decide(self, account_id: str, model: str) -> RunDecision:
        require_account_id(account_id)
        cached = await self._account(account_id)
        plan = cached.plan
        if model in self._blocked:
            return RunDecision(
                False,
                cached.balance_micros,
                "model_not_allowed",
                f"The model {model!r} is not available on the {plan.name} plan.",
                plan_id=plan.id,
                max_concurrent_runs=plan.max_concurrent_runs,
            )
        return plan.decide(cached.balance_micros, model)

    async def balance(self, account_id: str) -> int:
        require_account_id(account_id)
        return (await self._account(account_id)).balance_micros

    async def subscription(self, account_id: str) -> tuple[Plan, Subscription | None, int]:
        require_account_id(account_id)
        cached = await self._load(account_id)
        return cached.plan, cached.subscription, cached.balance_micros

    # --- writes ----------------------------------------------------------------------------------

    async def record_usage(
        self, usage: Usage, *, source: str = "model", sandbox_seconds: float = 0.0, cost_unknown: bool = False
    ) -> Charge:
        """Charges a step once per (run_id, step): a model call priced by `pricing`, or sandbox time.

        The charge carries the micro-USD charged (cost_micros). A model with no known price under the
        "refuse" policy is charged nothing and answers may_continue=False (the run ends).
        """
        await self._account(usage.account_id)
        if source == "sandbox":
            cost: int | None = self.pricing.sandbox_cost(sandbox_seconds)
        elif source in ("", "model"):
            source = "model"
            cost = self.pricing.model_cost(
                usage.model, usage.prompt_tokens, usage.completion_tokens, usage.cost_micros, cost_unknown
            )
        else:
            raise InvalidBillingRequest("source must be model or sandbox")
        if cost is None:
            return Charge(balance_micros=0, charged=False)
        # One write, committed on its own; the cache takes the balance it answered (a read that
        # started later may still replace it: the ticket is taken before the write).
        self._tickets += 1
        ticket = self._tickets
        posted = await self.store.post_now(
            LedgerWrite(
                account_id=usage.account_id,
                amount_micros=-cost,
                kind="usage",
                key=usage_key(usage.run_id, usage.step),
                run_id=usage.run_id,
                step=usage.step,
                model=usage.model or None,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                source=source,
                quantity=sandbox_seconds,
            )
        )
        if posted.applied:
            self._install_balance(usage.account_id, posted.balance_micros, ticket)
        return Charge(
            balance_micros=posted.balance_micros, charged=posted.applied, cost_micros=cost if posted.applied else 0
        )

    async def grant(
        self, account_id: str, amount_micros: int, *, key: str = "", note: str = "", kind: str = "grant"
    ) -> tuple[int, bool]:
        """Operator credit (or a signed adjustment), once per `key` (a fresh one when empty)."""
        require_account_id(account_id)
        if kind not in ("grant", "adjustment"):
            raise InvalidBillingRequest("kind must be grant or adjustment")
        if kind == "grant" and amount_micros <= 0:
            raise InvalidBillingRequest("amount_micros must be positive")
        await self._account(account_id)
        async with self.transaction() as tx:
            posted = await tx.post(
                LedgerWrite(
                    account_id=account_id,
                    amount_micros=amount_micros,
                    kind=kind,  # type: ignore[arg-type]
                    key=f"grant:{key or uuid.uuid4().hex}",
                    note=note,
                )
            )
        return posted.balance_micros, posted.applied
